"""``hadir run``: the stream workers as supervised processes.

intake x N (decode, GPS sanity, faces: the expensive stage, scale it with ``--intake N``),
core x C (person and device state, verdicts, alerts; ``--core C``: the internal topics'
partitions and the table partitions that go with them are shared out), sink x M (ClickHouse,
``--sinks M``: one consumer group, so the event topics' partitions are shared out). Each is a
``python -m streams.worker ROLE`` process with a pid file under the state folder.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass

from hadir import topics
from hadir.config import ConfigError, Settings
from hadir.infra.process import ManagedProcess


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    pid: int | None
    log: str


def _processes(settings: Settings, intake: int, sinks: int,
               core: int) -> list[tuple[ManagedProcess, str]]:
    home = settings.infra.home_path / "workers"
    roles = [(f"{role}-{i}", role) for role, n in (("intake", intake), ("core", core),
                                                   ("sink", sinks)) for i in range(n)]
    return [(ManagedProcess(name, home, marker=f"hadir-worker={home}/{name}"), role)
            for name, role in roles]


def check_counts(settings: Settings, intake: int, sinks: int, core: int) -> None:
    """A worker beyond its input's partitions would get none of them and sit idle. (The core
    workers' inputs are the person stage's, partitioned like the raw topic, and the device
    stage's: a core worker beyond the device stage's partitions runs the person stage only.)"""
    infra = settings.infra
    limits = (("intake", intake, topics.partitions(topics.RAW, infra), "RAW_PARTITIONS"),
              ("core", core, topics.partitions(topics.FACED, infra), "RAW_PARTITIONS"),
              ("sinks", sinks, topics.partitions(topics.VERDICTS, infra), "PARTITIONS"))
    for flag, count, partitions, variable in limits:
        if count > partitions:
            raise ConfigError(f"--{flag} {count}: its input has {partitions} partitions "
                              f"(HADIR_INFRA_{variable}), so at most {partitions} such "
                              "workers get work")


def worker_env(settings: Settings, role: str, intake: int) -> dict[str, str]:
    """Variables for one worker: ``intake`` face verifiers share the cores (each gets
    cores / intake threads) unless ``face.threads`` says otherwise."""
    if role != "intake" or settings.face.threads:
        return {}
    return {"HADIR_FACE_THREADS": str(max(1, (os.cpu_count() or 1) // intake))}


def running(settings: Settings) -> list[ManagedProcess]:
    home = settings.infra.home_path / "workers"
    return [p for p in (ManagedProcess(f.stem, home, marker=f"hadir-worker={home}/{f.stem}")
                        for f in sorted(home.glob("*.pid"))) if p.pid() is not None]


def start(settings: Settings, intake: int = 1, sinks: int = 1,
          core: int = 1) -> list[WorkerStatus]:
    """Start the workers that are not running yet (idempotent)."""
    check_counts(settings, intake, sinks, core)
    out = []
    for proc, role in _processes(settings, intake, sinks, core):
        if proc.pid() is None:
            proc.start([sys.executable, "-m", "streams.worker", role,
                        f"--hadir-worker={proc.state_dir}/{proc.name}"],
                       env=worker_env(settings, role, intake))
        out.append(WorkerStatus(proc.name, proc.pid(), str(proc.log_file)))
    return out


def stop(settings: Settings) -> list[str]:
    stopped = []
    for proc in running(settings):
        proc.stop(timeout=30)
        stopped.append(proc.name)
    return stopped


def status(settings: Settings) -> list[WorkerStatus]:
    return [WorkerStatus(p.name, p.pid(), str(p.log_file)) for p in running(settings)]


def foreground(settings: Settings, intake: int = 1, sinks: int = 1, core: int = 1) -> int:
    """Run until Ctrl-C or SIGTERM, restarting a worker that dies."""
    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for w in start(settings, intake, sinks, core):
        print(f"  {w.name:<9} pid {w.pid}  log {w.log}", flush=True)
    print("workers running; Ctrl-C stops them", flush=True)
    while not stopping:
        time.sleep(1)
        for proc, _role in _processes(settings, intake, sinks, core):
            if proc.pid() is None and not stopping:
                print(f"  {proc.name} exited; restarting (see {proc.log_file})", flush=True)
                start(settings, intake, sinks, core)
    print("stopping workers ...", flush=True)
    stop(settings)
    return 0
