"""``hadir run``: the stream workers and the phone edge as supervised processes.

intake x N (decode, GPS sanity, faces: the expensive stage, scale it with ``--intake N``),
core x C (person and device state, verdicts, alerts; ``--core C``: the internal topics'
partitions and the table partitions that go with them are shared out), sink x M (ClickHouse,
``--sinks M``: one consumer group, so the event topics' partitions are shared out), the
gateway (``hadir gateway``, the phone edge) and the dashboard (``hadir dashboard``). Each is a
``python -m streams.worker ROLE`` (or ``python -m hadir gateway|dashboard``) process with a pid
file under the state folder.

``hadir run`` supervises them: a worker that exits is started again, after a pause that
doubles while it keeps failing within a minute of its start (a crash loop must not spin).
``hadir run --detach`` is that same supervisor in the background, until ``hadir run --stop``.
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from hadir import topics
from hadir.config import ConfigError, Settings
from hadir.infra.process import InfraError, ManagedProcess, tail, wait_until

CRASH_LOOP_S = 60.0  # a worker that exits sooner than this after its start is crash-looping
MAX_PAUSE_S = 60.0  # the longest pause before starting a crash-looping worker again


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    pid: int | None
    log: str


def _processes(settings: Settings, intake: int, sinks: int,
               core: int) -> list[tuple[ManagedProcess, str]]:
    home = settings.infra.home_path / "workers"
    roles = [(f"{role}-{i}", role) for role, n in (("intake", intake), ("core", core),
                                                   ("sink", sinks), ("gateway", 1),
                                                   ("dashboard", 1))
             for i in range(n)]
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
            _start_one(settings, proc, role, intake)
        out.append(WorkerStatus(proc.name, proc.pid(), str(proc.log_file)))
    return out


def _start_one(settings: Settings, proc: ManagedProcess, role: str, intake: int) -> None:
    command = (["hadir", role] if role in ("gateway", "dashboard")
               else ["streams.worker", role])
    proc.start([sys.executable, "-m", *command, f"--hadir-worker={proc.state_dir}/{proc.name}"],
               env=worker_env(settings, role, intake))


class Restarts:
    """When to start an exited worker again: at once after a normal run; after a pause that
    doubles from 1 s up to MAX_PAUSE_S while it keeps exiting within CRASH_LOOP_S of its
    start (a crash loop must not spin, nor make the healthy workers rebalance every second)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started: dict[str, float] = {}
        self._pause: dict[str, float] = {}  # worker -> the pause before its last restart
        self._due: dict[str, float] = {}  # exited worker -> when it is started again

    def started(self, name: str) -> None:
        self._started[name] = self._clock()
        self._due.pop(name, None)

    def exited(self, name: str) -> float | None:
        """Seen down (on every check while it is): the pause before its restart the first
        time, None after that."""
        if name in self._due:
            return None
        now = self._clock()
        if now - self._started.get(name, -math.inf) < CRASH_LOOP_S:
            pause = self._pause[name] = min(max(1.0, 2 * self._pause.get(name, 0.0)),
                                            MAX_PAUSE_S)
        else:
            self._pause.pop(name, None)
            pause = 0.0
        self._due[name] = now + pause
        return pause

    def due(self, name: str) -> bool:
        return self._clock() >= self._due[name]


def supervisor(settings: Settings) -> ManagedProcess:
    """The background ``hadir run`` of ``--detach`` (its pid file apart from the workers')."""
    home = settings.infra.home_path / "supervisor"
    return ManagedProcess("hadir-run", home, marker=f"--supervisor={home}")


def start_detached(settings: Settings, intake: int = 1, sinks: int = 1, core: int = 1,
                   timeout: float = 60.0) -> list[WorkerStatus]:
    """``hadir run`` in the background: it starts the workers and restarts any that exits.
    Returns once every worker runs."""
    sup = supervisor(settings)
    wanted = {proc.name for proc, _ in _processes(settings, intake, sinks, core)}

    def all_up() -> bool:
        return wanted <= {p.name for p in running(settings)}

    if sup.pid() is not None:
        if not all_up():
            raise InfraError("a background hadir run already supervises other workers; "
                             "`hadir run --stop` ends it")
        return status(settings)
    sup.start([sys.executable, "-m", "hadir", "run", "--intake", str(intake), "--core",
               str(core), "--sinks", str(sinks), f"--supervisor={sup.state_dir}"])
    wait_until(lambda: all_up() or sup.pid() is None, timeout)
    if sup.pid() is None:
        raise InfraError(f"hadir run exited; see {sup.log_file}:\n{tail(sup.log_file)}")
    if not all_up():
        raise InfraError(f"the workers did not all start within {timeout:.0f} s; see "
                         f"{sup.log_file} and the workers' logs")
    return status(settings)


def stop(settings: Settings) -> list[str]:
    """Stop the background supervisor (it stops its workers), then any worker left."""
    names = [p.name for p in running(settings)]
    supervisor(settings).stop(timeout=120)
    _stop_workers(settings)
    return names


def _stop_workers(settings: Settings) -> None:
    for proc in running(settings):
        proc.stop(timeout=30)


def status(settings: Settings) -> list[WorkerStatus]:
    sup = supervisor(settings)
    workers = [WorkerStatus(p.name, p.pid(), str(p.log_file)) for p in running(settings)]
    pid = sup.pid()
    return ([WorkerStatus("supervisor", pid, str(sup.log_file))] if pid else []) + workers


def foreground(settings: Settings, intake: int = 1, sinks: int = 1, core: int = 1) -> int:
    """Run until Ctrl-C or SIGTERM, starting again a worker that exits (:class:`Restarts`).
    One supervisor at a time: two would both start a worker that died."""
    lock_file = settings.infra.home_path / "supervisor" / "lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InfraError("another hadir run already supervises the workers (a background "
                             "one ends with `hadir run --stop`)") from None
        return _supervise(settings, intake, sinks, core)


def _supervise(settings: Settings, intake: int, sinks: int, core: int) -> int:
    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    restarts = Restarts()
    for w in start(settings, intake, sinks, core):
        restarts.started(w.name)
        print(f"  {w.name:<9} pid {w.pid}  log {w.log}", flush=True)
    print("workers running; Ctrl-C stops them", flush=True)
    while not stopping:
        time.sleep(1)
        for proc, role in _processes(settings, intake, sinks, core):
            if stopping or proc.pid() is not None:
                continue
            pause = restarts.exited(proc.name)
            if pause is not None:
                print(f"  {proc.name} exited; restarting in {pause:.0f} s "
                      f"(see {proc.log_file})", flush=True)
            if restarts.due(proc.name):
                _start_one(settings, proc, role, intake)
                restarts.started(proc.name)
    print("stopping workers ...", flush=True)
    _stop_workers(settings)  # not stop(): that would signal this process, the supervisor
    return 0
