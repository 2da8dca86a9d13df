"""The local Apache Kafka 4.0 broker: single node, KRaft (broker and controller in one process),
on 127.0.0.1, jars from Maven Central, data in the state folder so it survives restarts."""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from pathlib import Path

from hadir.config import InfraSettings
from hadir.infra.process import InfraError, ManagedProcess, port_open, tail
from hadir.infra.service import LocalService
from hadir.kafka_access import MECHANISM, confluent, login

HERE = Path(__file__).resolve().parent / "kafka"


def new_cluster_id() -> str:
    """A KRaft cluster id: a base64url UUID of 22 characters that does not start with "-" (as
    Kafka's own Uuid.randomUuid: one in 64 would read as a command-line option)."""
    while True:
        raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not raw.startswith("-"):
            return raw


class KafkaBroker(LocalService):
    name = "kafka"
    start_timeout = 90.0
    stop_timeout = 60.0

    def __init__(self, infra: InfraSettings) -> None:
        self.infra = infra
        self.dir = infra.home_path / "kafka"
        self.libs = self.dir / "libs"
        self.data = self.dir / "data"
        self.properties = self.dir / "server.properties"
        self.process = ManagedProcess("kafka", self.dir, marker=str(self.properties))

    @property
    def address(self) -> str:
        return self.infra.bootstrap

    def ensure_jars(self) -> None:
        """Resolve the broker's jars from Maven Central once (about 40 MB)."""
        marker = self.libs / ".complete"
        if marker.exists() and marker.stat().st_mtime >= (HERE / "pom.xml").stat().st_mtime:
            return
        if shutil.which("java") is None:
            raise InfraError("kafka: java is not installed (apt-get install openjdk-17-jre-headless"
                             ", or run ./hadirw which installs it)")
        if shutil.which("mvn") is None:
            raise InfraError("kafka: mvn is not installed (apt-get install maven, or ./hadirw)")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.libs.exists():
            shutil.rmtree(self.libs)
        log = self.dir / "maven.log"
        with log.open("w") as out:
            rc = subprocess.call(
                ["mvn", "-B", "-q", "-f", str(HERE / "pom.xml"), "dependency:copy-dependencies",
                 f"-DoutputDirectory={self.libs}", "-DincludeScope=runtime"],
                stdout=out, stderr=subprocess.STDOUT,
            )
        if rc != 0:
            raise InfraError(f"kafka: resolving the broker jars with mvn failed; see {log}:\n"
                             f"{tail(log)}")
        marker.touch()

    def _write_config(self) -> None:
        i = self.infra
        admin = login(i, "admin")[1]
        jaas = "org.apache.kafka.common.security"
        scram = f'{jaas}.scram.ScramLoginModule required username="admin" password="{admin}";'
        plain = (f'{jaas}.plain.PlainLoginModule required username="admin" password="{admin}" '
                 f'user_admin="{admin}";')
        self.properties.write_text(f"""# Written by `hadir infra up`; edit hadir/infra/kafka.py.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{i.kafka_host}:{i.kafka_controller_port}
listeners=SASL_PLAINTEXT://{i.kafka_host}:{i.kafka_port},CONTROLLER://{i.kafka_host}:{i.kafka_controller_port}
advertised.listeners=SASL_PLAINTEXT://{i.kafka_host}:{i.kafka_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
# Clients log in with SCRAM (credentials in the cluster's metadata, made by `hadir infra up`);
# the controller listener with PLAIN, as the admin, since SCRAM needs the metadata it serves.
sasl.enabled.mechanisms={MECHANISM}
sasl.mechanism.inter.broker.protocol={MECHANISM}
listener.name.sasl_plaintext.{MECHANISM.lower()}.sasl.jaas.config={scram}
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config={plain}
# Deny by default: each principal may do only what its ACLs (hadir/kafka_access.py) allow.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
log.dirs={self.data}
num.partitions={i.partitions}
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
message.max.bytes=4194304
""")
        self.properties.chmod(0o600)  # it holds the admin's password

    def _format(self) -> None:
        """Format the KRaft storage once, with the admin's SCRAM credentials (the other
        principals' are made through the admin client); a restart keeps the data."""
        if (self.data / "meta.properties").exists():
            if not (self.dir / "sasl").exists():
                raise InfraError(f"kafka: its data in {self.data} was made before Kafka asked "
                                 "for logins; stop the stack and delete that folder (its "
                                 "topics are lost), or `rm -rf` the state folder")
            return
        cluster_id_file = self.dir / "cluster.id"
        if not cluster_id_file.exists():
            cluster_id_file.write_text(new_cluster_id())
        log = self.dir / "format.log"
        admin = login(self.infra, "admin")[1]
        with log.open("w") as out:
            rc = subprocess.call(
                ["java", "-cp", f"{self.libs}/*", "kafka.tools.StorageTool", "format",
                 f"--cluster-id={cluster_id_file.read_text().strip()}", "-c", str(self.properties),
                 "--add-scram", f"{MECHANISM}=[name=admin,password={admin}]",
                 "--ignore-formatted"],
                stdout=out, stderr=subprocess.STDOUT,
            )
        if rc != 0:
            raise InfraError(f"kafka: formatting storage failed; see {log}:\n{tail(log)}")
        (self.dir / "sasl").touch()

    def healthy(self) -> bool:
        from confluent_kafka.admin import AdminClient

        if self.infra.managed and not port_open(self.infra.kafka_host, self.infra.kafka_port):
            return False
        try:
            md = AdminClient(confluent(self.infra, "admin")).list_topics(timeout=3)
        except Exception:  # any client error means "not ready yet"
            return False
        return bool(md.brokers)

    def ports(self) -> list[tuple[str, int, str]]:
        i = self.infra
        return [(i.kafka_host, i.kafka_port, "HADIR_INFRA_KAFKA_PORT"),
                (i.kafka_host, i.kafka_controller_port, "HADIR_INFRA_KAFKA_CONTROLLER_PORT")]

    def prepare(self) -> tuple[list[str], Path | None]:
        self.ensure_jars()
        self._write_config()
        self._format()
        return [
            "java", f"-Xmx{self.infra.kafka_heap}", f"-Xms{self.infra.kafka_heap}",
            "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}",
            "-cp", f"{self.libs}/*", "kafka.Kafka", str(self.properties),
        ], None
