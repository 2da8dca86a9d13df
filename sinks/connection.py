"""A ClickHouse client for Hadir's database, for the sink, the reports and the CLI's queries
(kept apart from the sink so that a report does not load the sink's polars and Kafka code)."""

from __future__ import annotations

from clickhouse_driver import Client

from hadir.config import InfraSettings


def connect(infra: InfraSettings, database: str | None = None) -> Client:
    return Client(infra.clickhouse_host, port=infra.clickhouse_port, user=infra.clickhouse_user,
                  password=infra.clickhouse_password,
                  database=database or infra.clickhouse_database, connect_timeout=5,
                  send_receive_timeout=120, settings={"use_numpy": False})
