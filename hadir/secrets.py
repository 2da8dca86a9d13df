"""Secrets a locally managed stack makes for itself, once: in ``<home>/secrets`` (mode 0600),
unless configured (a stack run elsewhere, as in docker/, must be given them)."""

from __future__ import annotations

import dataclasses
import os
import secrets
from typing import Literal

from hadir.config import ConfigError, InfraSettings, Settings

# Who logs in to ClickHouse: admin (schema, retention, erasure), writer (the sink, reports,
# reviews), reader (the dashboard and the gateway: read-only, with query limits).
Role = Literal["admin", "writer", "reader"]


def clickhouse_login(infra: InfraSettings, role: Role) -> tuple[str, str]:
    """The user and password of ``role``."""
    if role == "admin":
        return infra.clickhouse_user, local_secret(infra, "clickhouse-admin",
                                                   infra.clickhouse_password)
    if role == "writer":
        return infra.writer_user, local_secret(infra, "clickhouse-writer", infra.writer_password)
    return infra.dashboard_user, local_secret(infra, "clickhouse-reader",
                                              infra.dashboard_password)


def as_reader(settings: Settings) -> Settings:
    """The settings with ClickHouse's read-only user in place of every other: whatever a
    process that only reads (the dashboard, the gateway) calls, the reports too, reads as
    that user."""
    i = settings.infra
    user, password = clickhouse_login(i, "reader")
    return dataclasses.replace(settings, infra=dataclasses.replace(
        i, clickhouse_user=user, clickhouse_password=password, writer_user=user,
        writer_password=password, dashboard_password=password))


def local_secret(infra: InfraSettings, name: str, configured: str = "") -> str:
    """The configured value, else (on a locally managed stack) the one kept in
    ``<home>/secrets/<name>``, made on first use; else a ConfigError naming what to set."""
    if configured:
        return configured
    if not infra.managed:
        raise ConfigError(f"{name}: set it in the configuration (the stack is not managed "
                          "here, so no local secret is made)")
    path = infra.home_path / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        draft = path.with_name(f".{name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, path)  # whole or not at all; a concurrent first writer wins
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()
