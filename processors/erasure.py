"""What erasing one ASN (offboarding, UU 27/2022 art. 42-44) does to each ClickHouse table, and
what it keeps, as plain data; hadir/erase.py carries it out and hadir/export.py reads the same
tables for the person's own copy (art. 31-32).

The rule: everything about the person goes, except the pay they were paid. A closed month's
TPP line (``tpp_closed``: NIP, name, office, the month's counts, cut and amount paid) is the
basis of a payment the regency must be able to account for, so its purpose is not met when
the ASN leaves; it is kept, and nothing else is (DOMAIN.md, "Personal data": deletion when
the purpose is met). Because the NIP orders most tables (ClickHouse cannot update a key
column), the person's rows are deleted, not blanked; where the NIP only appears inside other
people's rows (a colleague's SHARED_DEVICE alert names them, an access-log entry was about
them), those rows stay and the NIP in them is replaced by ``ERASED``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import Enum

from processors.replay_index import sighting

ERASED = "[erased]"
NIP_PATTERN = re.compile(r"(?<!\d)\d{18}(?!\d)")


class Action(Enum):
    DELETE = "delete"  # the person's rows (``nip`` = NIP) are deleted
    KEEP = "keep"  # kept as they are, for the reason given


@dataclass(frozen=True)
class TablePlan:
    table: str
    action: Action
    # Columns of other rows that may name the NIP as text, and are not key columns (which
    # ClickHouse cannot update): the NIP in them becomes ERASED.
    scrub: tuple[str, ...] = ()
    why: str = ""


PLAN: tuple[TablePlan, ...] = (
    TablePlan("checkins", Action.DELETE, ("device_id", "source_offset"),
              "verdicts, positions and times of their check-ins"),
    TablePlan("alerts", Action.DELETE, ("device_id", "evidence"),
              "their alerts; colleagues' alerts that name them keep the finding, not the NIP"),
    TablePlan("employees", Action.DELETE, (), "the employee record (also tombstoned on Kafka)"),
    TablePlan("excuses", Action.DELETE, (), "their excuses (also tombstoned on Kafka)"),
    TablePlan("excuse_requests", Action.DELETE, ("note", "decided_by"),
              "their leave, sick, permission and duty requests"),
    TablePlan("appeals", Action.DELETE, ("note",), "their appeals"),
    TablePlan("decisions", Action.DELETE, ("note",), "reviewers' decisions about them"),
    TablePlan("attendance_daily", Action.DELETE, (), "their daily attendance (derived)"),
    TablePlan("tpp_monthly", Action.DELETE, (),
              "their TPP lines as last computed for the dashboards (closed months' paid lines "
              "are in tpp_closed)"),
    TablePlan("dead_letters", Action.DELETE, ("error",),
              "metadata of their check-ins that could not be processed"),
    TablePlan("access_log", Action.KEEP, ("nip", "subject"),
              "who saw whose personal data is the controller's own record of processing "
              "(art. 31): the entries stay, without the NIP"),
    TablePlan("tpp_closed", Action.KEEP, (),
              "a closed month's TPP line is the record of what was paid: kept, as paid"),
)

# Tables that hold no one's personal data: nothing to do.
NOT_PERSONAL = ("offices", "calendar", "months", "schema_migrations")


def plan_for(table: str) -> TablePlan | None:
    return next((p for p in PLAN if p.table == table), None)


def check_nip(nip: str) -> str:
    """The NIP, if it is one (18 digits): an erasure keyed on anything else is refused, since
    a short string would match inside other people's text."""
    if NIP_PATTERN.fullmatch(nip) is None:
        raise ValueError(f"{nip!r} is not a NIP (18 digits)")
    return nip


def names_nip(selfie_entry_value: str, nip: str) -> bool:
    """Whether a selfie-index entry (hadir.internal.selfies, processors/replay_index.py) is
    the person's."""
    try:
        return sighting(selfie_entry_value).nip == nip
    except ValueError:
        return False


def unpaid_months(data_months: set[str], closed: set[str]) -> list[str]:
    """Months (YYYY-MM) with the person's attendance that are not closed yet: their TPP has not
    been frozen as paid, so erasing the attendance now would change what they are paid."""
    return sorted(data_months - closed)


def month_name(day: date) -> str:
    return f"{day:%Y-%m}"


def redact_others(text: str, nip: str) -> str:
    """``text`` with every other NIP replaced (a person's export names nobody else: a
    SHARED_DEVICE alert lists the colleagues who used the phone)."""
    return NIP_PATTERN.sub(lambda m: m.group(0) if m.group(0) == nip else "[another ASN]", text)
