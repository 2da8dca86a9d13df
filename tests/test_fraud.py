"""processors/fraud.py with plain data: shared device, clock skew, offline delay, the verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from processors.events import Checkin, CheckinType, Finding, Reason, Verdict
from processors.fraud import (
    DeviceHistory,
    FraudPolicy,
    alert_id,
    clock_skew,
    decide,
    offline_delayed,
    severity,
    shared_device,
)

T0 = datetime(2026, 10, 5, 0, 25, tzinfo=UTC)  # 07:25 WIB
POLICY = FraudPolicy()


def checkin(nip: str = "198001012005011001", device: str = "dev-1", at: datetime = T0,
            client: datetime | None = None, event_id: str = "e") -> Checkin:
    return Checkin(event_id, nip, device, CheckinType.IN, at, client, -2.4867, 106.4103, 10.0,
                   False)


def test_default_policy_matches_design() -> None:
    assert set(POLICY.rejected_reasons) == {
        "UNKNOWN_EMPLOYEE", "MOCK_LOCATION", "OUTSIDE_GEOFENCE", "IMPOSSIBLE_TRAVEL",
        "NO_SELFIE", "NO_FACE", "FACE_MISMATCH", "SELFIE_REPLAY", "INVALID_INPUT"}
    assert {"SHARED_DEVICE", "MULTIPLE_FACES", "CLOCK_SKEW", "LOW_ACCURACY", "SPOOF"} <= set(
        POLICY.review_reasons)


def test_verdict_is_the_most_severe_finding() -> None:
    assert decide([], POLICY) is Verdict.ACCEPTED
    review = Finding(Reason.CLOCK_SKEW, {})
    reject = Finding(Reason.FACE_MISMATCH, {})
    assert decide([review], POLICY) is Verdict.REVIEW
    assert decide([review, reject], POLICY) is Verdict.REJECTED
    assert severity(Reason.SPOOF, POLICY) is Verdict.REVIEW


def test_policy_refuses_unknown_or_contradictory_reasons() -> None:
    with pytest.raises(ValueError, match="unknown reason 'FOO'"):
        FraudPolicy(review_reasons=("FOO",))
    with pytest.raises(ValueError, match="both rejected and review"):
        FraudPolicy(review_reasons=("SPOOF", "NO_FACE"))


def test_operator_can_make_spoof_reject() -> None:
    strict = FraudPolicy(rejected_reasons=(*POLICY.rejected_reasons, "SPOOF"),
                         review_reasons=tuple(r for r in POLICY.review_reasons if r != "SPOOF"))
    assert decide([Finding(Reason.SPOOF, {})], strict) is Verdict.REJECTED


@pytest.mark.parametrize(("offset_s", "flagged"), [
    (0, False), (300, False), (-300, False), (301, True), (-301, True), (3600, True)])
def test_clock_skew_boundary(offset_s: int, flagged: bool) -> None:
    found = clock_skew(checkin(client=T0 + timedelta(seconds=offset_s)), POLICY)
    assert (found is not None) is flagged
    if found:
        assert found.reason is Reason.CLOCK_SKEW
        assert found.evidence["skew_s"] == offset_s


def test_no_client_time_is_no_skew() -> None:
    assert clock_skew(checkin(client=None), POLICY) is None


def test_shared_device_flags_later_nips_with_evidence() -> None:
    history = DeviceHistory()
    first, late, history = shared_device(history, checkin("A", event_id="1"), POLICY)
    assert first is None and late == []  # the owner is not flagged
    again, _, history = shared_device(history, checkin("A", at=T0 + timedelta(minutes=1),
                                                       event_id="2"), POLICY)
    assert again is None  # the same person twice is fine
    second, _, history = shared_device(history, checkin("B", at=T0 + timedelta(minutes=2),
                                                        event_id="3"), POLICY)
    assert second is not None and second.reason is Reason.SHARED_DEVICE
    assert second.evidence["other_nips"] == ["A"]
    assert second.evidence["other_event_ids"] == ["1", "2"]
    third, _, history = shared_device(history, checkin("C", at=T0 + timedelta(minutes=3),
                                                       event_id="4"), POLICY)
    assert third is not None and third.evidence["other_nips"] == ["A", "B"]
    assert [u.nip for u in history.uses] == ["A", "A", "B", "C"]


def test_shared_device_window_is_12_hours() -> None:
    _, _, history = shared_device(DeviceHistory(), checkin("A", event_id="1"), POLICY)
    inside, _, _ = shared_device(history, checkin("B", at=T0 + timedelta(hours=12)), POLICY)
    assert inside is not None
    outside, _, kept = shared_device(
        history, checkin("B", at=T0 + timedelta(hours=12, seconds=1)), POLICY)
    assert outside is None
    assert [u.nip for u in kept.uses] == ["A", "B"]  # kept for check-ins that arrive late
    _, _, kept = shared_device(kept, checkin("C", at=T0 + timedelta(hours=24, seconds=1),
                                             event_id="3"), POLICY)
    assert [u.nip for u in kept.uses] == ["B", "C"]  # two windows behind the newest: gone


def test_shared_device_check_in_arriving_half_a_day_late() -> None:
    """A at 00:00 and B at 13:00 share nothing (13 hours apart); C's 06:00 check-in, arriving
    after both, was within 12 hours of each: C is flagged for A, and B is revised for C."""
    _, _, history = shared_device(DeviceHistory(), checkin("A", event_id="a"), POLICY)
    found, _, history = shared_device(history, checkin("B", at=T0 + timedelta(hours=13),
                                                       event_id="b"), POLICY)
    assert found is None
    found, late, _ = shared_device(history, checkin("C", at=T0 + timedelta(hours=6),
                                                    event_id="c"), POLICY)
    assert found is not None and found.evidence["other_nips"] == ["A"]
    assert [(u.event_id, f.evidence["other_nips"]) for u, f in late] == [("b", ["C"])]


def test_shared_device_out_of_order_revises_the_later_checkin() -> None:
    """The team's check-ins reach the device stage before the owner's, although the owner
    checked in first: the owner is not flagged, the team members are, whatever the order."""
    mate_at = T0 + timedelta(minutes=1)
    found, late, history = shared_device(DeviceHistory(), checkin("B", at=mate_at,
                                                                  event_id="b"), POLICY)
    assert found is None and late == []  # nothing known yet
    found, late, history = shared_device(history, checkin("A", at=T0, event_id="a"), POLICY)
    assert found is None  # the owner came first
    assert [(u.event_id, f.evidence["other_nips"]) for u, f in late] == [("b", ["A"])]
    assert {u.event_id: u.flagged for u in history.uses} == {"a": False, "b": True}
    # A second early check-in by someone else does not revise "b" again.
    _, late, _ = shared_device(history, checkin("C", at=T0 - timedelta(minutes=1),
                                                event_id="c"), POLICY)
    assert [u.event_id for u, _ in late] == ["a"]


def test_shared_device_redelivery_is_not_a_second_person() -> None:
    _, _, history = shared_device(DeviceHistory(), checkin("A", event_id="1"), POLICY)
    again, late, history = shared_device(history, checkin("A", event_id="1"), POLICY)
    assert again is None and late == []
    assert len(history.uses) == 1


def test_alert_id_is_deterministic_per_event_and_rule() -> None:
    a = alert_id("ev-1", Reason.SHARED_DEVICE)
    assert a == alert_id("ev-1", Reason.SHARED_DEVICE)
    assert a != alert_id("ev-1", Reason.CLOCK_SKEW)
    assert a != alert_id("ev-2", Reason.SHARED_DEVICE)


def offline(age: timedelta, client: datetime | None = None) -> Checkin:
    """Captured at T0 without signal, sent ``age`` later."""
    sent = T0 + age
    return Checkin("e", "198001012005011001", "dev-1", CheckinType.IN, sent, client, -2.4867,
                   106.4103, 10.0, False, offline_age_ms=int(age.total_seconds() * 1000))


def test_an_offline_check_in_happened_when_it_was_captured() -> None:
    c = offline(timedelta(minutes=100), client=T0)
    assert c.captured_at == T0
    # its phone clock was right at capture: no skew, though it was sent 100 minutes later
    assert clock_skew(c, POLICY) is None
    assert offline_delayed(c, POLICY) is None  # within two hours: nobody needs to look


def test_an_offline_check_in_held_past_two_hours_is_reviewed() -> None:
    exactly = offline(timedelta(hours=2), client=T0)
    assert offline_delayed(exactly, POLICY) is None
    late = offline(timedelta(hours=2, seconds=1), client=T0)
    finding = offline_delayed(late, POLICY)
    assert finding is not None and finding.reason is Reason.OFFLINE_DELAYED
    assert finding.evidence["captured_at"] == T0.isoformat()
    assert decide([finding], POLICY) is Verdict.REVIEW


def test_a_changed_clock_is_still_caught_on_an_offline_check_in() -> None:
    c = offline(timedelta(minutes=30), client=T0 - timedelta(hours=1))
    finding = clock_skew(c, POLICY)
    assert finding is not None and finding.evidence["skew_s"] == -3600
    assert finding.evidence["offline_age_ms"] == 30 * 60 * 1000


def test_offline_limits_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="offline_review_after_s <= offline_max_s"):
        FraudPolicy(offline_review_after_s=10.0, offline_max_s=5.0)


def test_a_device_is_used_when_the_check_in_was_captured() -> None:
    """Two NIPs on one phone at 07:25 and 07:40, the first sent offline at 10:00: shared."""
    first = offline(timedelta(hours=2, minutes=35))
    second = checkin(nip="198001012005011002", at=T0 + timedelta(minutes=15), event_id="e2")
    _, _, history = shared_device(DeviceHistory(), second, POLICY)
    finding, revised, _ = shared_device(history, first, POLICY)
    assert finding is None and [u.event_id for u, _ in revised] == ["e2"]
