"""Working calendar, daily rules, monthly TPP and discipline: hand-computed, exact rupiah."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.attendance import (
    DISCIPLINE_LEVELS,
    AttendancePolicy,
    DayRecord,
    Excuse,
    ExcuseKind,
    WorkCalendar,
    assess,
    assess_day,
    discipline_level,
    epoch_us,
    excuse_codes,
    excuse_on,
    longest_tk_streak,
    longest_tk_streaks,
    month_dates,
    tpp_amounts,
    tpp_lines,
    tpp_month,
)

WIB = ZoneInfo("Asia/Jakarta")
POLICY = AttendancePolicy()
CAL = WorkCalendar(POLICY)
NIP = "198501012010011001"


@dataclass(frozen=True)
class Employee:
    nip: str
    name: str
    office_id: str
    tpp_base_idr: int


def wib(day: str, hhmmss: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), time.fromisoformat(hhmmss), WIB)


def day_of(day: str, first_in: str | None, last_out: str | None, excuse=None) -> DayRecord:
    return assess_day(
        NIP,
        date.fromisoformat(day),
        wib(day, first_in) if first_in else None,
        wib(day, last_out) if last_out else None,
        excuse,
        CAL,
    )


def month(
    employee: Employee,
    year: int,
    mon: int,
    times: Mapping[str, tuple[str | None, str | None]],
    excuses: tuple[Excuse, ...] = (),
):
    first_in = {date.fromisoformat(d): wib(d, i) for d, (i, _) in times.items() if i}
    last_out = {date.fromisoformat(d): wib(d, o) for d, (_, o) in times.items() if o}
    return tpp_month(employee, year, mon, first_in, last_out, excuses, CAL)


# --- calendar -------------------------------------------------------------------------------


def test_june_2026_working_days_skip_weekends_and_holidays():
    days = CAL.working_days(2026, 6)
    assert len(days) == 20
    assert date(2026, 6, 1) not in days and date(2026, 6, 16) not in days
    assert CAL.holiday_name(date(2026, 6, 1)) == "Hari Lahir Pancasila"
    assert CAL.holiday_name(date(2026, 6, 16)) == "Tahun Baru Islam"
    assert CAL.holiday_name(date(2026, 6, 2)) is None
    assert not CAL.is_working_day(date(2026, 6, 6))  # Saturday
    assert CAL.schedule(date(2026, 6, 6)) is None
    assert CAL.schedule(date(2026, 6, 4)) == (time(7, 30), time(16, 0))
    assert CAL.schedule(date(2026, 6, 5)) == (time(7, 30), time(16, 30))


def test_ramadan_2026_hours_and_idul_fitri_cuti_bersama():
    # Kemenag set 1 Ramadan 1447 H on 19 Feb 2026.
    assert CAL.schedule(date(2026, 2, 18)) == (time(7, 30), time(16, 0))
    assert CAL.schedule(date(2026, 2, 19)) == (time(8, 0), time(15, 0))
    assert CAL.schedule(date(2026, 3, 6)) == (time(8, 0), time(15, 30))
    assert CAL.schedule(date(2026, 3, 25)) == (time(7, 30), time(16, 0))
    names = {d: CAL.holiday_name(date(2026, 3, d)) for d in (18, 19, 20, 21, 23, 24)}
    assert names == {
        18: "Cuti Bersama Hari Suci Nyepi",
        19: "Hari Suci Nyepi",
        20: "Cuti Bersama Hari Raya Idul Fitri",
        21: "Hari Raya Idul Fitri",
        23: "Cuti Bersama Hari Raya Idul Fitri",
        24: "Cuti Bersama Hari Raya Idul Fitri",
    }
    assert len(CAL.working_days(2026, 3)) == 17
    assert CAL.is_ramadan(date(2025, 3, 1)) and not CAL.is_ramadan(date(2025, 3, 31))
    assert CAL.is_ramadan(date(2027, 3, 9)) and not CAL.is_ramadan(date(2027, 2, 7))


def test_only_public_category_keeps_cuti_bersama_working():
    cal = WorkCalendar(AttendancePolicy(holiday_categories=("PUBLIC",)))
    assert cal.is_working_day(date(2026, 3, 20))
    assert not cal.is_working_day(date(2026, 3, 19))


def test_overrides_win_over_weekends_and_holidays():
    cal = WorkCalendar(
        AttendancePolicy(
            days_on=("2026-06-06", "2026-06-16", "2026-03-07"), days_off=("2026-06-03",)
        )
    )
    assert cal.schedule(date(2026, 6, 6)) == (time(7, 30), time(16, 0))  # Saturday: Mon-Thu hours
    assert cal.is_working_day(date(2026, 6, 16))
    assert cal.holiday_name(date(2026, 6, 16)) == "Tahun Baru Islam"
    assert cal.schedule(date(2026, 3, 7)) == (time(8, 0), time(15, 0))  # Ramadan Saturday
    assert not cal.is_working_day(date(2026, 6, 3))
    assert cal.holiday_name(date(2026, 6, 3)) is None
    assert len(cal.working_days(2026, 6)) == 21


@pytest.mark.parametrize(
    "change",
    [
        {"days_on": ("2026-06-03",), "days_off": ("2026-06-03",)},
        {"days_off": ("2026-13-01",)},
        {"mon_thu": "16:00-07:30"},
        {"fri": "07:30"},
        {"ramadan_periods": ("2026-03-20..2026-02-19",)},
        {"ramadan_periods": ("2026-02-19",)},
        {"tl_cut_pct": ("0.5", "1.0", "1.25")},
        {"psw_cut_pct": ("0.5", "1.0", "x", "1.5")},
        {"tl_max_minutes": ("30", "90", "60")},
        {"psw_max_minutes": ("0", "60", "90")},
        {"tk_cut_pct": -1.0},
        {"cap_pct": 0.0},
        {"cap_pct": 101.0},
        {"discipline_tk_days": ("3", "4", "7")},
        {"discharge_tk_streak": 0},
        {"timezone": "Asia/Nowhere"},
    ],
)
def test_bad_policy_fails_on_creation(change):
    with pytest.raises(ValueError):
        AttendancePolicy(**change)


# --- one day --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_in", "late", "code"),
    [
        ("07:10:00", 0, 0),
        ("07:30:59", 0, 0),
        ("07:31:00", 1, 1),
        ("08:00:00", 30, 1),
        ("08:00:59", 30, 1),
        ("08:01:00", 31, 2),
        ("08:30:00", 60, 2),
        ("08:31:00", 61, 3),
        ("09:00:00", 90, 3),
        ("09:00:59", 90, 3),
        ("09:01:00", 91, 4),
        (None, None, 4),
    ],
)
def test_tl_brackets(first_in, late, code):
    record = day_of("2026-06-02", first_in, "16:00:00")
    assert (record.late_min, record.tl_code, record.psw_code) == (late, code, 0)
    assert record.cut_pct == POLICY.tl_cuts[code]
    assert record.present and not record.tk


@pytest.mark.parametrize(
    ("day", "last_out", "early", "code"),
    [
        ("2026-06-02", "17:45:00", 0, 0),
        ("2026-06-02", "16:00:00", 0, 0),
        ("2026-06-02", "15:59:59", 1, 1),  # truncated to 15:59
        ("2026-06-02", "15:59:30", 1, 1),
        ("2026-06-02", "15:30:00", 30, 1),
        ("2026-06-02", "15:29:59", 31, 2),
        ("2026-06-02", "15:00:00", 60, 2),
        ("2026-06-02", "14:59:00", 61, 3),
        ("2026-06-02", "14:30:00", 90, 3),
        ("2026-06-02", "14:29:00", 91, 4),
        ("2026-06-02", None, None, 4),
        ("2026-06-05", "16:30:00", 0, 0),  # Friday ends 16:30
        ("2026-06-05", "16:29:30", 1, 1),
        ("2026-06-05", "16:00:00", 30, 1),
        ("2026-06-05", "15:59:00", 31, 2),
    ],
)
def test_psw_brackets(day, last_out, early, code):
    record = day_of(day, "07:15:00", last_out)
    assert (record.early_min, record.psw_code, record.tl_code) == (early, code, 0)
    assert record.cut_pct == POLICY.psw_cuts[code]


def test_tl_and_psw_add_up():
    record = day_of("2026-06-03", "08:31:00", "15:10:00")
    assert (record.tl_code, record.psw_code, record.cut_pct) == (3, 2, Decimal("2.25"))


def test_tk_replaces_tl4_and_psw4():
    record = day_of("2026-06-02", None, None)
    assert record.tk and not record.present
    assert (record.tl_code, record.psw_code, record.cut_pct) == (0, 0, Decimal("5.0"))
    assert (record.late_min, record.early_min) == (None, None)


@pytest.mark.parametrize("kind", list(ExcuseKind))
def test_every_excuse_zeroes_the_day(kind):
    record = day_of("2026-06-02", None, None, kind)
    assert not record.tk and record.cut_pct == 0 and (record.tl_code, record.psw_code) == (0, 0)
    assert record.present is (kind is ExcuseKind.DINAS_LUAR)


def test_excused_day_keeps_measured_lateness():
    record = day_of("2026-06-02", "10:00:00", "16:00:00", ExcuseKind.IZIN)
    assert (record.late_min, record.tl_code, record.cut_pct, record.present) == (150, 0, 0, True)


@pytest.mark.parametrize(("day", "first_in"), [("2026-06-06", "08:00:00"), ("2026-06-16", None)])
def test_days_off_carry_nothing(day, first_in):
    record = day_of(day, first_in, None)
    assert not record.working and not record.present and not record.tk
    assert (record.late_min, record.tl_code, record.psw_code, record.cut_pct) == (None, 0, 0, 0)


def test_ramadan_day_uses_ramadan_hours():
    assert day_of("2026-03-02", "08:00:59", "15:00:00").cut_pct == 0
    record = day_of("2026-03-03", "08:01:00", "14:59:59")
    assert (record.late_min, record.early_min, record.cut_pct) == (1, 1, Decimal("1.0"))
    assert day_of("2026-02-18", "07:45:00", "16:00:00").tl_code == 1


def test_timezone_utc_instants_are_read_in_wib():
    ok = assess_day(
        NIP,
        date(2026, 6, 2),
        datetime(2026, 6, 2, 0, 30, tzinfo=UTC),
        datetime(2026, 6, 2, 9, 0, tzinfo=UTC),
        None,
        CAL,
    )
    assert (ok.late_min, ok.early_min, ok.cut_pct) == (0, 0, 0)
    late = assess_day(
        NIP, date(2026, 6, 2), datetime(2026, 6, 2, 0, 31, tzinfo=UTC), None, None, CAL
    )
    assert (late.late_min, late.tl_code) == (1, 1)
    assert CAL.local_date(datetime(2026, 6, 1, 17, 30, tzinfo=UTC)) == date(2026, 6, 2)


def test_times_must_be_aware_and_on_the_day():
    with pytest.raises(ValueError, match="naive"):
        assess_day(NIP, date(2026, 6, 2), datetime(2026, 6, 2, 7, 30), None, None, CAL)
    with pytest.raises(ValueError, match="not on attendance day"):
        assess_day(NIP, date(2026, 6, 2), wib("2026-06-03", "07:30:00"), None, None, CAL)


# --- excuses --------------------------------------------------------------------------------


def test_excuse_parse_and_validation():
    excuse = Excuse.parse(f" {NIP} ", "2026-06-12", "2026-06-15", "cuti")
    assert excuse == Excuse(NIP, date(2026, 6, 12), date(2026, 6, 15), ExcuseKind.CUTI)
    with pytest.raises(ValueError, match="not one of"):
        Excuse.parse(NIP, "2026-06-12", "2026-06-12", "LIBUR")
    with pytest.raises(ValueError, match="ends before"):
        Excuse.parse(NIP, "2026-06-13", "2026-06-12", "SAKIT")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        Excuse.parse(NIP, "12/06/2026", "2026-06-12", "SAKIT")
    with pytest.raises(ValueError, match="NIP"):
        Excuse.parse(" ", "2026-06-12", "2026-06-12", "SAKIT")
    with pytest.raises(ValueError, match="not datetimes"):
        Excuse(NIP, datetime(2026, 6, 12), date(2026, 6, 12), ExcuseKind.IZIN)
    with pytest.raises(ValueError, match="not one of"):
        Excuse(NIP, date(2026, 6, 12), date(2026, 6, 12), "IZIN")  # type: ignore[arg-type]


def test_excuse_on_inclusive_range_and_precedence():
    excuses = [
        Excuse.parse(NIP, "2026-06-10", "2026-06-12", "CUTI"),
        Excuse.parse(NIP, "2026-06-12", "2026-06-12", "DINAS_LUAR"),
    ]
    assert excuse_on(excuses, date(2026, 6, 9)) is None
    assert excuse_on(excuses, date(2026, 6, 10)) is ExcuseKind.CUTI
    assert excuse_on(excuses, date(2026, 6, 12)) is ExcuseKind.DINAS_LUAR
    assert excuse_on(excuses, date(2026, 6, 13)) is None


# --- month ----------------------------------------------------------------------------------


def on_time(days: list[str]) -> dict[str, tuple[str | None, str | None]]:
    return {
        d: ("07:30:00", "16:30:00" if date.fromisoformat(d).weekday() == 4 else "16:00:00")
        for d in days
    }


def test_june_2026_mixed_month_exact_rupiah():
    employee = Employee(NIP, "Siti", "DISKOMINFO", 5_000_000)
    times = {
        "2026-06-02": ("07:31:00", "16:00:00"),  # TL1 0.5
        "2026-06-03": ("08:01:00", "16:05:00"),  # TL2 1.0
        "2026-06-04": ("09:00:30", "16:00:00"),  # TL3 1.25
        "2026-06-05": ("07:25:00", "16:00:00"),  # Friday, PSW1 0.5
        "2026-06-06": ("08:00:00", "12:00:00"),  # Saturday: ignored
        "2026-06-08": ("09:01:00", "16:00:00"),  # TL4 1.5
        "2026-06-09": (None, "16:10:00"),  # no IN: TL4 1.5
        "2026-06-10": ("07:20:00", None),  # no OUT: PSW4 1.5
        # 2026-06-11: nothing, TK 5.0; 06-12 CUTI, 06-15 SAKIT
        "2026-06-16": ("07:30:00", "16:00:00"),  # Tahun Baru Islam: ignored
        "2026-06-17": ("10:00:00", "16:00:00"),  # IZIN: no cut
        # 2026-06-18: DINAS_LUAR, present without a check-in
        "2026-06-19": ("07:30:59", "16:29:30"),  # Friday, PSW1 0.5
        **on_time(["2026-06-22", "2026-06-23", "2026-06-24", "2026-06-25", "2026-06-26"]),
        **on_time(["2026-06-29", "2026-06-30"]),
    }
    excuses = (
        Excuse.parse(NIP, "2026-06-12", "2026-06-12", "CUTI"),
        Excuse.parse(NIP, "2026-06-15", "2026-06-15", "SAKIT"),
        Excuse.parse(NIP, "2026-06-17", "2026-06-17", "IZIN"),
        Excuse.parse(NIP, "2026-06-18", "2026-06-18", "DINAS_LUAR"),
        Excuse.parse("199001012015012002", "2026-06-11", "2026-06-11", "CUTI"),  # someone else
    )
    line, days = month(employee, 2026, 6, times, excuses)
    assert len(days) == 30 and [d.date for d in days] == month_dates(2026, 6)
    assert line.working_days == 20
    assert line.present_days == 17
    assert line.excused_days == 4
    assert line.tk_days == 1
    assert line.tl == (1, 1, 1, 2)
    assert line.psw == (2, 0, 0, 1)
    assert line.cut_pct == Decimal("13.25")
    assert (line.tpp_base_idr, line.tpp_cut_idr, line.tpp_paid_idr) == (
        5_000_000,
        662_500,
        4_337_500,
    )
    assert (line.nip, line.name, line.office_id) == (NIP, "Siti", "DISKOMINFO")
    assert sum(d.cut_pct for d in days) == line.cut_pct


def test_absent_all_month_is_capped_at_100_percent():
    employee = Employee(NIP, "Budi", "BAPPEDA", 4_000_000)
    line, days = month(employee, 2026, 9, {})
    assert (line.working_days, line.tk_days, line.present_days) == (22, 22, 0)
    assert sum(d.cut_pct for d in days) == Decimal("110.0")
    assert line.cut_pct == Decimal(100)
    assert (line.tpp_cut_idr, line.tpp_paid_idr) == (4_000_000, 0)
    assert longest_tk_streak(days) == 22
    assert discipline_level(line.tk_days, 22, POLICY).code == "PEMBERHENTIAN"


def test_rupiah_rounding_half_up_in_a_month():
    employee = Employee(NIP, "Andi", "DINKES", 3_333_333)
    times = on_time([d.isoformat() for d in CAL.working_days(2026, 6)])
    times["2026-06-02"] = ("09:30:00", "16:00:00")  # TL4 1.5% of 3_333_333 = 49_999.995
    line, _ = month(employee, 2026, 6, times)
    assert line.cut_pct == Decimal("1.5")
    assert (line.tpp_cut_idr, line.tpp_paid_idr) == (50_000, 3_283_333)


def test_ramadan_month_keeping_ramadan_hours_after_idul_fitri():
    employee = Employee(NIP, "Rahmat", "SETDA", 6_000_000)
    times = {
        d.isoformat(): ("08:00:00", "15:30:00" if d.weekday() == 4 else "15:00:00")
        for d in CAL.working_days(2026, 3)
    }
    line, _ = month(employee, 2026, 3, times)
    # 12 Ramadan days clean; 25, 26, 27, 30, 31 March: TL1 (30 min) + PSW2 (60 min) = 1.5 each.
    assert (line.working_days, line.tl, line.psw) == (17, (5, 0, 0, 0), (0, 5, 0, 0))
    assert line.cut_pct == Decimal("7.5")
    assert (line.tpp_cut_idr, line.tpp_paid_idr) == (450_000, 5_550_000)


def test_configured_cuts_apply():
    policy = AttendancePolicy(tl_cut_pct=("0.5", "1", "1.25", "2.5"), tk_cut_pct=4.0, cap_pct=50)
    cal = WorkCalendar(policy)
    no_in = assess_day(NIP, date(2026, 6, 2), None, wib("2026-06-02", "16:00"), None, cal)
    assert no_in.cut_pct == Decimal("2.5")
    line, _ = tpp_month(Employee(NIP, "X", "Y", 1_000_000), 2026, 9, {}, {}, (), cal)
    assert (line.cut_pct, line.tpp_cut_idr) == (Decimal(50), 500_000)


@pytest.mark.parametrize(
    ("base", "pct", "cut"),
    [
        (3_333_333, "1.5", 50_000),
        (100, "0.5", 1),  # 0.5 rounds up
        (300, "0.5", 2),  # 1.5 rounds up
        (1, "0.5", 0),
        (4_444_444, "0.5", 22_222),
        (0, "100", 0),
        (7_654_321, "100", 7_654_321),
    ],
)
def test_tpp_amounts(base, pct, cut):
    assert tpp_amounts(base, Decimal(pct)) == (cut, base - cut)


@given(st.integers(0, 10**11), st.integers(0, 400))
def test_tpp_amounts_exact_and_within_half_rupiah(base, quarter_pcts):
    pct = Decimal(quarter_pcts) / 4
    cut, paid = tpp_amounts(base, pct)
    assert cut + paid == base and 0 <= cut <= base
    assert abs(Decimal(cut) - Decimal(base) * pct / 100) <= Decimal("0.5")


def test_tpp_amounts_rejects_nonsense():
    with pytest.raises(ValueError):
        tpp_amounts(-1, Decimal(1))
    with pytest.raises(ValueError):
        tpp_amounts(1, Decimal(101))


def test_many_asn_at_once_equal_one_at_a_time():
    """The report judges every ASN and date in one call; each ASN's month must come out as
    tpp_month gives it alone (rows and months kept apart, overlapping excuses resolved)."""
    rng = random.Random(7)
    employees = [Employee(f"19850101201001100{i}", f"ASN {i}", "SETDA", 2_000_000 + i * 777)
                 for i in range(4)]
    dates = [date(2026, 5, 20) + timedelta(days=n) for n in range(50)]  # into early July
    first_in: dict[str, dict[date, datetime]] = {e.nip: {} for e in employees}
    last_out: dict[str, dict[date, datetime]] = {e.nip: {} for e in employees}
    for e in employees:
        for d in dates:
            day, minute = d.isoformat(), rng.randint(10, 59)
            if rng.random() < 0.8:
                first_in[e.nip][d] = wib(day, f"0{rng.randint(6, 9)}:{minute}:30")
            if rng.random() < 0.8:
                last_out[e.nip][d] = wib(day, f"{rng.randint(14, 17)}:{minute}:00")
    second, third = employees[1].nip, employees[2].nip
    excuses = [Excuse(second, date(2026, 6, 8), date(2026, 6, 12), ExcuseKind.SAKIT),
               Excuse(second, date(2026, 6, 10), date(2026, 6, 10), ExcuseKind.DINAS_LUAR),
               Excuse(third, date(2026, 5, 28), date(2026, 6, 3), ExcuseKind.CUTI)]
    nips = [e.nip for e in employees]
    everyone = assess(nips, dates,
                      np.array([[epoch_us(first_in[n].get(d)) for d in dates] for n in nips]),
                      np.array([[epoch_us(last_out[n].get(d)) for d in dates] for n in nips]),
                      excuse_codes(nips, dates, excuses), CAL)
    june = everyone.columns(date(2026, 6, 1), date(2026, 6, 30))
    lines = tpp_lines(everyone, employees, june, POLICY)
    for row, e in enumerate(employees):
        line, days = tpp_month(e, 2026, 6, first_in[e.nip], last_out[e.nip], excuses, CAL)
        assert lines[row] == line
        assert everyone.days(row, june) == days
    assert lines[1].excused_days == 5 and lines[2].excused_days == 2  # 1 June is a holiday
    assert everyone.days(1, june)[9].excuse is ExcuseKind.DINAS_LUAR  # 10 June: DL wins
    streaks = longest_tk_streaks(everyone.tk, everyone.working)
    assert streaks.tolist() == [longest_tk_streak(everyone.days(row)) for row in range(4)]


# --- discipline -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tk", "level"),
    [
        (0, 0),
        (2, 0),
        (3, 1),
        (4, 2),
        (6, 2),
        (7, 3),
        (10, 3),
        (11, 4),
        (13, 4),
        (14, 5),
        (16, 5),
        (17, 6),
        (20, 6),
        (21, 7),
        (24, 7),
        (25, 8),
        (27, 8),
        (28, 9),
        (200, 9),
    ],
)
def test_discipline_level_boundaries(tk, level):
    assert discipline_level(tk, min(tk, 3), POLICY) == DISCIPLINE_LEVELS[level]


def test_discipline_streak_of_ten_working_days_discharges():
    assert discipline_level(9, 9, POLICY).level == 3
    assert discipline_level(10, 10, POLICY).code == "PEMBERHENTIAN"
    assert DISCIPLINE_LEVELS[4].description_id.startswith("Pemotongan tunjangan kinerja 25%")
    with pytest.raises(ValueError):
        discipline_level(-1, 0, POLICY)


def test_tk_streak_spans_weekends_and_holidays_but_not_present_days():
    start = date(2026, 6, 1)
    present = {date(2026, 6, 18): ("07:30:00", "16:00:00")}
    days = [
        day_of(d.isoformat(), *present.get(d, (None, None)))
        for d in (start + timedelta(n) for n in range(30))
    ]
    # TK 2..5, 8..12, 15, (16 holiday), 17: 11 working days; 18 present; 19..30 TK: 8 days.
    assert longest_tk_streak(reversed(days)) == 11
    assert longest_tk_streak(days[:15]) == 10  # to 15 June: discharge threshold reached
    assert discipline_level(10, longest_tk_streak(days[:15]), POLICY).level == 9
