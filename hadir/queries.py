"""``hadir alerts`` and ``hadir checkins``: what the compliance team and the dashboards read."""

from __future__ import annotations

import json
import sys
from datetime import UTC
from typing import Any

from hadir import topics
from hadir.config import Settings
from hadir.output import row_writer
from sinks.connection import connect

ALERT_COLUMNS = ["alert_id", "event_id", "nip", "device_id", "rule", "severity", "detected_at",
                 "evidence"]
CHECKIN_COLUMNS = ["event_id", "nip", "type", "server_time", "verdict", "reasons",
                   "face_similarity", "h3_cell", "distance_m"]


def event_ids(ids: list[str]) -> list[dict[str, Any]]:
    """``ids`` as the external table ``ids`` (column event_id) of a clickhouse-driver query:
    one round trip however many ids there are."""
    return [{"name": "ids", "structure": [("event_id", "String")],
             "data": [{"event_id": i} for i in ids]}]


def _select(settings: Settings, table: str, columns: list[str], filters: dict[str, Any],
            order: str, limit: int) -> list[dict[str, Any]]:
    """Deduplicated rows of ``table`` matching the non-empty ``filters``, newest first."""
    parts = [f"{column} = %({column})s" for column, value in filters.items() if value]
    where = (" WHERE " + " AND ".join(parts)) if parts else ""
    client = connect(settings.infra)
    rows = client.execute(f"SELECT {', '.join(columns)} FROM {table} FINAL{where} "
                          f"ORDER BY {order} LIMIT {int(limit)}", filters)
    client.disconnect()
    return [dict(zip(columns, r, strict=True)) for r in rows]


def _utc(rows: list[dict[str, Any]], column: str) -> list[dict[str, Any]]:
    """ClickHouse gives naive UTC datetimes; say so."""
    for r in rows:
        r[column] = r[column].replace(tzinfo=UTC)
    return rows


def alerts(settings: Settings, rule: str | None = None, nip: str | None = None,
           limit: int = 50) -> list[dict[str, Any]]:
    rows = _select(settings, "alerts", ALERT_COLUMNS, {"rule": rule, "nip": nip},
                   "detected_at DESC, alert_id", limit)
    for r in rows:
        r["evidence"] = json.loads(r["evidence"])
    return _utc(rows, "detected_at")


def checkins(settings: Settings, nip: str | None = None, verdict: str | None = None,
             limit: int = 50) -> list[dict[str, Any]]:
    return _utc(_select(settings, "checkins", CHECKIN_COLUMNS, {"nip": nip, "verdict": verdict},
                        "server_time_ms DESC, event_id", limit), "server_time")


def follow_alerts(settings: Settings, fmt: str = "table", rule: str | None = None,
                  nip: str | None = None) -> int:
    """Tail hadir.fraud.alerts from now on, one line per alert, as a compliance officer would
    watch them; with ``--format json`` or ``csv`` the rows :func:`alerts` gives, one at a time
    (JSON lines, or CSV under one header). Ctrl-C stops."""
    from hadir.serde import AvroCodec, Registry

    codec = AvroCodec(topics.ALERTS, Registry(settings.infra.registry))
    consumer = topics.consumer_from_now(settings.infra, topics.ALERTS, "hadir-alerts-follow",
                                        "compliance")
    write = None if fmt == "table" else row_writer(fmt, ALERT_COLUMNS)
    if write is None:
        print("following fraud alerts (Ctrl-C to stop) ...", flush=True)
    try:
        while True:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            a = codec.decode(msg.value())
            if (rule and a["rule"] != rule) or (nip and a["nip"] != nip):
                continue
            if write is not None:  # as ClickHouse has them: whole seconds, evidence an object
                write({**a, "detected_at": a["detected_at"].replace(microsecond=0),
                       "evidence": json.loads(a["evidence"])})
                continue
            sys.stdout.write(f"{a['detected_at']:%Y-%m-%d %H:%M:%S} {a['severity']:<8} "
                             f"{a['rule']:<17} nip {a['nip']} device {a['device_id']} "
                             f"{a['evidence']}\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    finally:
        consumer.close()
