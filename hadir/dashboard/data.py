"""What the dashboard's pages show, read from ClickHouse as the read-only dashboard user and
judged by the same code as ``hadir report`` (a day's numbers come from ``reports.day``, a
month's from ``reports.tpp``)."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date
from typing import Any

from hadir import kafka_access, reports, topics
from hadir.config import Settings
from hadir.serde import AvroCodec, Registry, SerdeError
from processors.attendance import WorkCalendar
from processors.review import STANDING_SQL
from sinks.connection import rows as query

_WORST = {"ACCEPTED": 0, "REVIEW": 1, "REJECTED": 2}
_RAW_POSITION = re.compile(r"(.+)\[(\d+)\]@(\d+)")


def _with_decisions(checkins: str, columns: str) -> str:
    """``columns`` of the check-ins ``checkins`` selects (a query that names event_id),
    with the reviewer decision that stands on each ('' if none) and whether it counts
    (processors/review.py ``counts``). The filter stays inside: ClickHouse 18.16 does not push
    a WHERE through the v_checkin_status view's join, and would read every check-in."""
    return (f"SELECT {columns}, decision, (decision = 'CLEAR') OR (decision != 'CONFIRM' "
            f"AND verdict IN ('ACCEPTED', 'REVIEW')) AS counted FROM ({checkins}) "
            f"ANY LEFT JOIN (SELECT event_id, {STANDING_SQL} AS decision "
            f"FROM decisions WHERE event_id IN (SELECT event_id FROM ({checkins})) "
            "GROUP BY event_id) USING event_id")


def rows(settings: Settings, sql: str, params: dict[str, Any] | None = None
         ) -> list[dict[str, Any]]:
    return query(settings.infra, sql, params)


def month_version(settings: Settings, first: date, last: date) -> tuple[Any, ...]:
    """What a month's TPP is made of, in a few numbers: they change whenever a verdict, a
    decision, an excuse, an employee or a month's status does (a merge that drops old
    versions changes them too, which only costs a recomputation)."""
    found = query(settings.infra, (
        "SELECT (SELECT (count(), sum(version)) FROM checkins WHERE local_date >= %(f)s "
        "AND local_date <= %(l)s) AS checkins, (SELECT (count(), max(decided_at_ms)) "
        "FROM decisions) AS decisions, (SELECT (count(), sum(version)) FROM excuses) AS e, "
        "(SELECT (count(), sum(version)) FROM employees) AS p, "
        "(SELECT (count(), sum(version)) FROM months) AS m"), {"f": first, "l": last})
    return tuple(found[0].values())


def queue_version(settings: Settings) -> tuple[Any, ...]:
    """What the review queue is made of, likewise: verdicts, decisions, appeals."""
    found = query(settings.infra, (
        "SELECT (SELECT (count(), sum(version)) FROM checkins) AS checkins, "
        "(SELECT (count(), max(decided_at_ms)) FROM decisions) AS decisions, "
        "(SELECT (count(), sum(version)) FROM appeals) AS appeals"))
    return tuple(found[0].values())


def offices(settings: Settings) -> list[dict[str, Any]]:
    out = rows(settings, "SELECT office_id, name, geometry FROM offices FINAL "
                         "WHERE deleted = 0 ORDER BY office_id")
    for o in out:
        o["geometry"] = json.loads(o["geometry"])
    return out


def employee(settings: Settings, nip: str) -> dict[str, Any] | None:
    found = rows(settings, "SELECT nip, name, office_id FROM employees FINAL "
                           "WHERE nip = %(nip)s AND deleted = 0", {"nip": nip})
    return found[0] if found else None


def today(settings: Settings, day: date, office: str | None) -> dict[str, Any]:
    """Per office: ASN, present, late, excused, not (yet) in, under review; and per ASN.
    The same judgement as the report's day records: present is a counted IN or OUT (or
    official duty), late a TL code, excused an approved excuse."""
    working = WorkCalendar(settings.attendance).schedule_minutes(day) is not None
    records = reports.day(settings, day, office)
    flagged = ("SELECT event_id, nip, verdict FROM checkins FINAL WHERE local_date = %(d)s "
               "AND verdict = 'REVIEW'" + (" AND office_id = %(o)s" if office else ""))
    review = {r["nip"] for r in rows(
        settings, f"SELECT nip FROM ({_with_decisions(flagged, 'nip')}) WHERE decision = ''",
        {"d": day, "o": office})}
    by_office: dict[str, Counter[str]] = {}
    people = []
    for e, d in records:
        c = by_office.setdefault(e.office_id, Counter(dict.fromkeys(
            ("asn", "present", "late", "excused", "absent", "review"), 0)))
        state = ("excused" if d.excuse is not None else "present" if d.present
                 else "absent")
        c["asn"] += 1
        c[state] += 1
        c["late"] += d.tl_code > 0
        c["review"] += e.nip in review
        people.append({"nip": e.nip, "name": e.name, "office_id": e.office_id,
                       "state": state, "first_in": d.first_in, "last_out": d.last_out,
                       "late_min": d.late_min, "tl": d.tl_code, "psw": d.psw_code,
                       "excuse": d.excuse.value if d.excuse else "",
                       "review": e.nip in review})
    return {"working": working, "offices": [{"office_id": o, **c} for o, c in
                                           sorted(by_office.items())], "people": people}


def checkins_of(settings: Settings, nip: str, day: date) -> list[dict[str, Any]]:
    theirs = ("SELECT event_id, type, server_time, verdict, reasons FROM checkins FINAL "
              "WHERE nip = %(n)s AND local_date = %(d)s")
    return rows(settings, _with_decisions(theirs, "event_id, type, server_time, verdict, "
                                                  "reasons") + " ORDER BY server_time",
                {"n": nip, "d": day})


def alerts(settings: Settings, rule: str | None, office: str | None,
           limit: int = 100) -> list[dict[str, Any]]:
    return rows(settings, "SELECT alert_id, event_id, nip, office_id, rule, severity, "
                          "server_time, detected_at, evidence FROM v_alerts WHERE 1"
                + (" AND rule = %(r)s" if rule else "") + (" AND office_id = %(o)s"
                                                             if office else "")
                + " ORDER BY detected_at DESC LIMIT %(l)s", {"r": rule, "o": office, "l": limit})


def cells(settings: Settings, day: date, office: str | None) -> list[tuple[str, str, int]]:
    """Each H3 cell with check-ins that day, its worst verdict and its count."""
    worst: dict[str, tuple[str, int]] = {}
    for r in rows(settings, "SELECT h3_cell, verdict, count() AS n FROM checkins FINAL "
                            "WHERE local_date = %(d)s AND h3_cell != ''"
                  + (" AND office_id = %(o)s" if office else "")
                  + " GROUP BY h3_cell, verdict", {"d": day, "o": office}):
        verdict, n = worst.get(r["h3_cell"], ("ACCEPTED", 0))
        if _WORST[r["verdict"]] > _WORST[verdict]:
            verdict = r["verdict"]
        worst[r["h3_cell"]] = (verdict, n + r["n"])
    return [(cell, v, n) for cell, (v, n) in sorted(worst.items())]


def checkin(settings: Settings, event_id: str) -> dict[str, Any] | None:
    columns = ("nip", "office_id", "type", "server_time", "verdict", "reasons", "lat", "lon",
               "accuracy_m", "distance_m", "face_similarity", "spoof_score", "source_offset")
    # the newest version without FINAL: the event id is not the table's sort key
    one = ("SELECT event_id, " + ", ".join(f"argMax({c}, version) AS {c}" for c in columns)
           + " FROM checkins WHERE event_id = %(e)s GROUP BY event_id")
    found = rows(settings, _with_decisions(one, "event_id, " + ", ".join(columns)),
                 {"e": event_id})
    return found[0] if found else None


def selfie(settings: Settings, position: str, event_id: str) -> bytes | None:
    """The selfie of a check-in, read from the raw topic at the position its verdict names,
    while Kafka still keeps it (the appeal window); None once it is gone."""
    from confluent_kafka import Consumer, TopicPartition

    where = _RAW_POSITION.fullmatch(position or "")
    if where is None or where[1] != topics.RAW.name:
        return None
    consumer = Consumer({**kafka_access.confluent(settings.infra, "reviewer"),
                         "group.id": "hadir-dashboard-selfies", "enable.auto.commit": False,
                         "auto.offset.reset": "error"})
    try:
        consumer.assign([TopicPartition(where[1], int(where[2]), int(where[3]))])
        msg = consumer.poll(5)
        if msg is None or msg.error() or msg.offset() != int(where[3]):
            return None
        record = AvroCodec(topics.RAW, Registry(settings.infra.registry)).decode(msg.value())
    except SerdeError:
        return None
    finally:
        consumer.close()
    return record["selfie"] if record["event_id"] == event_id else None
