"""A background process that Hadir owns: started detached, remembered by a pid file, recognised
by its command line (so a recycled pid is never mistaken for ours), stopped by pid only."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class InfraError(RuntimeError):
    """A service could not be started or reached; the message says which, why, and the log."""


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log yet)"
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 8192))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ManagedProcess:
    """One service process. ``marker`` is a string unique to our command line (a config path),
    checked against /proc before we signal anything."""

    name: str
    state_dir: Path
    marker: str

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of our running process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = _cmdline(pid)
            state = proc_stat(pid)[0]
        except (OSError, ValueError, IndexError):
            self.pid_file.unlink(missing_ok=True)
            return None
        if self.marker not in cmdline or state == "Z":
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(self, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, env={**os.environ, **(env or {})}, cwd=cwd,
                )
            except OSError as exc:
                raise InfraError(f"{self.name}: cannot run {argv[0]}: {exc}") from None
        # The new process may show its parent's command line for a moment after fork.
        wait_until(lambda: self.marker in _cmdline(proc.pid) or proc.poll() is not None, 5,
                   interval=0.01)
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def exited(self) -> bool:
        return self.pid() is None

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``. Returns False if nothing was running."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        if not wait_until(lambda: not _alive(pid), timeout):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), 10)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL at once (crash tests)."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), 10)
            self.pid_file.unlink(missing_ok=True)


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name, so the state is ``[0]`` and
    user and system CPU ticks are ``[11]`` and ``[12]`` (``man proc``, fields 3, 14 and 15).
    OSError if there is no process."""
    return _stat_fields(Path(f"/proc/{pid}/stat"))


def _stat_fields(stat: Path) -> list[str]:
    """A process's or thread's stat line after the name, which is cut at its last ``)``: the
    name may contain one."""
    return stat.read_text().rsplit(")", 1)[1].split()


def _cpu_s(fields: list[str]) -> float:
    """User and system CPU seconds from stat fields (:func:`proc_stat`)."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    """User and system CPU seconds of a process so far, None if there is none."""
    try:
        return _cpu_s(proc_stat(pid))
    except OSError:
        return None


def threads_cpu_s(pid: int, name_part: str) -> float:
    """User and system CPU seconds of those threads of a process whose name (``comm``, at most
    15 characters) contains ``name_part``; 0 if there is no such process. Threads that ended
    are not counted: /proc keeps only the live ones."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if name_part in (task / "comm").read_text():
                total += _cpu_s(_stat_fields(task / "stat"))
        except OSError:  # the thread ended meanwhile
            continue
    return total


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = proc_stat(pid)[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def end(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Stop a child process the caller started: SIGTERM, then SIGKILL after ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
