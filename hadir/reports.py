"""``hadir report``: the TPP and discipline reports.

ClickHouse gives the facts (employees, excuses, and per ASN and local day the first accepted IN
and last accepted OUT, deduplicated); processors/attendance.py applies the rules to all of them
at once (:func:`~processors.attendance.assess`), so every rupiah is explained by one DayRecord.
The results are stored back (attendance_daily, tpp_monthly, calendar) for dashboards.
"""

from __future__ import annotations

import calendar as calmod
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from hadir.config import Settings
from processors.attendance import (
    EXCUSE_BY_CODE,
    NO_TIME,
    Attendance,
    DayRecord,
    Excuse,
    ExcuseKind,
    TppLine,
    WorkCalendar,
    assess,
    discipline_level,
    excuse_codes,
    longest_tk_streaks,
    tpp_lines,
)
from processors.review import STANDING_SQL
from sinks.connection import connect

TPP_COLUMNS = ["nip", "name", "office_id", "working_days", "present_days", "excused_days",
               "tk_days", "tl", "psw", "cut_pct", "tpp_base_idr", "tpp_cut_idr",
               "tpp_paid_idr"]
DISCIPLINE_COLUMNS = ["nip", "name", "office_id", "tk_days", "longest_tk_streak", "level",
                      "code", "description"]

# Without a reviewer's decision, REVIEW check-ins count as attendance (DESIGN.md).
COUNTED = ("ACCEPTED", "REVIEW")


class ReportError(ValueError):
    """A report that cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class EmployeeRow:
    nip: str
    name: str
    office_id: str
    tpp_base_idr: int


@dataclass(frozen=True)
class TppResult:
    """One ASN's line, and the days behind it (made when asked for)."""

    line: TppLine
    attendance: Attendance | None  # None: a closed month's line, as it was paid
    row: int
    columns: slice

    @property
    def days(self) -> tuple[DayRecord, ...]:
        if self.attendance is None:
            raise ReportError(f"{self.line.nip}: a closed month's days are in "
                              "attendance_daily as stored when it was closed")
        return self.attendance.days(self.row, self.columns)

    def as_row(self) -> dict[str, Any]:
        row = dict(vars(self.line))  # a shallow copy: dataclasses.asdict deep-copies, 10x slower
        row["tl"] = list(self.line.tl)
        row["psw"] = list(self.line.psw)
        row["cut_pct"] = float(self.line.cut_pct)
        return row

    def day_rows(self) -> list[dict[str, Any]]:
        """Every date behind the line, as plain dicts: what explains each rupiah."""
        return [day._asdict() for day in self.days]


def _employees(client: Any, office: str | None, nip: str | None = None) -> list[EmployeeRow]:
    sql = ("SELECT nip, name, office_id, tpp_base_idr FROM employees FINAL WHERE deleted = 0"
           + (" AND office_id = %(office)s" if office else "")
           + (" AND nip = %(nip)s" if nip else "") + " ORDER BY office_id, nip")
    return [EmployeeRow(*r) for r in client.execute(sql, {"office": office, "nip": nip})]


def _times(client: Any, nips: list[str], dates: list[date],
           subset: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The first counted IN and the last counted OUT of each NIP (rows) and local date
    (columns), as epoch microseconds (NO_TIME: none); an offline check-in counts at its
    capture time, ``server_time - offline_age_ms``. Counted: the verdict counts and no
    reviewer CONFIRMed it, or a reviewer CLEARed it.

    One row per NIP with its dates (as column numbers) in arrays: decoding 5,000 rows of arrays
    is cheaper than 110,000 rows. ``minIf``/``maxIf`` give 0 where a date has no IN (or OUT);
    no check-in is stamped at the epoch, so 0 means none."""
    rows = client.execute(
        "SELECT nip, groupArray(column), groupArray(first_in), groupArray(last_out) FROM ("
        "SELECT nip, toRelativeDayNum(local_date) - toRelativeDayNum(toDate(%(first)s)) "
        "AS column, minIf(at, type = 'IN') AS first_in, maxIf(at, type = 'OUT') AS last_out "
        "FROM (SELECT event_id, nip, local_date, type, server_time_ms - offline_age_ms AS at, "
        "verdict "
        "FROM checkins FINAL WHERE local_date >= %(first)s AND local_date <= %(last)s"
        + (" AND nip IN %(nips)s" if subset else "") + ") "
        # the newest reviewer decision of each check-in (processors/review.py `counts`)
        f"ANY LEFT JOIN (SELECT event_id, {STANDING_SQL} AS decision "
        "FROM decisions FINAL GROUP BY event_id) USING event_id "
        "WHERE decision = 'CLEAR' OR (decision != 'CONFIRM' AND verdict IN %(counted)s) "
        "GROUP BY nip, local_date) GROUP BY nip",
        {"first": dates[0], "last": dates[-1], "counted": COUNTED, "nips": tuple(nips) or ("",)})
    index = {nip: row for row, nip in enumerate(nips)}
    cells: tuple[list[int], list[int]] = ([], [])  # (row, column) of each NIP and date
    ms: tuple[list[int], list[int]] = ([], [])  # first IN, last OUT
    for nip, columns, ins, outs in rows:
        row = index.get(nip)
        if row is not None:  # check-ins of someone not (or no longer) employed are not paid
            cells[0].extend([row] * len(columns))
            cells[1].extend(columns)
            ms[0].extend(ins)
            ms[1].extend(outs)
    where = (np.array(cells[0], np.intp), np.array(cells[1], np.intp))
    first_in, last_out = (np.full((len(nips), len(dates)), NO_TIME, np.int64) for _ in ms)
    for grid, values in zip((first_in, last_out), ms, strict=True):
        given = np.array(values, np.int64)
        grid[where] = np.where(given != 0, given * 1000, NO_TIME)
    return first_in, last_out


def _excuses(client: Any, first: date, last: date) -> list[Excuse]:
    return [Excuse(nip, d1, d2, ExcuseKind(kind)) for nip, d1, d2, kind in client.execute(
        "SELECT nip, date_from, date_to, kind FROM excuses FINAL WHERE deleted = 0 "
        "AND date_to >= %(first)s AND date_from <= %(last)s", {"first": first, "last": last})]


def _assess(settings: Settings, cal: WorkCalendar, first: date, last: date,
            office: str | None, nip: str | None = None) -> tuple[list[EmployeeRow], Attendance]:
    """Every employee's (or only ``nip``'s) attendance from ``first`` to ``last`` inclusive."""
    client = connect(settings.infra)
    employees = _employees(client, office, nip)
    nips = [e.nip for e in employees]
    dates = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    # one office's or one ASN's: read only their check-ins
    first_in, last_out = _times(client, nips, dates, subset=office is not None or nip is not None)
    excuses = excuse_codes(nips, dates, _excuses(client, first, last))
    client.disconnect()
    return employees, assess(nips, dates, first_in, last_out, excuses, cal)


def _day_columns(attendance: Attendance, columns: slice, office_of: dict[str, str],
                 version: int) -> list[list[Any]]:
    """The attendance_daily columns of every ASN (row by row) over ``columns``, straight from
    the arrays (a month for 5,000 ASN is 155,000 rows)."""
    rows, dates = len(attendance.nips), list(attendance.dates[columns])

    def flat(values: np.ndarray) -> np.ndarray:
        return values[:, columns].reshape(-1)

    def seconds(times: np.ndarray) -> list[int | None]:
        """DateTime values as epoch seconds (clickhouse-driver passes ints through)."""
        out = (flat(times) // 1_000_000).astype(object)
        out[flat(times) == NO_TIME] = None
        return out.tolist()

    names = np.array([kind.value if kind else "" for kind in EXCUSE_BY_CODE], object)
    return [
        np.repeat(np.array(attendance.nips, object), len(dates)).tolist(),
        [office_of.get(nip, "") for nip in attendance.nips for _ in dates],
        dates * rows,
        np.tile(attendance.working[columns], rows).astype(np.uint8).tolist(),
        names[flat(attendance.excuse)].tolist(),
        seconds(attendance.first_in),
        seconds(attendance.last_out),
        np.maximum(flat(attendance.late), 0).tolist(),
        np.maximum(flat(attendance.early), 0).tolist(),
        flat(attendance.tl).tolist(),
        flat(attendance.psw).tolist(),
        flat(attendance.tk).astype(np.uint8).tolist(),
        flat(attendance.present).astype(np.uint8).tolist(),
        (flat(attendance.cut) / attendance.scale).tolist(),
        [version] * (rows * len(dates)),
    ]


def _store(settings: Settings, cal: WorkCalendar, month: date, attendance: Attendance,
           columns: slice, results: list[TppResult], office_of: dict[str, str]) -> None:
    version = int(datetime.now(UTC).timestamp() * 1000)
    client = connect(settings.infra)
    calendar_rows = []
    for d in attendance.dates[columns]:
        hours = cal.schedule_minutes(d)
        start, end = hours or (0, 0)
        calendar_rows.append((d, int(hours is not None), start, end, cal.holiday_name(d) or "",
                              version))
    client.execute("INSERT INTO calendar (date, working, start_minute, end_minute, holiday, "
                   "version) VALUES", calendar_rows)
    if results:
        client.execute("INSERT INTO attendance_daily (nip, office_id, date, working, excuse, "
                       "first_in, last_out, late_min, early_min, tl_code, psw_code, tk, present, "
                       "cut_pct, version) VALUES",
                       _day_columns(attendance, columns, office_of, version), columnar=True)
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
        store: bool = True, today: date | None = None,
        nip: str | None = None) -> list[TppResult]:
    """The month's TPP line per ASN (stored for dashboards unless ``store`` is False). In the
    month under way only the days that are over (before ``today``, in local time) are judged:
    a day still to come is not an absence. A month before or after ``today`` is judged whole
    (a later month holds synthetic data: the tests', the benchmark's). A closed month's
    report is the one stored when it was closed (:func:`freeze`), whatever came since. With
    ``nip``, only that ASN's line (for the phone's own month), never stored."""
    closed = _closed(settings, month, office)
    if closed is not None:
        return [r for r in closed if nip is None or r.line.nip == nip]
    last = month.replace(day=calmod.monthrange(month.year, month.month)[1])
    cal = WorkCalendar(settings.attendance)
    today = today or datetime.now(cal.tz).date()
    if month <= today <= last:
        if today == month:
            raise ReportError(f"{month:%Y-%m} has no finished day yet (today is {today})")
        last = today - timedelta(days=1)
    employees, attendance = _assess(settings, cal, month, last, office, nip)
    columns = attendance.columns(month, last)
    lines = tpp_lines(attendance, employees, columns, settings.attendance)
    out = [TppResult(line, attendance, row, columns) for row, line in enumerate(lines)]
    if store and nip is None:
        _store(settings, cal, month, attendance, columns, out,
               {e.nip: e.office_id for e in employees})
    return out


_CLOSED_COLUMNS = ("nip, name, office_id, working_days, present_days, excused_days, tk_days, "
                   "tl1, tl2, tl3, tl4, psw1, psw2, psw3, psw4, cut_pct, tpp_base_idr, "
                   "tpp_cut_idr, tpp_paid_idr")


def _closed(settings: Settings, month: date, office: str | None) -> list[TppResult] | None:
    """The lines stored when ``month`` was last closed, if it is closed now."""
    client = connect(settings.infra)
    try:
        if not client.execute("SELECT 1 FROM months FINAL WHERE month = %(m)s AND closed = 1",
                              {"m": f"{month:%Y-%m}"}):
            return None
        rows = client.execute(
            f"SELECT {_CLOSED_COLUMNS} FROM tpp_closed WHERE month = %(month)s AND version = "
            "(SELECT max(version) FROM tpp_closed WHERE month = %(month)s)"
            + (" AND office_id = %(office)s" if office else "") + " ORDER BY office_id, nip",
            {"month": month, "office": office})
    finally:
        client.disconnect()
    return [TppResult(TppLine(nip, name, office_id, working, present, excused, tk,
                              (tl1, tl2, tl3, tl4), (psw1, psw2, psw3, psw4),
                              Decimal(str(cut)), base, cut_idr, paid), None, -1, slice(0))
            for (nip, name, office_id, working, present, excused, tk, tl1, tl2, tl3, tl4,
                 psw1, psw2, psw3, psw4, cut, base, cut_idr, paid) in rows]


def freeze(settings: Settings, month: date) -> list[TppResult]:
    """Store the month's report as it is now as the one that was paid (``hadir month
    close``): from then on :func:`tpp` of that month reads it."""
    lines = tpp(settings, month, store=True)
    version = int(datetime.now(UTC).timestamp() * 1000)
    client = connect(settings.infra)
    try:
        client.execute(f"INSERT INTO tpp_closed (month, {_CLOSED_COLUMNS}, version) VALUES", [
            (month, r.line.nip, r.line.name, r.line.office_id, r.line.working_days,
             r.line.present_days, r.line.excused_days, r.line.tk_days, *r.line.tl,
             *r.line.psw, float(r.line.cut_pct), r.line.tpp_base_idr, r.line.tpp_cut_idr,
             r.line.tpp_paid_idr, version) for r in lines])
    finally:
        client.disconnect()
    return lines


def day(settings: Settings, day: date, office: str | None = None
        ) -> list[tuple[EmployeeRow, DayRecord]]:
    """Every employee's (or one office's) record of one date, judged by the same rules as the
    monthly report (the dashboard's "today")."""
    employees, attendance = _assess(settings, WorkCalendar(settings.attendance), day, day,
                                    office)
    columns = attendance.columns(day, day)
    return [(e, attendance.days(row, columns)[0]) for row, e in enumerate(employees)]


def own_month(settings: Settings, nip: str, month: date) -> dict[str, Any]:
    """One ASN's month so far, as ``hadir report tpp`` computes it (the phone's ``/v1/me``):
    each day with its times and codes, the TPP line, the excuses and the requests."""
    try:
        results = tpp(settings, month, store=False, nip=nip)
    except ReportError:  # the first day of the month is not over yet
        results = []
    result = results[0] if results else None
    days = [] if result is None or result.attendance is None else [
        {**d._asdict(), "excuse": d.excuse.value if d.excuse else None,
         "cut_pct": float(d.cut_pct)} for d in result.days]
    last = month.replace(day=calmod.monthrange(month.year, month.month)[1])
    client = connect(settings.infra)
    try:
        excuses = [{"kind": kind, "date_from": d1, "date_to": d2} for d1, d2, kind in
                   client.execute("SELECT date_from, date_to, kind FROM excuses FINAL "
                                  "WHERE deleted = 0 AND nip = %(nip)s AND date_to >= %(first)s "
                                  "AND date_from <= %(last)s ORDER BY date_from",
                                  {"nip": nip, "first": month, "last": last})]
        requests = [dict(zip(("request_id", "kind", "date_from", "date_to", "status",
                              "decided_by"), r, strict=True)) for r in client.execute(
            "SELECT request_id, kind, date_from, date_to, status, decided_by "
            "FROM excuse_requests FINAL WHERE nip = %(nip)s AND date_to >= %(first)s "
            "AND date_from <= %(last)s ORDER BY date_from", {"nip": nip, "first": month,
                                                              "last": last})]
        closed = bool(client.execute("SELECT 1 FROM months FINAL WHERE month = %(m)s "
                                     "AND closed = 1", {"m": f"{month:%Y-%m}"}))
    finally:
        client.disconnect()
    return {"nip": nip, "month": f"{month:%Y-%m}", "closed": closed,
            "tpp": result.as_row() if result else None, "days": days, "excuses": excuses,
            "requests": requests}


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
    employees, attendance = _assess(settings, WorkCalendar(settings.attendance),
                                    lo.replace(day=1), hi, office)
    tk_days = attendance.tk.sum(axis=1).tolist()
    streaks = longest_tk_streaks(attendance.tk, attendance.working).tolist()
    rows = []
    for e, tk, streak in zip(employees, tk_days, streaks, strict=True):
        level = discipline_level(tk, streak, settings.attendance)
        rows.append({"nip": e.nip, "name": e.name, "office_id": e.office_id, "tk_days": tk,
                     "longest_tk_streak": streak, "level": level.level, "code": level.code,
                     "description": level.description_en,
                     "description_id": level.description_id})
    rows.sort(key=lambda r: (-r["tk_days"], r["nip"]))
    return rows
