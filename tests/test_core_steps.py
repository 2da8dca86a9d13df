"""The device step's verdict and alerts, as plain data (streams/core.py, streams/records.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from processors.events import Checkin, CheckinType, Finding, Reason
from processors.fraud import FraudPolicy, alert_id
from streams.core import device_step
from streams.records import in_progress

AT = datetime(2026, 11, 30, 0, 30, tzinfo=UTC)


def _record(findings: list[Finding]) -> dict[str, object]:
    checkin = Checkin("3f1c2a64-5b7e-4c2d-9a8b-1e2f3a4b5c6d", "198001012005011001", "dev-1",
                      CheckinType.IN, AT, AT, -2.486, 106.41, 12.0, False)
    return in_progress(checkin, findings)


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
