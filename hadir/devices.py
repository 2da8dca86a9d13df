"""``hadir device issue|revoke|list``: HR's side of phone registration. Codes and keys are
records on the compacted topics the gateway follows (hadir.ref.activations, hadir.ref.devices),
so an issued code works and a revoked key stops working on every gateway within a moment."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hadir import topics
from hadir.config import ConfigError, Settings
from hadir.kafka_io import latest, publish
from processors.devices import Activation, DeviceKey, code_hash, new_code


def employed(settings: Settings, nips: set[str]) -> set[str]:
    """The NIPs among ``nips`` on the employees reference data now."""
    return {k.decode() for k, v in latest(settings, topics.EMPLOYEES).items()
            if v is not None and k.decode() in nips}


def issue_codes(settings: Settings, nips: list[str],
                now: datetime | None = None) -> list[dict[str, str]]:
    """A one-time activation code for each NIP (each on the employees reference data), stored
    only hashed, usable for ``gateway.activation_ttl_h``."""
    unknown = sorted(set(nips) - employed(settings, set(nips)))
    if unknown:
        raise ConfigError(f"not on the employees reference data: {', '.join(unknown[:5])}"
                          + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
    now = now or datetime.now(UTC)
    expires = now + timedelta(hours=settings.gateway.activation_ttl_h)
    out, records = [], []
    for nip in nips:
        code = new_code()
        activation = Activation(code_hash(nip, code), nip, now, expires)
        records.append((activation.code_hash, asdict(activation)))
        out.append({"nip": nip, "code": code, "expires_at": expires.isoformat()})
    publish(settings, topics.ACTIVATIONS, records)
    return out


def keys(settings: Settings, nip: str | None = None) -> list[DeviceKey]:
    found = [DeviceKey(**v) for v in latest(settings, topics.DEVICES).values() if v]
    return sorted((k for k in found if nip is None or k.nip == nip),
                  key=lambda k: (k.nip, k.registered_at))


def revoke(settings: Settings, key_id: str | None = None,
           nip: str | None = None) -> list[str]:
    """End a key (or every key of a NIP) at once; returns the key ids revoked now."""
    known = keys(settings, nip)
    chosen = [k for k in known if key_id is None or k.key_id == key_id]
    if not chosen:
        raise ConfigError(f"no device key {key_id}" if key_id else f"no device key of {nip}")
    now = datetime.now(UTC)
    ended = [replace(k, revoked_at=now) for k in chosen if k.revoked_at is None]
    if ended:
        publish(settings, topics.DEVICES, [(k.key_id, asdict(k)) for k in ended])
    return [k.key_id for k in ended]


def key_row(k: DeviceKey) -> dict[str, Any]:
    return {"key_id": k.key_id, "nip": k.nip, "device_id": k.device_id,
            "platform": k.platform, "model": k.model,
            "registered_at": k.registered_at.isoformat(),
            "revoked_at": k.revoked_at.isoformat() if k.revoked_at else ""}
