"""A ClickHouse client for Hadir's database, for the sink, the reports and the CLI's queries
(kept apart from the sink so that a report does not load the sink's polars and Kafka code)."""

from __future__ import annotations

from typing import Any

from clickhouse_driver import Client

from hadir.config import InfraSettings
from hadir.secrets import Role, clickhouse_login


def connect(infra: InfraSettings, role: Role = "writer", database: str | None = None) -> Client:
    """A connection as ``role``'s user (hadir/secrets.py)."""
    user, password = clickhouse_login(infra, role)
    return Client(infra.clickhouse_host, port=infra.clickhouse_port, user=user,
                  password=password, database=database or infra.clickhouse_database,
                  connect_timeout=5, send_receive_timeout=120, settings={"use_numpy": False})


def rows(infra: InfraSettings, sql: str, params: dict[str, Any] | None = None,
         role: Role = "writer") -> list[dict[str, Any]]:
    """A query's rows as dicts by column name, on a connection of its own."""
    client = connect(infra, role)
    try:
        found, columns = client.execute(sql, params or {}, with_column_types=True)
    finally:
        client.disconnect()
    return [dict(zip([c for c, _ in columns], r, strict=True)) for r in found]
