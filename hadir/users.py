"""``hadir users add|list``: dashboard accounts, as records on the compacted hadir.ref.users
that every dashboard follows (a new or changed account takes effect within a moment)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hadir import topics
from hadir.config import ConfigError, Settings
from hadir.kafka_io import latest, publish
from processors.accounts import Role, User, check_username, hash_password


def add(settings: Settings, name: str, role: str, office: str | None,
        password: str) -> dict[str, Any]:
    """Create (or replace) an account; the password is kept only as its scrypt hash."""
    try:
        user = User(check_username(name), Role(role), office or "")
        hashed = hash_password(password)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    publish(settings, topics.USERS, [(user.username, {
        "username": user.username, "role": user.role.value, "office_id": user.office_id,
        "password_hash": hashed, "created_at": datetime.now(UTC), "disabled": False})])
    return {"username": user.username, "role": user.role.value, "office_id": user.office_id}


def listing(settings: Settings) -> list[dict[str, Any]]:
    return sorted(({"username": v["username"], "role": v["role"], "office_id": v["office_id"],
                    "disabled": v["disabled"]}
                   for v in latest(settings, topics.USERS).values() if v),
                  key=lambda u: u["username"])
