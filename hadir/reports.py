"""``hadir report``: the TPP and discipline reports.

ClickHouse gives the facts (employees, excuses, and per ASN and local day the first accepted IN
and last accepted OUT, deduplicated); processors/attendance.py applies the rules, so every rupiah
is explained by one DayRecord. The results are stored back (attendance_daily, tpp_monthly,
calendar) for dashboards.
"""

from __future__ import annotations

import calendar as calmod
import gc
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from hadir.config import Settings
from processors.attendance import (
    DayRecord,
    Excuse,
    ExcuseKind,
    TppLine,
    WorkCalendar,
    discipline_level,
    longest_tk_streak,
    tpp_month,
)
from sinks.connection import connect

TPP_COLUMNS = ["nip", "name", "office_id", "working_days", "present_days", "excused_days",
               "tk_days", "tl", "psw", "cut_pct", "tpp_base_idr", "tpp_cut_idr",
               "tpp_paid_idr"]
DISCIPLINE_COLUMNS = ["nip", "name", "office_id", "tk_days", "longest_tk_streak", "level",
                      "code", "description"]

# REVIEW check-ins count as attendance until a person decides otherwise (DESIGN.md).
COUNTED = ("ACCEPTED", "REVIEW")


@dataclass(frozen=True)
class EmployeeRow:
    nip: str
    name: str
    office_id: str
    tpp_base_idr: int


@dataclass(frozen=True)
class TppResult:
    line: TppLine
    days: tuple[DayRecord, ...]

    def as_row(self) -> dict[str, Any]:
        row = dict(vars(self.line))  # a shallow copy: dataclasses.asdict deep-copies, 10x slower
        row["tl"] = list(self.line.tl)
        row["psw"] = list(self.line.psw)
        row["cut_pct"] = float(self.line.cut_pct)
        return row

    def day_rows(self) -> list[dict[str, Any]]:
        """Every date behind the line, as plain dicts: what explains each rupiah."""
        return [day._asdict() for day in self.days]


def _employees(client: Any, office: str | None) -> list[EmployeeRow]:
    sql = ("SELECT nip, name, office_id, tpp_base_idr FROM employees FINAL WHERE deleted = 0"
           + (" AND office_id = %(office)s" if office else "") + " ORDER BY office_id, nip")
    return [EmployeeRow(*r) for r in client.execute(sql, {"office": office})]


Times = dict[str, dict[date, datetime]]


def _times(client: Any, first: date, last: date, tz: tzinfo) -> tuple[Times, Times]:
    """Per NIP and local date, the first counted IN and the last counted OUT, as local times.

    One row per NIP with the dates as arrays: decoding 5,000 rows of arrays is cheaper than
    110,000 rows. ``minIf``/``maxIf`` give 0 where a date has no IN (or OUT); no check-in is
    stamped at the epoch, so 0 means none."""
    rows = client.execute(
        "SELECT nip, groupArray(day), groupArray(first_in), groupArray(last_out) FROM ("
        "SELECT nip, local_date AS day, minIf(server_time_ms, type = 'IN') AS first_in, "
        "maxIf(server_time_ms, type = 'OUT') AS last_out "
        "FROM checkins FINAL WHERE local_date >= %(first)s AND local_date <= %(last)s "
        "AND verdict IN %(counted)s GROUP BY nip, local_date) GROUP BY nip",
        {"first": first, "last": last, "counted": COUNTED})
    first_in: Times = defaultdict(dict)
    last_out: Times = defaultdict(dict)
    at = datetime.fromtimestamp
    for nip, days, ins, outs in rows:
        first_in[nip] = {day: at(ms / 1000, tz) for day, ms in zip(days, ins, strict=True) if ms}
        last_out[nip] = {day: at(ms / 1000, tz) for day, ms in zip(days, outs, strict=True)
                         if ms}
    return first_in, last_out


def _excuses(client: Any, first: date, last: date) -> dict[str, list[Excuse]]:
    out: dict[str, list[Excuse]] = defaultdict(list)
    for nip, d1, d2, kind in client.execute(
            "SELECT nip, date_from, date_to, kind FROM excuses FINAL WHERE deleted = 0 "
            "AND date_to >= %(first)s AND date_from <= %(last)s", {"first": first, "last": last}):
        out[nip].append(Excuse(nip, d1, d2, ExcuseKind(kind)))
    return out


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """A report allocates a few hundred thousand small acyclic objects (one record per ASN and
    day, their times); Python's cycle collector would scan them again and again for nothing
    (measured: a third of the monthly report's time). Reference counting still frees them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _assess(settings: Settings, first: date, last: date,
            office: str | None) -> tuple[list[EmployeeRow], dict[str, list[TppResult]]]:
    """Every employee's TPP result for every month from ``first`` (a month's first day) to the
    month of ``last``, from the check-ins and excuses of ``first`` to ``last`` inclusive."""
    cal = WorkCalendar(settings.attendance)
    client = connect(settings.infra)
    employees = _employees(client, office)
    by_nip_in, by_nip_out = _times(client, first, last, cal.tz)
    excuses = _excuses(client, first, last)
    client.disconnect()
    results: dict[str, list[TppResult]] = defaultdict(list)
    month = first
    while month <= last:
        for e in employees:
            line, days = tpp_month(e, month.year, month.month, by_nip_in[e.nip],
                                   by_nip_out[e.nip], excuses.get(e.nip, ()), cal)
            results[e.nip].append(TppResult(line, days))
        month = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return employees, results


def _day_columns(days: list[DayRecord], office_of: dict[str, str],
                 version: int) -> list[list[Any]]:
    """The attendance_daily columns of ``days`` (a month for 5,000 ASN is 155,000 rows, so
    columns are built whole, not row by row)."""
    (nips, dates, working, excuses, first_in, last_out, late, early, tl, psw, tk, present,
     cut) = (list(column) for column in zip(*days, strict=True))
    as_float = {pct: float(pct) for pct in set(cut)}  # a handful of distinct cuts

    def seconds(times: list[datetime | None]) -> list[int | None]:
        """DateTime values as epoch seconds (clickhouse-driver passes ints through)."""
        return [int(t.timestamp()) if t else None for t in times]

    return [nips, [office_of.get(nip, "") for nip in nips], dates, working,
            [kind or "" for kind in excuses], seconds(first_in), seconds(last_out),
            [m or 0 for m in late], [m or 0 for m in early], tl, psw, tk, present,
            [as_float[pct] for pct in cut], [version] * len(days)]


def _store(settings: Settings, month: date, results: list[TppResult],
           office_of: dict[str, str]) -> None:
    version = int(datetime.now(UTC).timestamp() * 1000)
    cal = WorkCalendar(settings.attendance)
    client = connect(settings.infra)
    days_in_month = [month.replace(day=d)
                     for d in range(1, calmod.monthrange(month.year, month.month)[1] + 1)]
    calendar_rows = []
    for d in days_in_month:
        sched = cal.schedule(d)
        start, end = sched if sched else (None, None)
        calendar_rows.append((d, int(sched is not None),
                              start.hour * 60 + start.minute if start else 0,
                              end.hour * 60 + end.minute if end else 0,
                              cal.holiday_name(d) or "", version))
    client.execute("INSERT INTO calendar (date, working, start_minute, end_minute, holiday, "
                   "version) VALUES", calendar_rows)

    days = [d for r in results for d in r.days]
    if days:
        client.execute("INSERT INTO attendance_daily (nip, office_id, date, working, excuse, "
                       "first_in, last_out, late_min, early_min, tl_code, psw_code, tk, present, "
                       "cut_pct, version) VALUES", _day_columns(days, office_of, version),
                       columnar=True)
    tpp_rows = [(month, r.line.nip, r.line.name, r.line.office_id, r.line.working_days,
                 r.line.present_days, r.line.excused_days, r.line.tk_days, *r.line.tl,
                 *r.line.psw, float(r.line.cut_pct), r.line.tpp_base_idr, r.line.tpp_cut_idr,
                 r.line.tpp_paid_idr, version) for r in results]
    if tpp_rows:
        client.execute("INSERT INTO tpp_monthly (month, nip, name, office_id, working_days, "
                       "present_days, excused_days, tk_days, tl1, tl2, tl3, tl4, psw1, psw2, "
                       "psw3, psw4, cut_pct, tpp_base_idr, tpp_cut_idr, tpp_paid_idr, version) "
                       "VALUES", tpp_rows)
    client.disconnect()


def tpp(settings: Settings, month: date, office: str | None = None,
        store: bool = True) -> list[TppResult]:
    """The month's TPP line per ASN (stored for dashboards unless ``store`` is False)."""
    last = month.replace(day=calmod.monthrange(month.year, month.month)[1])
    with _no_cycle_collection():
        employees, results = _assess(settings, month, last, office)
        out = [results[e.nip][0] for e in employees]
        if store:
            _store(settings, month, out, {e.nip: e.office_id for e in employees})
    return out


def discipline(settings: Settings, year: int, office: str | None = None) -> list[dict[str, Any]]:
    """TK days of the calendar year per ASN and the PP 94/2021 level reached.

    Only days Hadir has data for count: from the first month with any check-in to the last day
    with one, so months before Hadir was introduced do not read as absence."""
    client = connect(settings.infra)
    (lo, hi), = client.execute(
        "SELECT min(local_date), max(local_date) FROM checkins "
        "WHERE toYear(local_date) = %(year)s", {"year": year})
    client.disconnect()
    if lo is None or lo.year != year:
        return []
    with _no_cycle_collection():
        employees, results = _assess(settings, lo.replace(day=1), hi, office)
    rows = []
    for e in employees:
        days = [d for r in results[e.nip] for d in r.days if d.date <= hi]
        tk = sum(d.tk for d in days)
        streak = longest_tk_streak(days)
        level = discipline_level(tk, streak, settings.attendance)
        rows.append({"nip": e.nip, "name": e.name, "office_id": e.office_id, "tk_days": tk,
                     "longest_tk_streak": streak, "level": level.level, "code": level.code,
                     "description": level.description_en})
    rows.sort(key=lambda r: (-r["tk_days"], r["nip"]))
    return rows
