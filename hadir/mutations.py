"""ClickHouse mutations (ALTER TABLE ... UPDATE / DELETE) for the retention run and erasure:
asynchronous in ClickHouse (18.16 has no ``mutations_sync``), so each is awaited here before a
command reports it done. They run as the admin user: the writer may not alter tables."""

from __future__ import annotations

import time
from typing import Any

from clickhouse_driver import Client

from hadir.config import Settings
from sinks.connection import connect


class Mutations:
    """One admin connection; ``run`` starts a mutation, ``wait`` returns once all are done."""

    def __init__(self, settings: Settings) -> None:
        self.database = settings.infra.clickhouse_database
        self.client: Client = connect(settings.infra, "admin")
        self.tables: set[str] = set()

    def close(self) -> None:
        self.client.disconnect()

    def count(self, sql: str, params: dict[str, Any]) -> int:
        return int(self.client.execute(sql, params)[0][0])

    def key_columns(self, table: str) -> set[str]:
        """The columns ClickHouse cannot update: sorting, primary and partition key."""
        return {name for name, *flags in self.client.execute(
            "SELECT name, is_in_sorting_key, is_in_primary_key, is_in_partition_key "
            "FROM system.columns WHERE database = %(db)s AND table = %(t)s",
            {"db": self.database, "t": table}) if any(flags)}

    def run(self, table: str, command: str, params: dict[str, Any]) -> None:
        """``ALTER TABLE table <command>`` (UPDATE ... WHERE ... or DELETE WHERE ...)."""
        self.client.execute(f"ALTER TABLE {self.database}.{table} {command}", params)
        self.tables.add(table)

    def wait(self, timeout_s: float = 600.0) -> None:
        """Until every mutation of the tables touched is done."""
        if not self.tables:
            return
        deadline = time.monotonic() + timeout_s
        while self.count("SELECT count() FROM system.mutations WHERE database = %(db)s "
                         "AND table IN %(t)s AND is_done = 0",
                         {"db": self.database, "t": tuple(self.tables)}):
            if time.monotonic() > deadline:
                raise TimeoutError(f"ClickHouse mutations of {', '.join(sorted(self.tables))} "
                                   f"not done after {timeout_s:.0f} s (system.mutations)")
            time.sleep(0.2)
