"""What every local service has in common: start it unless it runs, refuse a port another
program holds, wait until it answers, and say which log to read when it does not."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from hadir.infra.process import InfraError, ManagedProcess, port_open, tail, wait_until


class LocalService(ABC):
    name: str
    process: ManagedProcess
    start_timeout: float = 60.0
    stop_timeout: float = 30.0

    @property
    @abstractmethod
    def address(self) -> str: ...

    @abstractmethod
    def healthy(self) -> bool: ...

    @abstractmethod
    def ports(self) -> list[tuple[str, int, str]]:
        """(host, port, the setting that moves it) for each port the service listens on."""

    @abstractmethod
    def prepare(self) -> tuple[list[str], Path | None]:
        """Install, build and configure what is missing; returns the command line and its
        working folder."""

    @property
    def log_file(self) -> Path:
        return self.process.log_file

    def _fail(self, what: str) -> InfraError:
        return InfraError(f"{self.name}: {what}; see {self.log_file}:\n{tail(self.log_file)}")

    def up(self) -> None:
        if self.process.pid() is not None:
            if wait_until(self.healthy, self.start_timeout):
                return
            raise self._fail(f"running but not answering on {self.address}")
        for host, port, setting in self.ports():
            if port_open(host, port):
                raise InfraError(f"{self.name}: port {port} on {host} is taken by another "
                                 f"program; stop it or set {setting}")
        argv, cwd = self.prepare()
        self.process.start(argv, cwd=cwd)
        if not wait_until(lambda: self.healthy() or self.process.exited(), self.start_timeout):
            raise self._fail(f"not healthy after {self.start_timeout:.0f}s")
        if self.process.exited():
            raise self._fail("exited at start")

    def down(self) -> bool:
        return self.process.stop(timeout=self.stop_timeout)
