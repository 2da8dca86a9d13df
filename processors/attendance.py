"""Working calendar, daily attendance, monthly TPP cuts and PP 94/2021 discipline levels.

Pure and synchronous; every number comes from an :class:`AttendancePolicy` (defaults from
DOMAIN.md). The rule table runs over numpy arrays of ASN x dates (:func:`assess`), so that a
regency's month or year is judged at once; :func:`assess_day` and :func:`tpp_month` apply the
same code to one ASN. Percentages are exact (``Decimal`` values; integers of a fixed fraction
of a percent inside the arrays) and rupiah are ``int``: the TPP cut is
``tpp_base_idr * cut_pct / 100`` rounded to whole rupiah with ROUND_HALF_UP (49_999.995 -> 50_000),
and the amount paid is the base less that cut, so cut + paid always equals the base.

A day's times are the ASN's first accepted IN and last accepted OUT (REVIEW counts, REJECTED does
not; the caller filters), both taken on the local date of the policy's time zone.
"""

from __future__ import annotations

import calendar as stdcalendar
import enum
import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cached_property
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo

import holidays
import numpy as np

# Ramadan as fixed by the Indonesian government (Kemenag sidang isbat), first to last fasting day
# inclusive. 1446 H: 1 Ramadan Sat 1 Mar 2025, Idul Fitri Mon 31 Mar 2025. 1447 H: isbat of
# 17 Feb 2026 set 1 Ramadan on Thu 19 Feb (Muhammadiyah started on 18 Feb), isbat of 19 Mar 2026
# set Idul Fitri on Sat 21 Mar. 1448 H is not decided yet: estimated from the new moons of 6 Feb
# and 8 Mar 2027 and from `holidays` (Idul Fitri 10 Mar 2027, "estimated"); replace it after the
# isbat. Reported by okezone.com and ntvnews.id for 1447 H.
DEFAULT_RAMADAN_PERIODS = (
    "2025-03-01..2025-03-30",
    "2026-02-19..2026-03-20",
    "2027-02-08..2027-03-09",
)


class ExcuseKind(enum.StrEnum):
    """A valid reason (*keterangan*) for a day. DINAS_LUAR is official duty elsewhere."""

    CUTI = "CUTI"
    SAKIT = "SAKIT"
    IZIN = "IZIN"
    DINAS_LUAR = "DINAS_LUAR"


# When excuses overlap on one date: DINAS_LUAR wins because it makes the day present; the rest
# follow DOMAIN.md's order (the choice changes no cut, every excuse zeroes the day).
_EXCUSE_PRECEDENCE = (ExcuseKind.DINAS_LUAR, ExcuseKind.CUTI, ExcuseKind.SAKIT, ExcuseKind.IZIN)


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"bad date {text!r}, expected YYYY-MM-DD") from None


def _parse_hours(text: str) -> tuple[time, time]:
    """``"07:30-16:00"`` -> (07:30, 16:00); start must be before end."""
    try:
        start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError:
        raise ValueError(f"bad working hours {text!r}, expected HH:MM-HH:MM") from None
    if start >= end:
        raise ValueError(f"working hours {text!r} end before they start")
    return start, end


def _parse_period(text: str) -> tuple[date, date]:
    """``"2026-02-19..2026-03-20"`` -> both dates, inclusive."""
    parts = text.split("..")
    if len(parts) != 2:
        raise ValueError(f"bad period {text!r}, expected YYYY-MM-DD..YYYY-MM-DD")
    first, last = (_parse_date(part) for part in parts)
    if first > last:
        raise ValueError(f"period {text!r} ends before it starts")
    return first, last


def _parse_ints(values: tuple[str, ...], name: str, count: int) -> tuple[int, ...]:
    """``count`` positive, strictly ascending integers."""
    try:
        numbers = tuple(int(str(value)) for value in values)
    except ValueError:
        raise ValueError(f"{name} must hold integers, got {values!r}") from None
    ascending = all(a < b for a, b in itertools.pairwise(numbers))
    if len(numbers) != count or not ascending or numbers[0] < 1:
        raise ValueError(f"{name} needs {count} positive ascending integers, got {values!r}")
    return numbers


def _parse_pct(value: object, name: str) -> Decimal:
    """A percentage as an exact Decimal; ``str()`` first so that 1.25 stays 1.25."""
    try:
        pct = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{name} is not a number: {value!r}") from None
    if not pct.is_finite() or pct < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return pct


def _parse_cuts(values: tuple[str, ...], name: str) -> tuple[Decimal, ...]:
    """Four bracket cuts -> a tuple indexed by bracket code, code 0 costing nothing."""
    if len(values) != 4:
        raise ValueError(f"{name} needs 4 percentages (codes 1-4), got {values!r}")
    return (Decimal(0), *(_parse_pct(value, name) for value in values))


@dataclass(frozen=True)
class AttendancePolicy:
    """Every configurable number of attendance and TPP. Only scalars, strings and tuples of
    strings, so that a generic env/TOML loader can fill it; parsed and checked on creation.

    Schedules are ``"HH:MM-HH:MM"`` in ``timezone``. ``ramadan_periods`` are inclusive
    ``"YYYY-MM-DD..YYYY-MM-DD"``. ``days_on`` / ``days_off`` (YYYY-MM-DD) win over weekends and
    holidays. ``tl_max_minutes`` are the upper bounds of TL1-TL3 (TL4 is anything later or no
    IN) and ``tl_cut_pct`` the cuts of TL1-TL4; the same for PSW. ``discipline_tk_days`` holds
    the TK days per year from which each PP 94/2021 level 1-9 applies; ``discharge_tk_streak``
    TK working days in a row also reach level 9.
    """

    timezone: str = "Asia/Jakarta"
    mon_thu: str = "07:30-16:00"
    fri: str = "07:30-16:30"
    ramadan_mon_thu: str = "08:00-15:00"
    ramadan_fri: str = "08:00-15:30"
    ramadan_periods: tuple[str, ...] = DEFAULT_RAMADAN_PERIODS
    holiday_categories: tuple[str, ...] = ("PUBLIC", "GOVERNMENT")
    holiday_language: str = "id"
    days_on: tuple[str, ...] = ()
    days_off: tuple[str, ...] = ()
    tl_max_minutes: tuple[str, ...] = ("30", "60", "90")
    tl_cut_pct: tuple[str, ...] = ("0.5", "1.0", "1.25", "1.5")
    psw_max_minutes: tuple[str, ...] = ("30", "60", "90")
    psw_cut_pct: tuple[str, ...] = ("0.5", "1.0", "1.25", "1.5")
    tk_cut_pct: float = 5.0
    cap_pct: float = 100.0
    discipline_tk_days: tuple[str, ...] = ("3", "4", "7", "11", "14", "17", "21", "25", "28")
    discharge_tk_streak: int = 10

    def __post_init__(self) -> None:
        """Parse every field once, so that a bad configuration fails when it is loaded."""
        try:
            ZoneInfo(self.timezone)
        except (KeyError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        for hours in (self.mon_thu, self.fri, self.ramadan_mon_thu, self.ramadan_fri):
            _parse_hours(hours)
        for period in self.ramadan_periods:
            _parse_period(period)
        clash = self.on_dates & self.off_dates
        if clash:
            raise ValueError(f"dates both in days_on and days_off: {sorted(clash)}")
        _ = (self.tl_limits, self.psw_limits, self.tl_cuts, self.psw_cuts, self.tk_cut)
        _ = self.discipline_limits  # each property raises on a bad value
        if not Decimal(0) < self.cap <= Decimal(100):
            raise ValueError(f"cap_pct must be in (0, 100], got {self.cap_pct!r}")
        if self.discharge_tk_streak < 1:
            raise ValueError("discharge_tk_streak must be at least 1")

    @cached_property
    def on_dates(self) -> frozenset[date]:
        return frozenset(_parse_date(day) for day in self.days_on)

    @cached_property
    def off_dates(self) -> frozenset[date]:
        return frozenset(_parse_date(day) for day in self.days_off)

    @cached_property
    def tl_limits(self) -> tuple[int, ...]:
        return _parse_ints(self.tl_max_minutes, "tl_max_minutes", 3)

    @cached_property
    def psw_limits(self) -> tuple[int, ...]:
        return _parse_ints(self.psw_max_minutes, "psw_max_minutes", 3)

    @cached_property
    def tl_cuts(self) -> tuple[Decimal, ...]:
        """Cut per TL code, index 0 (on time) to 4."""
        return _parse_cuts(self.tl_cut_pct, "tl_cut_pct")

    @cached_property
    def psw_cuts(self) -> tuple[Decimal, ...]:
        """Cut per PSW code, index 0 (stayed to the end) to 4."""
        return _parse_cuts(self.psw_cut_pct, "psw_cut_pct")

    @cached_property
    def tk_cut(self) -> Decimal:
        return _parse_pct(self.tk_cut_pct, "tk_cut_pct")

    @cached_property
    def cap(self) -> Decimal:
        return _parse_pct(self.cap_pct, "cap_pct")

    @cached_property
    def discipline_limits(self) -> tuple[int, ...]:
        return _parse_ints(self.discipline_tk_days, "discipline_tk_days", 9)


def month_dates(year: int, month: int) -> list[date]:
    """Every calendar date of the month."""
    return list(_month_dates(year, month))


@functools.cache
def _month_dates(year: int, month: int) -> tuple[date, ...]:
    first = date(year, month, 1)
    return tuple(first + timedelta(days=n) for n in range(stdcalendar.monthrange(year, month)[1]))


class WorkCalendar:
    """Which dates are working days and their hours. Order of rules: ``days_off`` and
    ``days_on`` overrides first, then Saturday/Sunday and the ID holidays of the configured
    categories (PUBLIC: national holidays, GOVERNMENT: cuti bersama) are off. A working day in a
    Ramadan period uses the Ramadan hours; Friday has its own hours, every other day (a Saturday
    made working by ``days_on`` included) the Monday-Thursday hours.
    """

    def __init__(self, policy: AttendancePolicy) -> None:
        self._policy = policy
        self._tz = ZoneInfo(policy.timezone)
        self._on = policy.on_dates
        self._off = policy.off_dates
        self._ramadan = tuple(_parse_period(period) for period in policy.ramadan_periods)
        self._regular = (_parse_hours(policy.mon_thu), _parse_hours(policy.fri))
        self._fasting = (_parse_hours(policy.ramadan_mon_thu), _parse_hours(policy.ramadan_fri))
        self._schedules: dict[date, tuple[time, time] | None] = {}
        # Years are filled in lazily by the library on first lookup.
        self._holidays = holidays.country_holidays(
            "ID",
            categories=tuple(category.lower() for category in policy.holiday_categories),
            language=policy.holiday_language,
        )

    @property
    def policy(self) -> AttendancePolicy:
        return self._policy

    @property
    def tz(self) -> ZoneInfo:
        return self._tz

    def local_date(self, moment: datetime) -> date:
        """The attendance day of an aware instant: its date in the policy's time zone."""
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"naive datetime {moment.isoformat()}: an offset is required")
        return moment.astimezone(self._tz).date()

    def holiday_name(self, day: date) -> str | None:
        """The holiday (or cuti bersama) name of ``day``, regardless of overrides."""
        return self._holidays.get(day)

    def is_ramadan(self, day: date) -> bool:
        return any(first <= day <= last for first, last in self._ramadan)

    def is_working_day(self, day: date) -> bool:
        if day in self._off:
            return False
        if day in self._on:
            return True
        return day.weekday() < 5 and day not in self._holidays

    def schedule(self, day: date) -> tuple[time, time] | None:
        """(start, end) local wall-clock hours of a working day, None on a day off."""
        if day not in self._schedules:  # a report asks once per ASN and day: remember
            hours = None
            if self.is_working_day(day):
                mon_thu, fri = self._fasting if self.is_ramadan(day) else self._regular
                hours = fri if day.weekday() == 4 else mon_thu
            self._schedules[day] = hours
        return self._schedules[day]

    def schedule_minutes(self, day: date) -> tuple[int, int] | None:
        """:meth:`schedule` as minutes of the day."""
        hours = self.schedule(day)
        return None if hours is None else (_minutes(hours[0]), _minutes(hours[1]))

    def working_days(self, year: int, month: int) -> list[date]:
        return [day for day in month_dates(year, month) if self.is_working_day(day)]


@dataclass(frozen=True)
class Excuse:
    """A valid reason covering ``date_from`` to ``date_to`` inclusive for one ASN."""

    nip: str
    date_from: date
    date_to: date
    kind: ExcuseKind

    def __post_init__(self) -> None:
        if not self.nip.strip():
            raise ValueError("excuse without a NIP")
        if not isinstance(self.kind, ExcuseKind):
            raise ValueError(f"excuse kind {self.kind!r} is not one of {_kinds()}")
        if isinstance(self.date_from, datetime) or isinstance(self.date_to, datetime):
            raise ValueError("excuse dates must be dates, not datetimes")
        if self.date_from > self.date_to:
            raise ValueError(f"excuse for {self.nip} ends before it starts")

    @classmethod
    def parse(cls, nip: str, date_from: str, date_to: str, kind: str) -> Excuse:
        """From the text of an ``excuses.csv`` row (dates YYYY-MM-DD, kind case-insensitive)."""
        try:
            excuse_kind = ExcuseKind(kind.strip().upper())
        except ValueError:
            raise ValueError(f"excuse kind {kind!r} is not one of {_kinds()}") from None
        return cls(nip.strip(), _parse_date(date_from), _parse_date(date_to), excuse_kind)

    def covers(self, day: date) -> bool:
        return self.date_from <= day <= self.date_to


def _kinds() -> str:
    return ", ".join(ExcuseKind)


def excuse_on(excuses: Iterable[Excuse], day: date) -> ExcuseKind | None:
    """The excuse of one ASN for ``day`` (pass that ASN's excuses only); overlaps resolve by
    ``_EXCUSE_PRECEDENCE``."""
    kinds = {excuse.kind for excuse in excuses if excuse.covers(day)}
    return next((kind for kind in _EXCUSE_PRECEDENCE if kind in kinds), None)


class DayRecord(NamedTuple):
    """One ASN's assessed date, enough to explain every rupiah of the month.

    ``late_min`` / ``early_min`` are measured on every working day with the matching time
    (None otherwise, or when the time is missing), even when an excuse zeroes the day.
    ``tl_code`` / ``psw_code`` are 0 (none) to 4, and both 0 on TK, excused and non-working
    days. ``present``: a working day with an accepted IN or OUT, or DINAS_LUAR.
    """

    nip: str
    date: date
    working: bool
    excuse: ExcuseKind | None
    first_in: datetime | None
    last_out: datetime | None
    late_min: int | None
    early_min: int | None
    tl_code: int
    psw_code: int
    tk: bool
    present: bool
    cut_pct: Decimal


def _minutes(at: time) -> int:
    """Wall-clock minute of the day, seconds truncated: 07:30:59 -> 07:30."""
    return at.hour * 60 + at.minute


# --- the rule table, applied to many ASN and dates at once ----------------------------------
#
# A month's TPP report for 5,000 ASN judges 155,000 days, a year's discipline report 1.8
# million: the rules run over numpy arrays (rows: ASN, columns: consecutive dates), and
# DayRecords are made only for the days someone looks at. assess_day and tpp_month below are
# the same rules for one ASN.

NO_TIME: int = np.iinfo(np.int64).min  # in a time array: no accepted IN (or OUT) that day
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_MINUTE = 60_000_000
# Excuse codes in the arrays: 0 is none; a lower code wins where excuses overlap.
_EXCUSE_CODES = {kind: code for code, kind in enumerate(_EXCUSE_PRECEDENCE, start=1)}
EXCUSE_BY_CODE: tuple[ExcuseKind | None, ...] = (None, *_EXCUSE_PRECEDENCE)


def epoch_us(moment: datetime | None) -> int:
    """An aware instant as whole microseconds since the epoch (exact); :data:`NO_TIME` for
    None."""
    if moment is None:
        return NO_TIME
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: an offset is required")
    return (moment - _EPOCH) // timedelta(microseconds=1)


def excuse_codes(nips: Sequence[str], dates: Sequence[date],
                 excuses: Iterable[Excuse]) -> np.ndarray:
    """Which excuse covers each ASN and date (:func:`excuse_on` for every cell), as codes."""
    rows = {nip: row for row, nip in enumerate(nips)}
    codes = np.zeros((len(nips), len(dates)), np.int8)
    for excuse in excuses if dates else ():
        row = rows.get(excuse.nip)
        first = max((excuse.date_from - dates[0]).days, 0)
        last = min((excuse.date_to - dates[0]).days, len(dates) - 1)
        if row is None or first > last:
            continue
        code = _EXCUSE_CODES[excuse.kind]
        span = codes[row, first:last + 1]
        codes[row, first:last + 1] = np.where((span == 0) | (span > code), code, span)
    return codes


def _local_minutes(times: np.ndarray, dates: Sequence[date], tz: ZoneInfo) -> np.ndarray:
    """The wall-clock minute (seconds truncated) of every time in ``tz``, -1 where there is
    none; each must fall on its column's date there. Converted once per distinct minute, which
    is exact because UTC offsets are whole minutes."""
    out = np.full(times.shape, -1, np.int32)
    given = times != NO_TIME
    if not given.any():
        return out
    minutes, where = np.unique(times[given] // _US_PER_MINUTE, return_inverse=True)
    local = [(_EPOCH + timedelta(minutes=int(m))).astimezone(tz) for m in minutes]
    out[given] = np.array([t.hour * 60 + t.minute for t in local], np.int32)[where]
    on = np.array([t.toordinal() for t in local])[where]
    expected = np.array([d.toordinal() for d in dates])[np.nonzero(given)[1]]
    wrong = np.flatnonzero(on != expected)
    if wrong.size:
        at = local[where[wrong[0]]]
        raise ValueError(f"{at.isoformat()} is not on attendance day "
                         f"{date.fromordinal(int(expected[wrong[0]]))}")
    return out


def _brackets(minutes: np.ndarray, limits: tuple[int, ...]) -> np.ndarray:
    """0 when not late/early, 1-3 up to each limit inclusive, 4 beyond or when missing (-1)."""
    codes = 1 + np.searchsorted(np.array(limits), minutes, side="left")
    return np.where(minutes < 0, 4, np.where(minutes == 0, 0, codes)).astype(np.int8)


def _cut_units(policy: AttendancePolicy) -> tuple[int, np.ndarray, np.ndarray, int]:
    """The cuts as exact integers of 1/scale percent: (scale, per TL code, per PSW code, TK)."""
    cuts = (*policy.tl_cuts, *policy.psw_cuts, policy.tk_cut)
    places = max(-int(pct.as_tuple().exponent) for pct in cuts)
    scale = 10 ** max(places, 0)
    tl, psw, tk = (np.array([int(pct * scale) for pct in group], np.int64)
                   for group in (policy.tl_cuts, policy.psw_cuts, (policy.tk_cut,)))
    return scale, tl, psw, int(tk[0])


@dataclass(frozen=True, eq=False)
class Attendance:
    """DOMAIN.md's rule table applied to every ASN (rows, ``nips``) and date (columns,
    consecutive ``dates``). Times are epoch microseconds (:data:`NO_TIME`: none), ``late`` and
    ``early`` are -1 where not measured, ``cut`` counts 1/``scale`` percent (exact)."""

    nips: tuple[str, ...]
    dates: tuple[date, ...]
    working: np.ndarray  # per date
    first_in: np.ndarray
    last_out: np.ndarray
    excuse: np.ndarray  # excuse codes
    late: np.ndarray
    early: np.ndarray
    tl: np.ndarray  # 0-4
    psw: np.ndarray  # 0-4
    tk: np.ndarray
    present: np.ndarray
    cut: np.ndarray
    scale: int
    tz: ZoneInfo

    def columns(self, first: date, last: date) -> slice:
        """The columns of ``first`` to ``last`` inclusive."""
        return slice((first - self.dates[0]).days, (last - self.dates[0]).days + 1)

    def days(self, row: int, columns: slice = slice(None)) -> tuple[DayRecord, ...]:
        """One ASN's dates as records, enough to explain every rupiah."""
        nip, scale = self.nips[row], Decimal(self.scale)

        def moment(us: int) -> datetime | None:
            return None if us == NO_TIME else (_EPOCH + timedelta(microseconds=us)).astimezone(
                self.tz)

        def measured(minutes: int) -> int | None:
            return None if minutes < 0 else minutes

        return tuple(
            DayRecord(nip, day, bool(working), EXCUSE_BY_CODE[excuse], moment(first_in),
                      moment(last_out), measured(late), measured(early), tl, psw, bool(tk),
                      bool(present), Decimal(cut) / scale)
            for day, working, excuse, first_in, last_out, late, early, tl, psw, tk, present, cut
            in zip(self.dates[columns], self.working[columns].tolist(),
                   self.excuse[row, columns].tolist(), self.first_in[row, columns].tolist(),
                   self.last_out[row, columns].tolist(), self.late[row, columns].tolist(),
                   self.early[row, columns].tolist(), self.tl[row, columns].tolist(),
                   self.psw[row, columns].tolist(), self.tk[row, columns].tolist(),
                   self.present[row, columns].tolist(), self.cut[row, columns].tolist(),
                   strict=True))


def assess(nips: Sequence[str], dates: Sequence[date], first_in: np.ndarray,
           last_out: np.ndarray, excuses: np.ndarray, calendar: WorkCalendar) -> Attendance:
    """Apply DOMAIN.md's rule table to every ASN and date: ``first_in`` / ``last_out`` are the
    first accepted IN and last accepted OUT (epoch microseconds, :func:`epoch_us`), ``excuses``
    the codes of :func:`excuse_codes`, all shaped (ASN, dates); ``dates`` are consecutive.

    Late minutes: the first IN truncated to the minute minus the start (07:30:59 is on time,
    07:31:00 is 1 minute late). Early minutes: the end minus the last OUT truncated to the minute,
    so an OUT at 15:59:30 counts as 15:59, 1 minute early. Truncating both ways follows
    DESIGN.md literally; it favours the ASN arriving and penalises leaving within the last minute.
    Both are measured on every working day with the matching time, even when an excuse zeroes
    the day. A working day with neither time and no excuse is TK; an excused one costs nothing;
    otherwise the TL and PSW codes cost their cuts (a missing time is code 4). Days off are
    neither measured nor cut.
    """
    policy = calendar.policy
    hours = [calendar.schedule_minutes(day) for day in dates]
    working = np.array([h is not None for h in hours], bool)
    start = np.array([h[0] if h else 0 for h in hours], np.int32)
    end = np.array([h[1] if h else 0 for h in hours], np.int32)
    in_minute = _local_minutes(first_in, dates, calendar.tz)
    out_minute = _local_minutes(last_out, dates, calendar.tz)
    late = np.where(working & (in_minute >= 0), np.maximum(in_minute - start, 0), -1)
    early = np.where(working & (out_minute >= 0), np.maximum(end - out_minute, 0), -1)
    checked = (in_minute >= 0) | (out_minute >= 0)
    excused = excuses > 0
    tk = working & ~excused & ~checked
    judged = working & ~excused & checked
    tl = np.where(judged, _brackets(late, policy.tl_limits), 0).astype(np.int8)
    psw = np.where(judged, _brackets(early, policy.psw_limits), 0).astype(np.int8)
    scale, tl_cut, psw_cut, tk_cut = _cut_units(policy)
    cut = np.where(tk, tk_cut, np.where(judged, tl_cut[tl] + psw_cut[psw], 0))
    present = working & (checked | (excuses == _EXCUSE_CODES[ExcuseKind.DINAS_LUAR]))
    return Attendance(tuple(nips), tuple(dates), working, first_in, last_out, excuses, late,
                      early, tl, psw, tk, present, cut, scale, calendar.tz)


class TppEmployee(Protocol):
    """What the TPP report needs of an employee (``employees.csv``)."""

    @property
    def nip(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def office_id(self) -> str: ...

    @property
    def tpp_base_idr(self) -> int: ...


@dataclass(frozen=True)
class TppLine:
    """One row of ``hadir report tpp``.

    Counts are over working days. ``present_days`` and ``excused_days`` may overlap (DINAS_LUAR,
    or an excused day with a check-in); ``tk_days`` overlaps neither. ``tl`` / ``psw`` count
    codes 1-4. ``cut_pct`` is the sum of the daily cuts, capped.
    """

    nip: str
    name: str
    office_id: str
    working_days: int
    present_days: int
    excused_days: int
    tk_days: int
    tl: tuple[int, int, int, int]
    psw: tuple[int, int, int, int]
    cut_pct: Decimal
    tpp_base_idr: int
    tpp_cut_idr: int
    tpp_paid_idr: int


def tpp_amounts(base_idr: int, cut_pct: Decimal) -> tuple[int, int]:
    """(cut, paid) in whole rupiah: cut = base * pct / 100, ROUND_HALF_UP; paid = base - cut."""
    if base_idr < 0:
        raise ValueError(f"negative TPP base {base_idr}")
    if not Decimal(0) <= cut_pct <= Decimal(100):
        raise ValueError(f"cut percentage {cut_pct} outside 0-100")
    cut = int((Decimal(base_idr) * cut_pct / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return cut, base_idr - cut


def tpp_lines(attendance: Attendance, employees: Sequence[TppEmployee], columns: slice,
              policy: AttendancePolicy) -> list[TppLine]:
    """Each employee's report line (row i is ``employees[i]``) over the dates of ``columns``,
    normally a month."""
    if tuple(e.nip for e in employees) != attendance.nips:
        raise ValueError("employees and attendance rows differ")
    working = attendance.working[columns]
    present = attendance.present[:, columns].sum(axis=1).tolist()
    excused = ((attendance.excuse[:, columns] > 0) & working).sum(axis=1).tolist()
    tk = attendance.tk[:, columns].sum(axis=1).tolist()
    tl, psw = ([(codes[:, columns] == code).sum(axis=1).tolist() for code in (1, 2, 3, 4)]
               for codes in (attendance.tl, attendance.psw))
    cuts = attendance.cut[:, columns].sum(axis=1).tolist()
    scale, working_days = Decimal(attendance.scale), int(working.sum())
    lines = []
    for i, employee in enumerate(employees):
        cut_pct = min(Decimal(cuts[i]) / scale, policy.cap)
        cut_idr, paid_idr = tpp_amounts(employee.tpp_base_idr, cut_pct)
        lines.append(TppLine(
            nip=employee.nip, name=employee.name, office_id=employee.office_id,
            working_days=working_days, present_days=present[i], excused_days=excused[i],
            tk_days=tk[i], tl=(tl[0][i], tl[1][i], tl[2][i], tl[3][i]),
            psw=(psw[0][i], psw[1][i], psw[2][i], psw[3][i]), cut_pct=cut_pct,
            tpp_base_idr=employee.tpp_base_idr, tpp_cut_idr=cut_idr, tpp_paid_idr=paid_idr))
    return lines


def assess_day(
    nip: str,
    day: date,
    first_in: datetime | None,
    last_out: datetime | None,
    excuse: ExcuseKind | None,
    calendar: WorkCalendar,
) -> DayRecord:
    """The rule table (:func:`assess`) for one ASN's date; the times must be aware and fall
    on ``day`` in the policy's time zone."""
    code = _EXCUSE_CODES[excuse] if excuse else 0
    one = assess((nip,), (day,), np.array([[epoch_us(first_in)]]),
                 np.array([[epoch_us(last_out)]]), np.array([[code]], np.int8), calendar)
    return one.days(0)[0]


def tpp_month(
    employee: TppEmployee,
    year: int,
    month: int,
    first_in_by_date: Mapping[date, datetime],
    last_out_by_date: Mapping[date, datetime],
    excuses: Iterable[Excuse],
    calendar: WorkCalendar,
) -> tuple[TppLine, tuple[DayRecord, ...]]:
    """The month's TPP line of one ASN and the record of every calendar date behind it.

    All working days of the month count (no start or end of employment). ``excuses`` may hold
    other ASN's excuses; only those with the employee's NIP apply.
    """
    dates = _month_dates(year, month)
    nips = (employee.nip,)
    month_of = assess(nips, dates,
                      np.array([[epoch_us(first_in_by_date.get(d)) for d in dates]]),
                      np.array([[epoch_us(last_out_by_date.get(d)) for d in dates]]),
                      excuse_codes(nips, dates, excuses), calendar)
    line, = tpp_lines(month_of, [employee], slice(None), calendar.policy)
    return line, month_of.days(0)


@dataclass(frozen=True)
class DisciplineLevel:
    """A PP 94/2021 penalty for TK days (art. 9-11); level 0 is none, 9 is discharge."""

    level: int
    code: str
    description_id: str
    description_en: str


DISCIPLINE_LEVELS = (
    DisciplineLevel(0, "NONE", "Tidak ada hukuman disiplin", "No penalty"),
    DisciplineLevel(1, "TEGURAN_LISAN", "Teguran lisan", "Verbal warning"),
    DisciplineLevel(2, "TEGURAN_TERTULIS", "Teguran tertulis", "Written warning"),
    DisciplineLevel(
        3,
        "PERNYATAAN_TIDAK_PUAS",
        "Pernyataan tidak puas secara tertulis",
        "Written statement of dissatisfaction",
    ),
    DisciplineLevel(
        4,
        "POTONGAN_TUKIN_6_BULAN",
        "Pemotongan tunjangan kinerja 25% selama 6 bulan",
        "Performance allowance cut by 25% for 6 months",
    ),
    DisciplineLevel(
        5,
        "POTONGAN_TUKIN_9_BULAN",
        "Pemotongan tunjangan kinerja 25% selama 9 bulan",
        "Performance allowance cut by 25% for 9 months",
    ),
    DisciplineLevel(
        6,
        "POTONGAN_TUKIN_12_BULAN",
        "Pemotongan tunjangan kinerja 25% selama 12 bulan",
        "Performance allowance cut by 25% for 12 months",
    ),
    DisciplineLevel(
        7,
        "PENURUNAN_JABATAN",
        "Penurunan jabatan setingkat lebih rendah selama 12 bulan",
        "Demotion by one grade for 12 months",
    ),
    DisciplineLevel(
        8,
        "PEMBEBASAN_JABATAN",
        "Pembebasan dari jabatan menjadi jabatan pelaksana selama 12 bulan",
        "Moved to a pelaksana (non-managerial) post for 12 months",
    ),
    DisciplineLevel(
        9,
        "PEMBERHENTIAN",
        "Pemberhentian dengan hormat tidak atas permintaan sendiri",
        "Honourable discharge, not at own request",
    ),
)


def discipline_level(
    tk_days_in_year: int, longest_tk_streak_working_days: int, policy: AttendancePolicy
) -> DisciplineLevel:
    """The level reached by a calendar year's cumulative TK days, or discharge for
    ``policy.discharge_tk_streak`` TK working days in a row."""
    if tk_days_in_year < 0 or longest_tk_streak_working_days < 0:
        raise ValueError("TK day counts cannot be negative")
    if longest_tk_streak_working_days >= policy.discharge_tk_streak:
        return DISCIPLINE_LEVELS[-1]
    return DISCIPLINE_LEVELS[sum(tk_days_in_year >= limit for limit in policy.discipline_limits)]


def longest_tk_streak(days: Iterable[DayRecord]) -> int:
    """Most TK days on consecutive working days: non-working days neither count nor break a
    streak; any other working day breaks it. ``days`` must cover the period without gaps."""
    ordered = sorted(days, key=lambda record: record.date)
    return int(longest_tk_streaks(np.array([[d.tk for d in ordered]], bool),
                                  np.array([d.working for d in ordered], bool))[0])


def longest_tk_streaks(tk: np.ndarray, working: np.ndarray) -> np.ndarray:
    """:func:`longest_tk_streak` of every row of ``tk`` (rows: ASN, columns: consecutive
    dates, ``working`` per date), as in :class:`Attendance`."""
    run = np.zeros(tk.shape[0], np.int32)
    longest = run.copy()
    for column in np.flatnonzero(working):
        run = np.where(tk[:, column], run + 1, 0)
        np.maximum(longest, run, out=longest)
    return longest
