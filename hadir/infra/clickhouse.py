"""The local ClickHouse server: Debian's clickhouse-server started without systemd, with a minimal
config written into the state folder, listening on 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from xml.sax.saxutils import escape

from hadir.config import InfraSettings
from hadir.infra.process import InfraError, ManagedProcess, port_open
from hadir.infra.service import LocalService
from hadir.secrets import clickhouse_login

# Hadir's own ClickHouse users and their profiles, the same locally and in docker/
# (docker/clickhouse/hadir-users.xml is written by docker_users_xml; a test keeps the two equal).
# The writer (the sink, reports, reviews) may not change the schema; the reader (the dashboard,
# the gateway) may only read, within limits a runaway query cannot pass. The admin is
# ClickHouse's `default` locally and the image's CLICKHOUSE_USER in docker/.
PROFILES = """        <writer>
            <allow_ddl>0</allow_ddl>
            <max_memory_usage>4000000000</max_memory_usage>
        </writer>
        <readonly>
            <readonly>1</readonly>
            <max_memory_usage>2000000000</max_memory_usage>
            <max_execution_time>30</max_execution_time>
            <max_rows_to_read>200000000</max_rows_to_read>
            <max_result_rows>1000000</max_result_rows>
            <result_overflow_mode>throw</result_overflow_mode>
        </readonly>
"""


def user_xml(name: str, password: str, networks: tuple[str, ...], profile: str,
             database: str | None) -> str:
    """One user's element of a users file; ``password``: its password element; ``database``:
    the only one it may use (None: any)."""
    ips = "".join(f"<ip>{escape(n)}</ip>" for n in networks)
    only = (f"\n            <allow_databases><database>{escape(database)}</database>"
            "</allow_databases>") if database else ""
    return f"""        <{escape(name)}>
            {password}
            <networks>{ips}</networks>
            <profile>{profile}</profile>
            <quota>default</quota>{only}
        </{escape(name)}>
"""


def hadir_users(writer: tuple[str, str], reader: tuple[str, str], networks: tuple[str, ...],
                database: str) -> str:
    """The writer's and the reader's elements: (user name, password element) each."""
    return (user_xml(*writer, networks, "writer", database)
            + user_xml(*reader, networks, "readonly", database))


def sha256_element(password: str) -> str:
    return f"<password_sha256_hex>{hashlib.sha256(password.encode()).hexdigest()}" \
           "</password_sha256_hex>"


def docker_users_xml() -> str:
    """docker/clickhouse/hadir-users.xml: Hadir's users for the compose stack, where their
    passwords come as SHA-256 from the environment."""
    users = hadir_users(
        ("hadir_writer", '<password_sha256_hex from_env="HADIR_WRITER_PASSWORD_SHA256"/>'),
        ("hadir_dashboard", '<password_sha256_hex from_env="HADIR_DASHBOARD_PASSWORD_SHA256"/>'),
        ("::/0",), "hadir")
    return f"""<!-- Written by `python -m hadir.infra.clickhouse` (hadir/infra/clickhouse.py), which
     configures the same users for `hadir infra up`. -->
<clickhouse>
    <profiles>
{PROFILES}    </profiles>
    <users>
{users}    </users>
</clickhouse>
"""


class ClickHouseServer(LocalService):
    name = "clickhouse"
    start_timeout = 30.0

    def __init__(self, infra: InfraSettings) -> None:
        self.infra = infra
        self.dir = infra.home_path / "clickhouse"
        self.config = self.dir / "config.xml"
        self.process = ManagedProcess("clickhouse", self.dir, marker=str(self.config))

    @property
    def address(self) -> str:
        return f"{self.infra.clickhouse_host}:{self.infra.clickhouse_port}"

    def _write_config(self) -> None:
        i = self.infra
        d = self.dir
        for sub in ("data", "tmp", "user_files", "format_schemas", "logs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "config.xml").write_text(f"""<?xml version="1.0"?>
<!-- Written by `hadir infra up`; edit hadir/infra/clickhouse.py instead. -->
<yandex>
    <logger>
        <level>warning</level>
        <log>{d}/logs/clickhouse-server.log</log>
        <errorlog>{d}/logs/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{i.clickhouse_http_port}</http_port>
    <tcp_port>{i.clickhouse_port}</tcp_port>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>1073741824</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
""")
        local = ("127.0.0.1", "::1")
        users = hadir_users(
            (i.writer_user, sha256_element(clickhouse_login(i, "writer")[1])),
            (i.dashboard_user, sha256_element(clickhouse_login(i, "reader")[1])),
            local, i.clickhouse_database)
        admin = user_xml(i.clickhouse_user, sha256_element(clickhouse_login(i, "admin")[1]),
                         local, "default", None)
        (d / "users.xml").write_text(f"""<?xml version="1.0"?>
<!-- Written by `hadir infra up`; passwords in {escape(str(i.home_path / "secrets"))}. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <load_balancing>random</load_balancing>
            <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>
        </default>
{PROFILES}    </profiles>
    <users>
{admin}{users}    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries><errors>0</errors><result_rows>0</result_rows>
                <read_rows>0</read_rows><execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
""")
        (d / "users.xml").chmod(0o600)  # password hashes

    def healthy(self) -> bool:
        from sinks.connection import connect

        if self.infra.managed and not port_open("127.0.0.1", self.infra.clickhouse_port):
            return False
        try:
            client = connect(self.infra, "admin", database="default")
            ok = client.execute("SELECT 1") == [(1,)]
            client.disconnect()
            return ok
        except Exception:  # any client error means "not ready yet"
            return False

    def ports(self) -> list[tuple[str, int, str]]:
        i = self.infra
        return [("127.0.0.1", i.clickhouse_port, "HADIR_INFRA_CLICKHOUSE_PORT"),
                ("127.0.0.1", i.clickhouse_http_port, "HADIR_INFRA_CLICKHOUSE_HTTP_PORT")]

    def prepare(self) -> tuple[list[str], Path | None]:
        path = f"{os.environ.get('PATH', '')}:/usr/sbin"  # Debian's place, not on every PATH
        binary = shutil.which("clickhouse-server", path=path) or shutil.which("clickhouse",
                                                                              path=path)
        if binary is None:
            raise InfraError("clickhouse: clickhouse-server is not installed "
                             "(apt-get install clickhouse-server, or run ./hadirw)")
        self._write_config()
        argv = [binary, f"--config-file={self.config}"]
        if Path(binary).name == "clickhouse":
            argv.insert(1, "server")
        return argv, self.dir

    @property
    def log_file(self) -> Path:
        return self.dir / "logs" / "clickhouse-server.err.log"


if __name__ == "__main__":
    Path(__file__).resolve().parents[2].joinpath("docker", "clickhouse", "hadir-users.xml") \
        .write_text(docker_users_xml())
