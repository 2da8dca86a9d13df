"""The person and device steps of the core worker, as plain data (streams/core.py,
streams/records.py): findings, the state each keeps, the verdict and its alerts."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from processors.attendance import Excuse, ExcuseKind
from processors.events import Checkin, CheckinType, Finding, Reason
from processors.fraud import FraudPolicy, alert_id
from processors.geo import Geofences, GeoPolicy, office_from_feature
from streams.core import Reference, device_step, person_step
from streams.records import in_progress

AT = datetime(2026, 11, 30, 0, 30, tzinfo=UTC)  # 07:30 in Koba (WIB)
NIP = "198001012005011001"
KOBA = (-2.486, 106.41)
OFFICE = {"type": "Feature", "properties": {"office_id": "KOBA", "name": "Kantor Bupati"},
          "geometry": {"type": "Polygon", "coordinates": [[
              [106.4096, -2.4864], [106.4104, -2.4864], [106.4104, -2.4856],
              [106.4096, -2.4856], [106.4096, -2.4864]]]}}


def _record(findings: list[Finding], at: datetime = AT, lat: float = KOBA[0],
            lon: float = KOBA[1], nip: str = NIP) -> dict[str, Any]:
    checkin = Checkin(str(uuid.uuid4()), nip, "dev-1", CheckinType.IN, at, at, lat, lon, 12.0,
                      False)
    return in_progress(checkin, findings)


def _reference() -> Reference:
    ref = Reference(Geofences(policy=GeoPolicy()))
    ref.geofences.update(office_from_feature(OFFICE))
    ref.employees[NIP] = {"nip": NIP, "office_id": "KOBA"}
    return ref


def _person(record: dict[str, Any], state: dict[str, Any] | None,
            ref: Reference | None = None) -> tuple[set[str], dict[str, Any]]:
    out, new_state = person_step(record, state, ref or _reference(), GeoPolicy(),
                                 FraudPolicy(), ZoneInfo("Asia/Jakarta"))
    return {f["reason"] for f in out["findings"]}, new_state


def test_person_step_judges_the_fix_and_keeps_it() -> None:
    reasons, state = _person(_record([]), None)
    assert reasons == set()
    first = state["fixes"][-1]["event_id"]
    # 50 km ten minutes later: impossible, and not kept as where the person is
    far = _record([], at=AT + timedelta(minutes=10), lat=KOBA[0] + 0.45)
    reasons, state = _person(far, state)
    assert reasons == {"IMPOSSIBLE_TRAVEL", "OUTSIDE_GEOFENCE"}
    assert [f["event_id"] for f in state["fixes"]] == [first]
    assert state["recent"][-1] == far["event_id"]


def test_a_late_check_in_is_judged_against_the_fixes_either_side_of_it() -> None:
    """On official duty 50 km away (no geofence that day): in at the office at 07:30, at the
    duty site by 15:30. A check-in from the duty site stamped 07:35 that arrives last was
    compared with 15:30 alone (50 km in 8 h) and passed; 5 minutes after the office it is
    impossible, whatever the order of arrival."""
    ref = _reference()
    ref.excuses[NIP] = [Excuse(NIP, date(2026, 11, 30), date(2026, 11, 30),
                               ExcuseKind.DINAS_LUAR)]
    duty = KOBA[0] + 0.45
    office = _record([], at=AT)
    afternoon = _record([], at=AT + timedelta(hours=8), lat=duty)
    late = _record([], at=AT + timedelta(minutes=5), lat=duty)
    _, state = _person(office, None, ref)
    reasons, state = _person(afternoon, state, ref)
    assert reasons == set()
    reasons, state = _person(late, state, ref)
    assert reasons == {"IMPOSSIBLE_TRAVEL"}
    (jump,) = late["findings"]
    assert json.loads(jump["evidence"])["previous_event_id"] == office["event_id"]
    assert [f["event_id"] for f in state["fixes"]] == [office["event_id"],
                                                       afternoon["event_id"]]
    # One that lies between two fixes and agrees with both is kept among them, in order.
    lunch = _record([], at=AT + timedelta(hours=4), lat=KOBA[0] + 0.2)
    reasons, state = _person(lunch, state, ref)
    assert reasons == set()
    assert [f["event_id"] for f in state["fixes"]] == [office["event_id"], lunch["event_id"],
                                                       afternoon["event_id"]]


def test_a_late_check_in_far_from_the_next_fix_names_it() -> None:
    _, state = _person(_record([]), None)
    early = _record([], at=AT - timedelta(minutes=5), lat=KOBA[0] + 0.45)
    reasons, _ = _person(early, state)
    assert "IMPOSSIBLE_TRAVEL" in reasons
    jump = next(json.loads(f["evidence"]) for f in early["findings"]
                if f["reason"] == "IMPOSSIBLE_TRAVEL")
    assert jump["next_event_id"] == state["fixes"][-1]["event_id"]
    assert "previous_event_id" not in jump


def test_fixes_are_kept_for_a_day() -> None:
    _, state = _person(_record([]), None)
    old = state["fixes"][0]
    for hours in (10, 20, 30):
        _, state = _person(_record([], at=AT + timedelta(hours=hours)), state)
    assert [f["at"] for f in state["fixes"]] == [old["at"] + h * 3_600_000 for h in (10, 20, 30)]


def test_a_mock_location_fix_is_not_kept() -> None:
    _, state = _person(_record([]), None)
    mocked = _record([Finding(Reason.MOCK_LOCATION, {})], at=AT + timedelta(minutes=1))
    reasons, after = _person(mocked, state)
    assert "MOCK_LOCATION" in reasons and after["fixes"] == state["fixes"]


def test_unknown_employee_and_official_duty_elsewhere() -> None:
    stranger = _record([], nip="199001012015011002")
    reasons, _ = _person(stranger, None)
    assert reasons == {"UNKNOWN_EMPLOYEE"}
    assert stranger["h3_cell"]  # on the compliance team's map like every other check-in
    ref = _reference()
    away = _record([], lat=KOBA[0] + 0.02)
    assert _person(dict(away), None, ref)[0] == {"OUTSIDE_GEOFENCE"}
    ref.excuses[NIP] = [Excuse(NIP, date(2026, 11, 30), date(2026, 11, 30),
                               ExcuseKind.DINAS_LUAR)]
    assert _person(dict(away), None, ref)[0] == set()


def test_an_office_without_a_geofence_rejects_except_on_official_duty() -> None:
    ref = _reference()
    ref.employees[NIP] = {"nip": NIP, "office_id": "NOT-MAPPED"}
    record = _record([])
    assert _person(dict(record), None, ref)[0] == {"OUTSIDE_GEOFENCE"}
    ref.excuses[NIP] = [Excuse(NIP, date(2026, 11, 30), date(2026, 11, 30),
                               ExcuseKind.DINAS_LUAR)]
    reasons, _ = _person(record, None, ref)
    assert reasons == set() and record["h3_cell"]


def test_one_alert_per_reason_with_the_findings_own_evidence() -> None:
    record = _record([
        Finding(Reason.OUTSIDE_GEOFENCE, {"office_id": "KOBA", "distance_m": 812.5,
                                          "tolerance_m": 30}),
        Finding(Reason.LOW_ACCURACY, {"accuracy_m": 180.0}),
        Finding(Reason.OUTSIDE_GEOFENCE, {"office_id": "KOBA", "distance_m": 900.0}),
        Finding(Reason.NO_SELFIE, {}),
    ])
    texts = {f["reason"]: f["evidence"] for f in reversed(record["findings"])}  # first wins
    (verdict, alerts), revised, _ = device_step(record, None, FraudPolicy(), AT)
    assert verdict["verdict"] == "REJECTED" and revised == []
    assert verdict["reasons"] == ["OUTSIDE_GEOFENCE", "LOW_ACCURACY", "NO_SELFIE"]
    assert [(a["rule"], a["severity"]) for a in alerts] == [
        ("OUTSIDE_GEOFENCE", "REJECTED"), ("LOW_ACCURACY", "REVIEW"), ("NO_SELFIE", "REJECTED")]
    for a in alerts:
        assert a["evidence"] == texts[a["rule"]]
        assert a["alert_id"] == alert_id(str(record["event_id"]), Reason(a["rule"]))
    assert json.loads(alerts[0]["evidence"]) == {"office_id": "KOBA", "distance_m": 812.5,
                                                 "tolerance_m": 30}


def test_a_reason_the_policy_lets_pass_raises_no_alert() -> None:
    lenient = FraudPolicy(review_reasons=("SHARED_DEVICE", "MULTIPLE_FACES", "CLOCK_SKEW",
                                          "SPOOF", "NO_TEMPLATE"))
    record = _record([Finding(Reason.LOW_ACCURACY, {"accuracy_m": 180.0})])
    (verdict, alerts), _, _ = device_step(record, None, lenient, AT)
    assert verdict["verdict"] == "ACCEPTED" and verdict["reasons"] == ["LOW_ACCURACY"]
    assert alerts == []


def test_a_shared_device_found_late_revises_the_verdict_already_given() -> None:
    """The device stage sees the later check-in first (accepted: nobody else used the phone
    yet); when the earlier one of another ASN arrives, the later one is revised to REVIEW
    with only its new SHARED_DEVICE alert, the revision newer than the first verdict, and the
    stored state keeps the revised record."""
    borrower = "199001012015011002"
    later = _record([], at=AT + timedelta(minutes=3), nip=borrower)
    earlier = _record([], at=AT)
    (first, alerts), revised, state = device_step(dict(later), None, FraudPolicy(), AT)
    assert first["verdict"] == "ACCEPTED" and alerts == [] and revised == []
    decided = AT + timedelta(seconds=5)
    (verdict, alerts), revised, state = device_step(dict(earlier), state, FraudPolicy(),
                                                    decided)
    assert verdict["verdict"] == "ACCEPTED" and alerts == []  # the phone's first user
    ((again, new_alerts),) = revised
    assert again["event_id"] == later["event_id"] and again["verdict"] == "REVIEW"
    assert again["reasons"] == ["SHARED_DEVICE"] and again["decided_at"] > decided
    (alert,) = new_alerts
    assert alert["rule"] == "SHARED_DEVICE"
    assert json.loads(alert["evidence"])["other_nips"] == [NIP]
    stored = {u[2]: u[4] for u in state["uses"]}
    assert [f["reason"] for f in stored[later["event_id"]]["findings"]] == ["SHARED_DEVICE"]
    # The first user again, a minute later: the borrower is not revised a second time.
    _, revised, _ = device_step(_record([], at=AT + timedelta(minutes=1)), state,
                                FraudPolicy(), decided)
    assert revised == []


def test_an_offline_check_in_is_judged_at_its_capture_time() -> None:
    """Captured in the office at 07:20 WIB without signal, sent at 09:00: the fix is kept at
    07:20, so a check-in at the office at 07:30 is no jump from it; held past two hours it is
    reviewed."""
    captured = datetime(2026, 10, 5, 0, 20, tzinfo=UTC)
    record = _record([], at=captured + timedelta(minutes=100))
    record["offline_age_ms"] = 100 * 60 * 1000
    record["client_time"] = int(captured.timestamp() * 1000)
    reasons, state = _person(record, None)
    assert reasons == set()
    assert state["fixes"][-1]["at"] == int(captured.timestamp() * 1000)
    held = _record([], at=captured + timedelta(hours=3))
    held["offline_age_ms"] = 3 * 3600 * 1000
    held["client_time"] = int(captured.timestamp() * 1000)
    reasons, _ = _person(held, None)
    assert reasons == {"OFFLINE_DELAYED"}


def test_an_employee_record_out_of_bounds_is_refused_not_kept() -> None:
    """A reference record is input too: the follower logs and skips what this refuses."""
    from streams.core_app import _employee

    ref = _reference()
    good = {"nip": "199001012015011002", "office_id": "KOBA", "name": "Siti"}
    _employee(ref, good["nip"].encode(), good)
    assert ref.employees[good["nip"]] == good
    for bad in ({**good, "nip": "1" * 2_000_000}, {**good, "nip": "12345"},
                {**good, "office_id": "x" * 65}):
        with pytest.raises(ValueError, match="out of bounds"):
            _employee(ref, b"k", bad)
    _employee(ref, good["nip"].encode(), None)
    assert good["nip"] not in ref.employees
