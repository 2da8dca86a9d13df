"""``hadir review``, ``hadir excuse`` and ``hadir month``: what people decide, as events on Kafka
(hadir.reviews.decisions, hadir.excuse.requests with the approved Excuse on hadir.ref.excuses,
hadir.ref.months), read back from ClickHouse once the sink has stored them. The rules are in
processors/review.py; this module finds the facts, checks them against the rules, publishes."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import Any

from hadir import reports, topics
from hadir.config import Settings
from hadir.kafka_io import publish
from processors.attendance import ExcuseKind
from processors.review import (
    STANDING_SQL,
    Decision,
    DecisionKind,
    ExcuseRequest,
    RequestStatus,
    ReviewError,
    check_name,
    check_note,
    decide_request,
    month_of,
    months_between,
    refuse_closed,
)
from sinks.connection import rows

QUEUE_COLUMNS = ["event_id", "nip", "office_id", "server_time", "verdict", "reasons", "appeal",
                 "evidence"]
HISTORY_COLUMNS = ["decided_at", "decision", "reviewer", "note", "decision_id"]
REQUEST_COLUMNS = ["request_id", "nip", "office_id", "kind", "date_from", "date_to", "note",
                   "submitted_at", "status", "decided_by"]


def _rows(settings: Settings, sql: str, params: dict[str, Any] | None = None
          ) -> list[dict[str, Any]]:
    return rows(settings.infra, sql, params)


def wait_stored(settings: Settings, sql: str, params: dict[str, Any],
                timeout: float = 30.0) -> None:
    """Until ``sql`` returns a row: the sink has stored what was just published."""
    deadline = time.monotonic() + timeout
    while not _rows(settings, sql, params):
        if time.monotonic() > deadline:
            raise TimeoutError("published, but not yet in ClickHouse after "
                               f"{timeout:.0f} s: is the sink running (`hadir run --status`)?")
        time.sleep(0.2)


def closed_months(settings: Settings) -> set[str]:
    return {r["month"] for r in _rows(settings, "SELECT month FROM months FINAL "
                                                "WHERE closed = 1")}


# --- reviewer decisions ------------------------------------------------------------------


_DECISIONS = (f"SELECT event_id, {STANDING_SQL} AS decision "
              "FROM decisions FINAL GROUP BY event_id")


def queue(settings: Settings, office: str | None = None, rule: str | None = None,
          limit: int = 200) -> list[dict[str, Any]]:
    """REVIEW verdicts without a decision and appealed rejections without one, oldest first,
    with the evidence of each alert."""
    # ClickHouse 18.16 takes one JOIN per SELECT: the appeals, then the decisions.
    rows = _rows(settings, (
        "SELECT event_id, nip, office_id, server_time, verdict, reasons, appeal FROM ("
        "SELECT event_id, nip, office_id, server_time, verdict, reasons, appeal, appealed "
        # each flagged check-in's newest verdict: found without FINAL, which would merge
        # every check-in of the year before filtering
        "FROM (SELECT event_id, argMax(nip, version) AS nip, "
        "argMax(office_id, version) AS office_id, argMax(server_time, version) AS server_time, "
        "argMax(verdict, version) AS verdict, argMax(reasons, version) AS reasons "
        "FROM checkins WHERE event_id IN (SELECT event_id FROM checkins "
        "WHERE verdict != 'ACCEPTED'" + (" AND office_id = %(office)s" if office else "")
        + (" AND has(reasons, %(rule)s)" if rule else "") + ") GROUP BY event_id "
        "HAVING verdict != 'ACCEPTED') "
        "ANY LEFT JOIN (SELECT event_id, argMax(note, submitted_at) AS appeal, 1 AS appealed "
        "FROM appeals FINAL GROUP BY event_id) USING event_id) "
        f"ANY LEFT JOIN ({_DECISIONS}) USING event_id "
        "WHERE decision = '' AND (verdict = 'REVIEW' OR appealed = 1) "
        "ORDER BY server_time, event_id LIMIT %(limit)s"),
        {"office": office, "rule": rule, "limit": limit})
    evidence = _evidence(settings, [r["event_id"] for r in rows])
    for r in rows:
        r["reasons"] = list(r["reasons"])
        r["evidence"] = evidence.get(r["event_id"], {})
    return rows


def _evidence(settings: Settings, event_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not event_ids:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for r in _rows(settings, "SELECT event_id, rule, evidence FROM alerts FINAL "
                             "WHERE event_id IN %(ids)s", {"ids": tuple(event_ids)}):
        out.setdefault(r["event_id"], {})[r["rule"]] = json.loads(r["evidence"])
    return out


def decide(settings: Settings, event_id: str, decision: DecisionKind, by: str,
           note: str = "", now: datetime | None = None) -> dict[str, Any]:
    """Publish a reviewer's decision on a judged check-in; refused for a closed month."""
    try:
        event_id = str(uuid.UUID(event_id))
    except ValueError:
        raise ReviewError(f"{event_id!r} is not an event id") from None
    found = _rows(settings, "SELECT argMax(nip, version) AS nip, argMax(local_date, version) "
                            "AS local_date FROM checkins WHERE event_id = %(e)s "
                            "HAVING count() > 0", {"e": event_id})
    if not found:
        raise ReviewError(f"no verdict for check-in {event_id} (yet)")
    refuse_closed(closed_months(settings), [month_of(found[0]["local_date"])],
                  f"a decision on {event_id}")
    record = {"decision_id": str(uuid.uuid4()), "event_id": event_id, "nip": found[0]["nip"],
              "decision": decision.value, "reviewer": check_name(by), "note": check_note(note),
              "decided_at": now or datetime.now(UTC)}
    publish(settings, topics.DECISIONS, [(event_id, record)], "reviewer")
    wait_stored(settings, "SELECT 1 FROM decisions WHERE decision_id = %(d)s",
                {"d": record["decision_id"]})
    return {**record, "decided_at": record["decided_at"].isoformat()}


def publish_decisions(settings: Settings, decisions: list[Decision],
                      timeout: float = 120.0) -> tuple[int, list[str]]:
    """Many reviewers' decisions at once (a scenario's decisions.csv, the demo's reviewers):
    those not stored yet are published, each checked like :func:`decide`; returns how many
    were published and why the others were refused. Waits until ClickHouse has them."""
    ids = sorted({d.event_id for d in decisions})
    if not ids:
        return 0, []
    facts = {r["event_id"]: r for r in _rows(
        settings, "SELECT event_id, nip, local_date FROM checkins FINAL "
                  "WHERE event_id IN %(ids)s", {"ids": tuple(ids)})}
    stored = {r["decision_id"] for r in _rows(
        settings, "SELECT decision_id FROM decisions WHERE event_id IN %(ids)s",
        {"ids": tuple(ids)})}
    closed = closed_months(settings)
    records, refused = [], []
    for d in decisions:
        if d.decision_id in stored:
            continue
        fact = facts.get(d.event_id)
        try:
            if fact is None:
                raise ReviewError(f"no verdict for check-in {d.event_id}")
            refuse_closed(closed, [month_of(fact["local_date"])], f"a decision on {d.event_id}")
        except ReviewError as exc:
            refused.append(str(exc))
            continue
        records.append((d.event_id, {**asdict(d), "nip": fact["nip"],
                                     "decision": d.decision.value}))
    publish(settings, topics.DECISIONS, records, "reviewer")
    wanted = tuple(r["decision_id"] for _, r in records)
    deadline = time.monotonic() + timeout
    while wanted and _rows(settings, "SELECT count() AS n FROM decisions "
                                     "WHERE decision_id IN %(ids)s",
                           {"ids": wanted})[0]["n"] < len(wanted):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(wanted)} decisions published but not all in ClickHouse "
                               f"after {timeout:.0f} s: is the sink running?")
        time.sleep(0.2)
    return len(records), refused


def history(settings: Settings, event_id: str) -> list[dict[str, Any]]:
    """Every decision on a check-in, oldest first (the last one stands)."""
    rows = _rows(settings, "SELECT decided_at, decision, reviewer, note, decision_id "
                           "FROM decisions FINAL WHERE event_id = %(e)s "
                           "ORDER BY decided_at_ms, decision_id", {"e": event_id})
    return rows


# --- excuse requests ----------------------------------------------------------------------


def requests(settings: Settings, status: str | None = "PENDING",
             office: str | None = None) -> list[dict[str, Any]]:
    rows = _rows(settings, (
        "SELECT request_id, nip, office_id, kind, date_from, date_to, note, submitted_at, "
        "status, decided_by FROM (SELECT * FROM excuse_requests FINAL"
        + (" WHERE status = %(status)s" if status else "") + ") ANY LEFT JOIN "
        "(SELECT nip, office_id FROM employees FINAL WHERE deleted = 0) USING nip"
        + (" WHERE office_id = %(office)s" if office else "")
        + " ORDER BY submitted_at, request_id"), {"status": status, "office": office})
    return rows


def request(settings: Settings, request_id: str) -> ExcuseRequest:
    found = _rows(settings, "SELECT * FROM excuse_requests FINAL WHERE request_id = %(r)s",
                  {"r": request_id})
    if not found:
        raise ReviewError(f"no excuse request {request_id}")
    r = found[0]
    return ExcuseRequest(r["request_id"], r["nip"], ExcuseKind(r["kind"]), r["date_from"],
                         r["date_to"], r["note"], r["submitted_at"].replace(tzinfo=UTC),
                         RequestStatus(r["status"]), r["decided_by"],
                         r["decided_at"].replace(tzinfo=UTC) if r["decided_at"] else None)


def request_record(r: ExcuseRequest) -> dict[str, Any]:
    """The ExcuseRequest Avro record of a request."""
    return {**asdict(r), "kind": r.kind.value, "status": r.status.value,
            "date_from": r.date_from.isoformat(), "date_to": r.date_to.isoformat()}


def decide_excuse(settings: Settings, request_id: str, approve: bool, by: str,
                  now: datetime | None = None) -> dict[str, Any]:
    """Approve or reject a pending request; an approval also publishes the Excuse, so the
    stream and the reports see it at once. Refused when it would change a closed month."""
    pending = request(settings, request_id)
    decided = decide_request(pending, approve, by, now or datetime.now(UTC))
    if approve:
        refuse_closed(closed_months(settings), months_between(pending.date_from,
                                                              pending.date_to),
                      f"approving {request_id}")
        publish(settings, topics.EXCUSES, [(
            f"{pending.nip}|{pending.date_from.isoformat()}|{pending.kind.value}",
            {"nip": pending.nip, "date_from": pending.date_from.isoformat(),
             "date_to": pending.date_to.isoformat(), "kind": pending.kind.value})], "reviewer")
    publish(settings, topics.EXCUSE_REQUESTS, [(pending.nip, request_record(decided))],
            "reviewer")
    wait_stored(settings, "SELECT 1 FROM excuse_requests FINAL WHERE request_id = %(r)s "
                          "AND status = %(s)s", {"r": request_id, "s": decided.status.value})
    return {"request_id": request_id, "status": decided.status.value, "decided_by":
            decided.decided_by}


# --- closed months ------------------------------------------------------------------------


def set_month(settings: Settings, month: date, closed: bool, by: str) -> dict[str, Any]:
    """Close a month (its TPP report is stored as paid, and from then on is what `hadir report
    tpp` shows for it) or reopen it."""
    name = month_of(month)
    if closed == (name in closed_months(settings)):
        raise ReviewError(f"{name} is already {'closed' if closed else 'open'}")
    if closed:
        reports.freeze(settings, month)
    record = {"month": name, "closed": closed, "by": check_name(by), "at": datetime.now(UTC)}
    publish(settings, topics.MONTHS, [(name, record)])
    wait_stored(settings, "SELECT 1 FROM months FINAL WHERE month = %(m)s AND closed = %(c)s",
                {"m": name, "c": int(closed)})
    return {**record, "at": record["at"].isoformat()}
