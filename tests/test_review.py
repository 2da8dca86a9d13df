"""processors/review.py with plain data: what counts, which decision stands, excuse requests,
closed months."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from processors.attendance import ExcuseKind
from processors.review import (
    Decision,
    DecisionKind,
    ExcuseRequest,
    RequestStatus,
    ReviewError,
    counts,
    decide_request,
    months_between,
    refuse_closed,
    standing,
)

T = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)


def test_what_counts_with_and_without_a_decision() -> None:
    assert counts("ACCEPTED", None) and counts("REVIEW", None)
    assert not counts("REJECTED", None)
    assert counts("REJECTED", "CLEAR") and counts("REVIEW", "CLEAR")
    assert not counts("ACCEPTED", "CONFIRM") and not counts("REVIEW", "CONFIRM")


def _decision(kind: DecisionKind, at: datetime, decision_id: str) -> Decision:
    return Decision(decision_id, "e", "n", kind, "r", "", at)


def test_the_newest_decision_stands_in_whatever_order_they_come() -> None:
    older = _decision(DecisionKind.CONFIRM, T, "a")
    newer = _decision(DecisionKind.CLEAR, T + timedelta(minutes=5), "b")
    assert standing([older, newer]) == newer == standing([newer, older])
    tie = _decision(DecisionKind.CONFIRM, T + timedelta(minutes=5), "c")
    assert standing([tie, newer]) == tie == standing([newer, tie])
    assert standing([]) is None


def _request(days: int = 2) -> ExcuseRequest:
    first = date(2026, 11, 10)
    return ExcuseRequest("r1", "198001012005011001", ExcuseKind.SAKIT, first,
                         first + timedelta(days=days - 1), "demam", T)


def test_a_request_is_decided_once() -> None:
    approved = decide_request(_request(), True, " Kepala Dinas ", T)
    assert (approved.status, approved.decided_by, approved.decided_at) == (
        RequestStatus.APPROVED, "Kepala Dinas", T)
    with pytest.raises(ReviewError, match="already APPROVED"):
        decide_request(approved, False, "BKPSDM", T)
    assert decide_request(_request(), False, "BKPSDM", T).status is RequestStatus.REJECTED
    with pytest.raises(ReviewError, match="reviewer name"):
        decide_request(_request(), True, "  ", T)


def test_requests_are_bounded() -> None:
    with pytest.raises(ReviewError, match="before date_from"):
        _request(days=0)
    with pytest.raises(ReviewError, match="at most 90 days"):
        _request(days=91)
    with pytest.raises(ReviewError, match="note"):
        ExcuseRequest("r", "n", ExcuseKind.CUTI, date(2026, 1, 1), date(2026, 1, 1), "x" * 501,
                      T)


def test_closed_months_are_named_in_the_refusal() -> None:
    assert months_between(date(2026, 11, 28), date(2027, 1, 2)) == [
        "2026-11", "2026-12", "2027-01"]
    refuse_closed({"2026-10"}, ["2026-11"], "approving r1")  # nothing closed is touched
    with pytest.raises(ReviewError, match="would change 2026-12, a closed month"):
        refuse_closed({"2026-12", "2027-01"}, months_between(date(2026, 11, 28),
                                                             date(2027, 1, 2)), "approving r1")
