"""The local stack as one thing: ``hadir infra up|down|status``.

``up`` is idempotent: it starts what is not running, waits until each service is healthy, then
creates the topics, registers the schemas and applies the ClickHouse migrations.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from hadir.config import Settings
from hadir.infra.clickhouse import ClickHouseServer
from hadir.infra.kafka import KafkaBroker
from hadir.infra.process import InfraError, wait_until
from hadir.infra.registry import SchemaRegistryServer
from hadir.infra.service import LocalService


@dataclass
class ServiceStatus:
    name: str
    address: str
    pid: int | None
    healthy: bool
    log: str


def services(settings: Settings) -> list[LocalService]:
    """In start order: the registry keeps its schemas in a file, not in Kafka, but is started
    after the broker so a slow machine gives the broker the CPU first."""
    infra = settings.infra
    return [ClickHouseServer(infra), KafkaBroker(infra), SchemaRegistryServer(infra)]


def up(settings: Settings, progress: bool = True) -> list[ServiceStatus]:
    from hadir import kafka_access, topics
    from hadir.serde import Registry
    from sinks.migrations import migrate

    for service in services(settings):
        if not settings.infra.managed:
            if not wait_until(service.healthy, 120):
                raise InfraError(f"{service.name}: no answer from {service.address} "
                                 "(HADIR_INFRA_MANAGED is false: it is not started by Hadir)")
            continue
        if progress and service.process.pid() is None:
            print(f"  {service.name:<11} starting on {service.address} ...", flush=True)
        service.up()
    kafka_access.provision(settings.infra)
    selfies = settings.privacy.selfies_days  # the only topics that keep selfies
    topics.create_all(settings.infra, retention_days={topics.RAW.name: selfies,
                                                      topics.DLQ.name: selfies})
    try:
        Registry(settings.infra.registry).register_all()
    except Exception as exc:
        raise InfraError(f"registry: registering the schemas failed: {exc}") from None
    migrate(settings)
    return status(settings)


def down(settings: Settings) -> list[str]:
    """Stop our services (by pid, newest first); returns the names that were running."""
    return [s.name for s in reversed(services(settings)) if s.down()]


# What a stack has written, as opposed to what it built once (jars, models).
DATA = ("kafka/data", "kafka/cluster.id", "clickhouse", "registry/data", "workers")


def wipe(settings: Settings) -> None:
    """Stop the workers and the services and delete their data, keeping the built jars and
    the models: the next ``up`` starts from empty topics and tables (the tests and the
    benchmarks, each on a stack of their own)."""
    from hadir import workers

    workers.stop(settings)
    down(settings)
    home = settings.infra.home_path
    for path in DATA:
        target = home / path
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def status(settings: Settings) -> list[ServiceStatus]:
    """Each service's health; a service Hadir starts must also be the one it started (no pid:
    not healthy, whoever answers on its port). Services run elsewhere have no pid here."""
    out = []
    for s in services(settings):
        pid = s.process.pid()
        ours = pid is not None or not settings.infra.managed
        out.append(ServiceStatus(s.name, s.address, pid, ours and s.healthy(),
                                 str(s.process.log_file)))
    return out
