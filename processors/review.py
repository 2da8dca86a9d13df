"""What people decide about what Hadir found, as plain rules: reviewer decisions, appeals,
excuse requests and closed months (DESIGN.md, default policy: "Reviewer decisions").

- A decision (CLEAR or CONFIRM) on a check-in: the newest by ``decided_at`` stands, whatever
  order decisions arrive in. CLEAR makes the check-in count whatever its verdict; CONFIRM makes
  it not count; without one, REVIEW counts and REJECTED does not (:func:`counts`).
- An excuse request is PENDING until a head of office or BKPSDM approves or rejects it, once.
- A closed month's pay is frozen: a decision or an approval that would change it is refused,
  naming the month, until the month is reopened.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from processors.attendance import ExcuseKind

MAX_REQUEST_DAYS = 90  # one request's span; longer leave is several requests
NOTE_MAX = 500  # characters of a reviewer's or an ASN's note


class ReviewError(ValueError):
    """A decision, request or approval that is refused; the message says why."""


class DecisionKind(enum.StrEnum):
    CLEAR = "CLEAR"  # the check-in counts
    CONFIRM = "CONFIRM"  # the finding stands: it does not count


class RequestStatus(enum.StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


def counts(verdict: str, decision: str | None) -> bool:
    """Whether a check-in counts as attendance (ClickHouse's ``v_checkin_status`` and the TPP
    report's query say the same in SQL)."""
    if decision == DecisionKind.CLEAR:
        return True
    if decision == DecisionKind.CONFIRM:
        return False
    return verdict in ("ACCEPTED", "REVIEW")


@dataclass(frozen=True)
class Decision:
    decision_id: str
    event_id: str
    nip: str
    decision: DecisionKind
    reviewer: str
    note: str
    decided_at: datetime


def standing(decisions: list[Decision]) -> Decision | None:
    """The decision that stands: the newest by decided_at (ties: the larger id, so every
    reader picks the same)."""
    return max(decisions, key=lambda d: (d.decided_at, d.decision_id), default=None)


# The same rule in ClickHouse, over the decisions table, for every query that reads it.
STANDING_SQL = "argMax(decision, (decided_at_ms, decision_id))"


def check_note(note: str) -> str:
    if len(note) > NOTE_MAX:
        raise ReviewError(f"note: at most {NOTE_MAX} characters, got {len(note)}")
    return note


def check_name(name: str) -> str:
    if not name.strip() or len(name) > 100:
        raise ReviewError(f"reviewer name {name!r}: 1 to 100 characters")
    return name.strip()


@dataclass(frozen=True)
class ExcuseRequest:
    request_id: str
    nip: str
    kind: ExcuseKind
    date_from: date
    date_to: date
    note: str
    submitted_at: datetime
    status: RequestStatus = RequestStatus.PENDING
    decided_by: str = ""
    decided_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.date_to < self.date_from:
            raise ReviewError(f"date_to {self.date_to} is before date_from {self.date_from}")
        if (self.date_to - self.date_from).days >= MAX_REQUEST_DAYS:
            raise ReviewError(f"a request covers at most {MAX_REQUEST_DAYS} days")
        check_note(self.note)


def decide_request(request: ExcuseRequest, approve: bool, by: str,
                   now: datetime) -> ExcuseRequest:
    """The request approved or rejected; only a pending one can be."""
    if request.status is not RequestStatus.PENDING:
        raise ReviewError(f"request {request.request_id} is already {request.status.value}")
    return replace(request, status=RequestStatus.APPROVED if approve else RequestStatus.REJECTED,
                   decided_by=check_name(by), decided_at=now)


def month_of(day: date) -> str:
    return f"{day:%Y-%m}"


def months_between(first: date, last: date) -> list[str]:
    """Every YYYY-MM from ``first`` to ``last`` inclusive."""
    out: list[str] = []
    day = first.replace(day=1)
    while day <= last:
        out.append(month_of(day))
        day = (day + timedelta(days=32)).replace(day=1)
    return out


def refuse_closed(closed: set[str], touched: list[str], what: str) -> None:
    """ReviewError naming the first closed month ``what`` would change."""
    hit = sorted(set(touched) & closed)
    if hit:
        raise ReviewError(f"{what} would change {hit[0]}, a closed month; "
                          f"`hadir month reopen {hit[0]}` first")
