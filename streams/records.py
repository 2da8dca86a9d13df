"""Between Avro records (dicts, as the codecs give them) and the processors' dataclasses.

In-progress records (the internal topics, hadir.topics.FACED and BY_DEVICE) carry their times
as epoch milliseconds: the core worker decodes them without Avro's logical types (half the
cost of a read), keeps them in its tables as they are, and the writer takes milliseconds as
well as datetimes. The processors get datetimes (:func:`checkin_from_progress`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from processors.events import (
    DEVICE_ID_PATTERN,
    NIP_PATTERN,
    PLAUSIBLE_TIMES,
    SELFIE_MAX_BYTES,
    TEXT_MAX,
    Checkin,
    CheckinType,
    Finding,
    InvalidCheckin,
    Reason,
    Verdict,
)
from processors.fraud import FraudPolicy, alert_id, severity


def evidence_json(evidence: dict[str, object]) -> str:
    return json.dumps(evidence, sort_keys=True, default=str, ensure_ascii=False)


def epoch_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def from_epoch_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# What the receiving server can have stamped: a check-in outside is a broken record, not a
# time to judge (a year-9999 time would overflow the local-date conversion downstream).


def checkin_from_raw(r: dict[str, Any], max_offline_ms: int) -> Checkin:
    """A phone's check-in; its event_id must be a UUID (kept in canonical form), its NIP not
    empty, its server time plausible, its offline age at most ``max_offline_ms`` (the edge
    refuses older ones; the policy's ``offline_max_s``)."""
    try:
        checkin = Checkin(
            event_id=str(uuid.UUID(r["event_id"])), nip=r["nip"].strip(), device_id=r["device_id"],
            type=CheckinType(r["type"]), server_time=r["server_time"],
            client_time=r.get("client_time"), lat=r["lat"], lon=r["lon"],
            accuracy_m=r.get("accuracy_m"), mock_location=bool(r.get("mock_location")),
            selfie=r.get("selfie"), app_version=r.get("app_version") or "",
            offline_age_ms=r.get("offline_age_ms") or 0,
        )
    except (KeyError, ValueError, AttributeError) as exc:
        raise InvalidCheckin(f"malformed check-in: {type(exc).__name__}: {exc}") from None
    if not re.fullmatch(NIP_PATTERN, checkin.nip):
        raise InvalidCheckin(f"malformed check-in: nip {checkin.nip[:40]!r} is not 18 digits")
    if not isinstance(checkin.device_id, str) or not re.fullmatch(DEVICE_ID_PATTERN,
                                                                   checkin.device_id):
        length = len(checkin.device_id) if isinstance(checkin.device_id, str) else 0
        raise InvalidCheckin(f"malformed check-in: device_id is not 1..128 printable ASCII "
                             f"characters ({length:,} characters)")
    if len(checkin.app_version) > TEXT_MAX:
        raise InvalidCheckin(f"malformed check-in: app_version is over {TEXT_MAX} characters")
    if checkin.selfie is not None and len(checkin.selfie) > SELFIE_MAX_BYTES:
        raise InvalidCheckin(f"malformed check-in: selfie of {len(checkin.selfie):,} bytes is "
                             f"over {SELFIE_MAX_BYTES:,}")
    if not 0 <= checkin.offline_age_ms <= max_offline_ms:
        raise InvalidCheckin(f"malformed check-in: offline_age_ms {checkin.offline_age_ms} is "
                             f"outside 0..{max_offline_ms}")
    if not PLAUSIBLE_TIMES[0] <= checkin.server_time < PLAUSIBLE_TIMES[1]:
        raise InvalidCheckin(f"malformed check-in: server_time {checkin.server_time:%Y-%m-%d} "
                             f"is outside {PLAUSIBLE_TIMES[0]:%Y}..{PLAUSIBLE_TIMES[1]:%Y}")
    return checkin


def in_progress(c: Checkin, findings: list[Finding], *, similarity: float | None = None,
                spoof: float | None = None, source: str = "") -> dict[str, Any]:
    return {
        "event_id": c.event_id, "nip": c.nip, "device_id": c.device_id, "type": c.type.value,
        "server_time": epoch_ms(c.server_time),
        "client_time": epoch_ms(c.client_time) if c.client_time is not None else None,
        "lat": c.lat, "lon": c.lon, "accuracy_m": c.accuracy_m, "mock_location": c.mock_location,
        "app_version": c.app_version, "has_selfie": c.selfie is not None,
        "offline_age_ms": c.offline_age_ms,
        "face_similarity": similarity, "spoof_score": spoof, "office_id": "", "h3_cell": "",
        "distance_m": None, "source_offset": source,
        "findings": [{"reason": f.reason.value, "evidence": evidence_json(f.evidence)}
                     for f in findings],
    }


def checkin_from_progress(r: dict[str, Any]) -> Checkin:
    return Checkin(
        event_id=r["event_id"], nip=r["nip"], device_id=r["device_id"],
        type=CheckinType(r["type"]), server_time=from_epoch_ms(r["server_time"]),
        client_time=from_epoch_ms(r["client_time"]) if r["client_time"] is not None else None,
        lat=r["lat"], lon=r["lon"], accuracy_m=r["accuracy_m"],
        mock_location=r["mock_location"], selfie=None, app_version=r["app_version"],
        offline_age_ms=r["offline_age_ms"],
    )


def findings_of(r: dict[str, Any]) -> list[Finding]:
    return [Finding(Reason(f["reason"]), json.loads(f["evidence"])) for f in r["findings"]]


def add_findings(r: dict[str, Any], findings: list[Finding]) -> None:
    r["findings"] = [*r["findings"], *(
        {"reason": f.reason.value, "evidence": evidence_json(f.evidence)} for f in findings)]


def verdict_record(r: dict[str, Any], verdict: Verdict, now: datetime) -> dict[str, Any]:
    reasons = list(dict.fromkeys(f["reason"] for f in r["findings"]))
    return {
        "event_id": r["event_id"], "nip": r["nip"], "device_id": r["device_id"],
        "office_id": r["office_id"], "type": r["type"], "server_time": r["server_time"],
        "client_time": r["client_time"], "verdict": verdict.value, "reasons": reasons,
        "face_similarity": r["face_similarity"], "spoof_score": r["spoof_score"],
        "h3_cell": r["h3_cell"], "distance_m": r["distance_m"], "lat": r["lat"],
        "lon": r["lon"], "accuracy_m": r["accuracy_m"], "decided_at": now,
        "offline_age_ms": r["offline_age_ms"], "source_offset": r.get("source_offset") or "",
    }


def alert_records(r: dict[str, Any], policy: FraudPolicy, now: datetime) -> list[dict[str, Any]]:
    """One alert per REJECTED or REVIEW reason (DESIGN.md). The evidence is the finding's own
    JSON text, made by :func:`evidence_json` when the finding was added."""
    out = []
    seen: set[Reason] = set()
    for f in r["findings"]:
        reason = Reason(f["reason"])
        level = severity(reason, policy)
        if level is Verdict.ACCEPTED or reason in seen:
            continue
        seen.add(reason)
        out.append({
            "alert_id": alert_id(r["event_id"], reason), "event_id": r["event_id"],
            "nip": r["nip"], "device_id": r["device_id"], "office_id": r["office_id"],
            "rule": reason.value, "severity": level.value, "server_time": r["server_time"],
            "detected_at": now, "evidence": f["evidence"],
        })
    return out


# The largest original value a dead letter keeps: under the brokers' message.max.bytes (4 MiB,
# hadir/infra/kafka.py and docker/compose.yaml) with room for the rest of the dead letter. A
# larger one would be refused by Kafka, and the stage would fail on that record again and again.
DEAD_LETTER_VALUE_MAX = 4_000_000


def dead_letter(topic: str, partition: int, offset: int, key: bytes | None,
                value: bytes | None, error: str, stage: str,
                about: tuple[str, str] | None = None) -> dict[str, Any]:
    """The dead-letter record of a record a stage could not process: its bytes (or, when too
    large to keep, their size and SHA-256, the record itself staying on its topic), the
    reason, where it came from and, when they could be read, the check-in's event id and
    NIP (``about``)."""
    if value is not None and len(value) > DEAD_LETTER_VALUE_MAX:
        error = (f"{error} [value not kept: {len(value):,} bytes, sha256 "
                 f"{hashlib.sha256(value).hexdigest()}]")
        value = None
    return {"source_topic": topic, "source_partition": partition, "source_offset": offset,
            "key": key, "value": value, "error": error, "stage": stage,
            "failed_at": datetime.now(UTC), "event_id": about[0] if about else None,
            "nip": about[1] if about else None}


def readable(record: dict[str, Any] | None) -> tuple[str, str] | None:
    """The event id (a UUID) and NIP (18 digits) of a check-in that could not be judged, when
    both can be read: then the ASN can be told why (INVALID_INPUT) and can appeal."""
    try:
        event_id, nip = str(uuid.UUID(record["event_id"])), record["nip"].strip()  # type: ignore[index]
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    return (event_id, nip) if len(nip) == 18 and nip.isdigit() else None


def invalid_input(record: dict[str, Any] | None, error: str, policy: FraudPolicy,
                  now: datetime) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The verdict (REJECTED: INVALID_INPUT) and alert of a dead-lettered check-in whose event
    id, NIP, type and server time can be read (a raw record, times as datetimes, or an
    in-progress one, as epoch milliseconds); None otherwise. Without it the ASN's day would
    silently be TK."""
    about = readable(record)
    if about is None or record is None or record.get("type") not in ("IN", "OUT"):
        return None
    server_time = record.get("server_time")
    if isinstance(server_time, int):
        server_time = from_epoch_ms(server_time)
    if not isinstance(server_time, datetime) or not (
            PLAUSIBLE_TIMES[0] <= server_time < PLAUSIBLE_TIMES[1]):
        return None

    def finite(v: Any) -> float:
        return v if isinstance(v, float) and math.isfinite(v) else 0.0

    r = {"event_id": about[0], "nip": about[1],
         "device_id": str(record.get("device_id") or "")[:128], "office_id": "",
         "type": record["type"], "server_time": epoch_ms(server_time), "client_time": None,
         "face_similarity": None, "spoof_score": None, "h3_cell": "", "distance_m": None,
         "lat": finite(record.get("lat")), "lon": finite(record.get("lon")),
         "accuracy_m": None, "offline_age_ms": 0,
         "findings": [{"reason": Reason.INVALID_INPUT.value,
                       "evidence": evidence_json({"error": error[:500]})}]}
    verdict = verdict_record(r, severity(Reason.INVALID_INPUT, policy), now)
    return verdict, alert_records(r, policy, now)[0]
