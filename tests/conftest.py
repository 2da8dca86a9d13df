"""Shared fixtures. Tests that need services get the real ones: ``stack`` starts Kafka, the
schema registry and ClickHouse (via ``hadir infra up``) in a state folder of their own, on ports
of their own, so a developer's running stack is never touched."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# HADIR_TEST_SLOT=N runs a second suite beside this one (another checkout, a long test while
# developing): its stack in .hadir-test-N, every port 100 x N higher.
SLOT = int(os.environ.get("HADIR_TEST_SLOT", "0"))


def _port(port: int) -> str:
    return str(port + 100 * SLOT)


TEST_ENV = {
    "HADIR_INFRA_HOME": str(REPO / (f".hadir-test-{SLOT}" if SLOT else ".hadir-test")),
    "HADIR_INFRA_KAFKA_PORT": _port(19092),
    "HADIR_INFRA_KAFKA_CONTROLLER_PORT": _port(19093),
    "HADIR_INFRA_REGISTRY_PORT": _port(18081),
    "HADIR_INFRA_CLICKHOUSE_PORT": _port(19000),
    "HADIR_INFRA_CLICKHOUSE_HTTP_PORT": _port(18123),
    "HADIR_INFRA_CLICKHOUSE_DATABASE": "hadir_test",
    "HADIR_SINK_BATCH_SECONDS": "0.2",
    "HADIR_GATEWAY_PORT": _port(18088),
    "HADIR_GATEWAY_RATE_BURST": "5",
    "HADIR_DASHBOARD_PORT": _port(18050),
}


def pytest_configure(config: pytest.Config) -> None:
    """Before any test: every test (and every worker or CLI subprocess, which inherit these)
    sees the test stack's folder and ports, whichever test runs first."""
    os.environ.update(TEST_ENV)


@pytest.fixture(scope="session")
def settings():  # type: ignore[no-untyped-def]
    from hadir import config

    return config.load()


@pytest.fixture(scope="session")
def stack(settings) -> Iterator[object]:  # type: ignore[no-untyped-def]
    from hadir import workers
    from hadir.infra import stack as infra_stack

    # Every session starts from empty topics and tables (built jars and models are kept).
    infra_stack.wipe(settings)
    infra_stack.up(settings, progress=False)
    yield settings
    if not os.environ.get("HADIR_TEST_KEEP_STACK"):
        workers.stop(settings)
        infra_stack.down(settings)
