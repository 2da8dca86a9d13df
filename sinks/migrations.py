"""Versioned ClickHouse schema migrations, applied in order by ``hadir infra up``.

Each file ``sinks/sql/NNN_name.sql`` is one migration: statements separated by ``;``, ``{db}``
standing for the configured database. Applied versions are recorded in ``schema_migrations``.
The SQL must run on ClickHouse 18.16 (the local server) and on a current release (production).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from hadir.config import Settings
from sinks.connection import connect

SQL_DIR = Path(__file__).resolve().parent / "sql"
_NAME = re.compile(r"^(\d{3})_(\w+)\.sql$")


def migrations() -> list[tuple[int, str, list[str]]]:
    out = []
    for path in sorted(SQL_DIR.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ValueError(f"{path}: migration files are named NNN_name.sql")
        body = "\n".join(line for line in path.read_text().splitlines()
                         if not line.lstrip().startswith("--"))
        statements = [s.strip() for s in body.split(";") if s.strip()]
        out.append((int(m.group(1)), m.group(2), statements))
    return out


def migrate(settings: Settings) -> list[str]:
    """Apply the migrations not applied yet; returns their names."""
    db = settings.infra.clickhouse_database
    client = connect(settings.infra, "admin", database="default")
    client.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.execute(f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
                   "(version UInt32, name String, applied_at DateTime) "
                   "ENGINE = MergeTree ORDER BY version")
    done = {v for (v,) in client.execute(f"SELECT version FROM {db}.schema_migrations")}
    applied = []
    for version, name, statements in migrations():
        if version in done:
            continue
        for statement in statements:
            client.execute(statement.replace("{db}", db))
        client.execute(f"INSERT INTO {db}.schema_migrations (version, name, applied_at) VALUES",
                       [(version, name, datetime.now(UTC).replace(tzinfo=None))])
        applied.append(f"{version:03d}_{name}")
    client.disconnect()
    return applied
