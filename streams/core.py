"""The person and device steps of the pipeline, as plain code the faust agents call.

Person step (state per NIP, input keyed by NIP): duplicate event ids, unknown employee, geofence
(skipped on a DINAS_LUAR day: official duty elsewhere), impossible travel (against the fixes
just before and after in capture time, from a day of them), clock skew, offline delay.
Device step (state per device_id, input repartitioned by device): shared device, then the
verdict and its alerts.

State values are JSON-able dicts so faust tables can hold them. Each step returns the new state
and the caller stores it *after* its output was sent: a crash in between re-runs the step from
the old state and produces the same output, and a duplicate event id is dropped only once its
output is known to be out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from processors import fraud, geo
from processors.attendance import Excuse, ExcuseKind, excuse_on
from processors.events import Finding, Reason
from processors.fraud import DeviceHistory, DeviceUse, FraudPolicy
from processors.geo import Fix, Geofences, GeoPolicy
from streams.records import (
    add_findings,
    alert_records,
    checkin_from_progress,
    epoch_ms,
    findings_of,
    from_epoch_ms,
    verdict_record,
)

RECENT_EVENTS = 64  # per NIP / per device: enough to catch re-sent events
FIX_HORIZON_MS = 24 * 3600 * 1000  # per NIP, a day of fixes: late check-ins fall between them
MAX_FIXES = 8


@dataclass
class Reference:
    """What the person step needs to know, kept current by streams.reference."""

    geofences: Geofences
    employees: dict[str, dict[str, Any]] = field(default_factory=dict)
    excuses: dict[str, list[Excuse]] = field(default_factory=dict)

    def excuse_on(self, nip: str, day: date) -> ExcuseKind | None:
        return excuse_on(self.excuses.get(nip, ()), day)


def seen(state: dict[str, Any] | None, event_id: str) -> bool:
    return state is not None and event_id in state.get("recent", ())


def _remember(state: dict[str, Any] | None, event_id: str) -> list[str]:
    recent = list(state.get("recent", ())) if state else []
    recent.append(event_id)
    return recent[-RECENT_EVENTS:]


# Fixes from these check-ins are not where the person was, so impossible travel never
# compares against them.
_UNTRUSTED_FIX = {Reason.MOCK_LOCATION.value, Reason.IMPOSSIBLE_TRAVEL.value}


def _fixes(state: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The NIP's recent trusted fixes, oldest first."""
    return list(state["fixes"]) if state else []


def _as_fix(f: dict[str, Any] | None) -> Fix | None:
    if f is None:
        return None
    return Fix(f["lat"], f["lon"], f["accuracy_m"], from_epoch_ms(f["at"]), f["event_id"])


def _kept(fixes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first, the last day's (before the newest), at most MAX_FIXES."""
    fixes.sort(key=lambda f: f["at"])
    newest = fixes[-1]["at"]
    return [f for f in fixes if f["at"] >= newest - FIX_HORIZON_MS][-MAX_FIXES:]


def person_step(record: dict[str, Any], state: dict[str, Any] | None, ref: Reference,
                geo_policy: GeoPolicy, fraud_policy: FraudPolicy,
                tz: ZoneInfo) -> tuple[dict[str, Any], dict[str, Any]]:
    """Adds the person findings to ``record`` (in place) and returns it with the new state."""
    checkin = checkin_from_progress(record)
    found: list[Finding] = []
    employee = ref.employees.get(checkin.nip)
    measured = False
    if employee is None:
        found.append(fraud.unknown_employee(checkin.nip))
    else:
        record["office_id"] = employee["office_id"]
        local_day = checkin.captured_at.astimezone(tz).date()
        excuse = ref.excuse_on(checkin.nip, local_day)
        if employee["office_id"] in ref.geofences:
            where = ref.geofences.locate(employee["office_id"], checkin.lat, checkin.lon)
            record["h3_cell"] = where.h3_cell
            record["distance_m"] = where.distance_m
            measured = True
            if not where.inside and excuse is not ExcuseKind.DINAS_LUAR:
                found.append(Finding(Reason.OUTSIDE_GEOFENCE, {
                    "office_id": employee["office_id"], "distance_m": round(where.distance_m, 1),
                    "tolerance_m": geo_policy.geofence_tolerance_m}))
        elif excuse is not ExcuseKind.DINAS_LUAR:
            found.append(Finding(Reason.OUTSIDE_GEOFENCE, {
                "office_id": employee["office_id"], "error": "office has no geofence"}))
    if not measured:  # no office to measure against: the cell still puts it on the map
        record["h3_cell"] = geo.h3_cell(checkin.lat, checkin.lon, geo_policy.h3_resolution)
    fixes = _fixes(state)
    current = Fix.from_checkin(checkin, geo_policy)
    at = epoch_ms(current.at)
    before = next((f for f in reversed(fixes) if f["at"] <= at), None)
    after = next((f for f in fixes if f["at"] > at), None)
    jump = geo.impossible_travel_between(_as_fix(before), current, _as_fix(after), geo_policy)
    if jump:
        found.append(jump)
    found.extend(f for f in (fraud.clock_skew(checkin, fraud_policy),
                             fraud.offline_delayed(checkin, fraud_policy)) if f)
    add_findings(record, found)
    reasons = {f["reason"] for f in record["findings"]}
    if not reasons & _UNTRUSTED_FIX:
        fixes = _kept([*fixes, {"lat": current.lat, "lon": current.lon,
                                "accuracy_m": current.accuracy_m, "at": at,
                                "event_id": current.event_id}])
    return record, {"fixes": fixes, "recent": _remember(state, checkin.event_id)}


Decision = tuple[dict[str, Any], list[dict[str, Any]]]  # a verdict and its alerts


def device_step(record: dict[str, Any], state: dict[str, Any] | None,
                fraud_policy: FraudPolicy,
                now: datetime) -> tuple[Decision, list[Decision], dict[str, Any]]:
    """Shared-device check, then the verdict and its alerts. Also returns revised decisions
    for check-ins already decided that this one shows were on a shared device (they were
    processed before it although made after it), each with only its new alert."""
    checkin = checkin_from_progress(record)
    uses = (state or {}).get("uses", ())
    stored = {u[2]: u[4] for u in uses}
    history = DeviceHistory(tuple(DeviceUse(u[0], from_epoch_ms(u[1]), u[2], u[3]) for u in uses))
    finding, later, history = fraud.shared_device(history, checkin, fraud_policy)
    if finding:
        add_findings(record, [finding])
    decision = (verdict_record(record, fraud.decide(findings_of(record), fraud_policy), now),
                alert_records(record, fraud_policy, now))
    stored[checkin.event_id] = record  # as decoded: JSON-able
    revised: list[Decision] = []
    revised_at = now + timedelta(milliseconds=1)  # a revision is newer than what it revises
    for use, late_finding in later:
        earlier = dict(stored[use.event_id])  # a copy: the old state stays as it was
        add_findings(earlier, [late_finding])
        stored[use.event_id] = earlier
        alerts = [a for a in alert_records(earlier, fraud_policy, revised_at)
                  if a["rule"] == Reason.SHARED_DEVICE.value]
        revised.append((verdict_record(earlier, fraud.decide(findings_of(earlier),
                                                             fraud_policy), revised_at), alerts))
    new_state = {"uses": [[u.nip, epoch_ms(u.at), u.event_id, u.flagged, stored[u.event_id]]
                          for u in history.uses],
                 "recent": _remember(state, checkin.event_id)}
    return decision, revised, new_state
