"""``hadir export NIP``: everything Hadir holds about one ASN, for them (UU 27/2022 art. 31-32,
the right of access): their records from ClickHouse (the tables of processors/erasure.py's
plan), their phone keys and the reference data on Kafka. It names nobody else (other NIPs in
an alert's evidence are redacted) and never carries biometric data: the face template's
embedding and the selfies' bytes are described (that they exist, where, for how long), not
copied. The export itself is written to the access log."""

from __future__ import annotations

import contextlib
import getpass
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from hadir import devices, topics
from hadir.config import Settings
from hadir.kafka_io import publish
from hadir.kafka_records import placements
from hadir.serde import AvroCodec, Registry
from processors.erasure import PLAN, check_nip, names_nip, redact_others
from processors.templates import TemplateCipher, TemplateError
from sinks.connection import rows

SUMMARY_COLUMNS = ["what", "where", "records"]
# Each table's rows newest first, by its own time column.
_ORDER = {"checkins": "server_time_ms DESC", "alerts": "detected_at DESC",
          "employees": "version DESC", "excuses": "date_from DESC",
          "excuse_requests": "submitted_at DESC", "appeals": "submitted_at DESC",
          "decisions": "decided_at_ms DESC", "attendance_daily": "date DESC",
          "tpp_monthly": "month DESC", "tpp_closed": "month DESC, version DESC",
          "dead_letters": "failed_at DESC", "access_log": "at DESC"}
_LABELS = {"checkins": "check-ins and their verdicts (with positions)",
           "alerts": "fraud alerts", "appeals": "appeals",
           "excuse_requests": "excuse requests", "excuses": "excuses",
           "decisions": "reviewers' decisions about them",
           "attendance_daily": "daily attendance", "tpp_monthly": "TPP lines (live months)",
           "tpp_closed": "TPP lines as paid (closed months)",
           "dead_letters": "check-ins that could not be processed (metadata)",
           "access_log": "access log: who saw their data"}
# Text columns that may quote other people's NIPs.
_FREE_TEXT = ("evidence", "error", "note", "subject", "device_id")


def _utc(value: Any) -> Any:
    """ClickHouse gives naive UTC datetimes; say so."""
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) else value


def _clean(row: dict[str, Any], nip: str) -> dict[str, Any]:
    out = {k: _utc(v) for k, v in row.items()}
    for column in _FREE_TEXT:
        if isinstance(out.get(column), str):
            out[column] = redact_others(out[column], nip)
    if isinstance(out.get("evidence"), str):
        with contextlib.suppress(ValueError):  # stored as JSON; shown as it is if not
            out["evidence"] = json.loads(out["evidence"])
    return out


def _table(settings: Settings, table: str, nip: str) -> list[dict[str, Any]]:
    # FINAL: one row per record, as the reports see it (not the versions waiting to merge)
    final = "" if table == "tpp_closed" else " FINAL"
    found = rows(settings.infra, f"SELECT * FROM {table}{final} WHERE nip = %(n)s "
                                 f"ORDER BY {_ORDER[table]}", {"n": nip})
    if table in ("employees", "excuses"):
        found = [r for r in found if not r.get("deleted")]
    return [_clean(r, nip) for r in found]


def export(settings: Settings, nip: str, by: str | None = None) -> dict[str, Any]:
    """The person's records, by where they are kept."""
    check_nip(nip)
    now = datetime.now(UTC)
    tables = {plan.table: _table(settings, plan.table, nip) for plan in PLAN}
    employee = tables.pop("employees")
    key = nip.encode()

    template = None
    face = placements(settings, topics.FACES).get(key, {})
    live = [f for f in face.values() if f.value is not None]
    if live:
        record = AvroCodec(topics.FACES, Registry(settings.infra.registry)).decode(
            live[-1].value)
        try:
            key_id = TemplateCipher.sealed_with(record["sealed"])[1]
        except TemplateError:
            key_id = None
        template = {"where": topics.FACES.name, "pack": record["pack"],
                    "enrolled_at": record["enrolled_at"], "sealed_with_key": key_id,
                    "note": "the face template (an embedding: biometric data) is kept sealed "
                            "with AES-256-GCM and is not part of this export"}

    selfie_codec = AvroCodec(topics.SELFIES, Registry(settings.infra.registry))
    fingerprints = sum(
        1 for where in placements(settings, topics.SELFIES).values()
        for f in where.values()
        if f.value is not None and names_nip(selfie_codec.decode(f.value)["value"], nip))
    days = settings.privacy.selfies_days
    recent = [c["event_id"] for c in tables["checkins"]
              if (now - c["server_time"]).total_seconds() < days * 86400]
    selfies = {"where": [topics.RAW.name, topics.DLQ.name],
               "kept_days": days,
               "checkins_whose_selfie_may_still_be_kept": recent,
               "fingerprints": {"where": topics.SELFIES.name, "count": fingerprints,
                                "note": "64-bit perceptual hashes of selfies, to catch a "
                                        "selfie sent twice; no image"},
               "note": "selfies are kept only on these topics, for verification and appeal, "
                       "never in ClickHouse, and are not part of this export"}

    out = {"nip": nip, "generated_at": now,
           "employee": employee[0] if employee else None,
           "devices": [devices.key_row(k) for k in devices.keys(settings, nip)],
           "face_template": template, "selfies": selfies, **tables}
    publish(settings, topics.ACCESS_LOG, [(by or _operator(), {
        "entry_id": str(uuid.uuid4()), "at": now, "username": by or _operator(),
        "role": "cli", "action": "EXPORT_PERSON", "subject": nip, "nip": nip,
        "office_id": (employee[0]["office_id"] if employee else "")})])
    return out


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def summary(data: dict[str, Any]) -> list[dict[str, Any]]:
    """What the export holds, one line per kind, for people."""
    lines = [{"what": "employee record", "where": "hadir.ref.employees, ClickHouse employees",
              "records": int(data["employee"] is not None)},
             {"what": "phone keys (key ids, not keys)", "where": topics.DEVICES.name,
              "records": len(data["devices"])},
             {"what": "face template (sealed; not exported)", "where": topics.FACES.name,
              "records": int(data["face_template"] is not None)},
             {"what": "selfie fingerprints (no image)", "where": topics.SELFIES.name,
              "records": data["selfies"]["fingerprints"]["count"]},
             {"what": f"check-ins whose selfie may still be kept "
                      f"({data['selfies']['kept_days']} days; not exported)",
              "where": ", ".join(data["selfies"]["where"]),
              "records": len(data["selfies"]["checkins_whose_selfie_may_still_be_kept"])}]
    lines += [{"what": what, "where": f"ClickHouse {table}", "records": len(data[table])}
              for table, what in _LABELS.items()]
    return lines
