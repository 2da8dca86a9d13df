"""``hadir run``: the stream workers as supervised processes.

intake x N (decode, GPS sanity, faces: the expensive stage, scale it with ``--intake N``),
core x 1 (person and device state, verdicts, alerts), sink x M (ClickHouse, ``--sinks M``: one
consumer group, so the event topics' partitions are shared out). Each is a
``python -m streams.worker ROLE`` process with a pid file under the state folder.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass

from hadir.config import Settings
from hadir.infra.process import ManagedProcess


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    pid: int | None
    log: str


def _processes(settings: Settings, intake: int, sinks: int) -> list[tuple[ManagedProcess, str]]:
    home = settings.infra.home_path / "workers"
    roles = [(f"intake-{i}", "intake") for i in range(intake)]
    roles += [("core-0", "core")] + [(f"sink-{i}", "sink") for i in range(sinks)]
    return [(ManagedProcess(name, home, marker=f"hadir-worker={home}/{name}"), role)
            for name, role in roles]


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


def start(settings: Settings, intake: int = 1, sinks: int = 1) -> list[WorkerStatus]:
    """Start the workers that are not running yet (idempotent)."""
    out = []
    for proc, role in _processes(settings, intake, sinks):
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


def foreground(settings: Settings, intake: int = 1, sinks: int = 1) -> int:
    """Run until Ctrl-C or SIGTERM, restarting a worker that dies."""
    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for w in start(settings, intake, sinks):
        print(f"  {w.name:<9} pid {w.pid}  log {w.log}", flush=True)
    print("workers running; Ctrl-C stops them", flush=True)
    while not stopping:
        time.sleep(1)
        for proc, _role in _processes(settings, intake, sinks):
            if proc.pid() is None and not stopping:
                print(f"  {proc.name} exited; restarting (see {proc.log_file})", flush=True)
                start(settings, intake, sinks)
    print("stopping workers ...", flush=True)
    stop(settings)
    return 0
