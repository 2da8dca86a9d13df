"""The local schema registry: Apicurio Registry 3.0.9 (Confluent-compatible API under
/apis/ccompat/v7), built once from Maven Central by hadir/infra/registry/pom.xml (a Quarkus
re-augmentation; the POM explains the work-arounds), storing its schemas in a file-backed H2
database in the state folder, so schema ids survive restarts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import requests

from hadir.config import InfraSettings
from hadir.infra.process import InfraError, ManagedProcess, port_open, tail
from hadir.infra.service import LocalService

HERE = Path(__file__).resolve().parent / "registry"
RUNNER = HERE / "target" / "quarkus-app" / "quarkus-run.jar"


class SchemaRegistryServer(LocalService):
    name = "registry"
    start_timeout = 120.0

    def __init__(self, infra: InfraSettings) -> None:
        self.infra = infra
        self.dir = infra.home_path / "registry"
        self.process = ManagedProcess("registry", self.dir, marker=f"-Dhadir.home={self.dir}")

    @property
    def address(self) -> str:
        return self.infra.registry

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.infra.registry_port}"

    def ensure_built(self) -> None:
        """Build the runnable registry once (about 25 s with a warm Maven cache, 2-3 min cold)."""
        sources = [HERE / "pom.xml", *(p for p in (HERE / "src").rglob("*") if p.is_file())]
        if RUNNER.exists() and RUNNER.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
            return
        for tool in ("javac", "mvn"):  # a JDK, not only a JRE: the build compiles two classes
            if shutil.which(tool) is None:
                raise InfraError(f"registry: {tool} is not installed (run ./hadirw, which "
                                 "installs it)")
        self.dir.mkdir(parents=True, exist_ok=True)
        log = self.dir / "maven.log"
        with log.open("w") as out:
            rc = subprocess.call(["mvn", "-B", "-q", "-f", str(HERE / "pom.xml"), "package"],
                                 stdout=out, stderr=subprocess.STDOUT, cwd=HERE)
        if rc != 0 or not RUNNER.exists():
            raise InfraError(f"registry: building Apicurio Registry with mvn failed; see {log}:"
                             f"\n{tail(log)}")

    def healthy(self) -> bool:
        """The Confluent API answers (works for any Confluent-compatible registry)."""
        if self.infra.managed and not port_open("127.0.0.1", self.infra.registry_port):
            return False
        try:
            return requests.get(f"{self.infra.registry}/subjects", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def ports(self) -> list[tuple[str, int, str]]:
        return [("127.0.0.1", self.infra.registry_port, "HADIR_INFRA_REGISTRY_PORT")]

    def prepare(self) -> tuple[list[str], Path | None]:
        self.ensure_built()
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return [
            "java", "-Xms64m", f"-Xmx{self.infra.registry_heap}", f"-Dhadir.home={self.dir}",
            "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={self.infra.registry_port}",
            "-Dapicurio.storage.kind=sql", "-Dapicurio.storage.sql.kind=h2",
            f"-Dapicurio.datasource.url=jdbc:h2:file:{data}/registry;DB_CLOSE_ON_EXIT=FALSE",
            "-Dapicurio.datasource.username=sa", "-Dapicurio.datasource.password=sa",
            "-Dapicurio.datasource.jdbc.initial-size=2", "-Dapicurio.datasource.jdbc.min-size=2",
            "-Dapicurio.datasource.jdbc.max-size=20",
            "-jar", str(RUNNER),
        ], None
