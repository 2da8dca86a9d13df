"""The sink's row conversion, without services: verdicts decoded in a batch (timestamps as epoch
milliseconds) become ClickHouse columns with the right seconds and local dates."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime

import fastavro
import polars as pl
import pytest

from hadir.serde import schema_text
from sinks.clickhouse import _event_mappings, _local_date, _record_mappings, _seconds, _values
from sinks.frames import FrameDecoder

VERDICT_SCHEMA = fastavro.parse_schema(json.loads(schema_text("CheckinVerdict")))


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _local(tz: str, *stamps: str) -> list[date]:
    frame = pl.DataFrame({"t": [_ms(s) for s in stamps]})
    return frame.select(_local_date("t", tz)).to_series().to_list()


def test_local_dates_change_at_local_midnight() -> None:
    # WIB is UTC+7: local midnight is 17:00 UTC
    assert _local("Asia/Jakarta", "2026-06-01T16:59:59.999+00:00",
                  "2026-06-01T17:00:00+00:00") == [date(2026, 6, 1), date(2026, 6, 2)]


def test_local_dates_in_a_zone_with_daylight_saving() -> None:
    # Amsterdam is UTC+2 in summer, UTC+1 in winter
    assert _local("Europe/Amsterdam", "2026-07-01T21:59:00+00:00", "2026-07-01T22:00:00+00:00",
                  "2026-12-01T22:59:00+00:00", "2026-12-01T23:00:00+00:00") == [
        date(2026, 7, 1), date(2026, 7, 2), date(2026, 12, 1), date(2026, 12, 2)]


def test_verdict_becomes_a_row_with_seconds_and_local_date() -> None:
    at = datetime(2026, 6, 1, 23, 45, 30, 250000, tzinfo=UTC)  # 06:45 on 2 June in WIB
    record = {"event_id": "0b9d4f7e-8f51-4d84-9a43-93c5b3bb1c0e", "nip": "198001012005011001",
              "device_id": "d1", "office_id": "KOBA", "type": "IN", "server_time": at,
              "client_time": None, "verdict": "ACCEPTED", "reasons": ["LOW_ACCURACY"],
              "face_similarity": 0.5, "spoof_score": None, "h3_cell": "8a6526a8a6dffff",
              "distance_m": 0.0, "lat": -2.486, "lon": 106.41, "accuracy_m": 10.0,
              "decided_at": at}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, VERDICT_SCHEMA, record)
    frame = FrameDecoder(json.loads(schema_text("CheckinVerdict"))).decode([out.getvalue()])
    assert frame is not None

    mapping = next(m for m in _event_mappings("Asia/Jakarta") if m.table == "checkins")
    row = frame.select([e.alias(c) for c, e in mapping.columns.items()]).row(0, named=True)
    assert row["event_id"] == record["event_id"]
    assert row["server_time"] == 1780357530  # DateTime: epoch seconds
    assert row["server_time_ms"] == 1780357530250
    assert row["local_date"] == date(2026, 6, 2)
    assert row["client_time"] is None
    assert row["reasons"] == ["LOW_ACCURACY"]
    assert row["version"] == 1780357530250


def test_columns_become_the_python_values_clickhouse_driver_writes() -> None:
    frame = pl.DataFrame({"d": [date(2026, 6, 2), date(1999, 12, 31)],
                          "gap": [date(2026, 6, 2), None], "reasons": [["OUTSIDE_GEOFENCE"], []],
                          "n": [1, None]},
                         schema={"d": pl.Date, "gap": pl.Date, "reasons": pl.List(pl.String),
                                 "n": pl.Int64})
    dates = _values(frame["d"])
    assert dates == [date(2026, 6, 2), date(1999, 12, 31)]
    assert all(type(d) is date for d in dates)  # not numpy's datetime64
    assert _values(frame["gap"]) == [date(2026, 6, 2), None]
    assert _values(frame["reasons"]) == [["OUTSIDE_GEOFENCE"], []]
    assert _values(frame["n"]) == [1, None]


def test_times_outside_datetimes_range_become_null() -> None:
    """ClickHouse's DateTime holds 1970 to 2106; a value outside would fail every insert of
    the batch, so it is null (a required column then makes the record a dead letter)."""
    stamps = [_ms("1969-12-31T23:59:59+00:00"), 0, _ms("2106-02-07T06:28:15+00:00"),
              _ms("2106-02-07T06:28:16+00:00"), None]
    seconds = pl.DataFrame({"t": stamps}, schema={"t": pl.Int64}).select(_seconds("t"))
    assert seconds.to_series().to_list() == [None, 0, 2**32 - 1, None, None]


def test_an_excuse_that_ends_before_it_starts_is_refused() -> None:
    excuses = next(m for m in _record_mappings() if m.table == "excuses")
    value = {"nip": "198001012005011001", "date_from": "2026-06-03", "date_to": "2026-06-01",
             "kind": "CUTI"}
    with pytest.raises(ValueError, match=r"ends \(2026-06-01\) before it starts \(2026-06-03\)"):
        excuses.to_row(b"k", value, 7)
    assert excuses.to_row(b"k", {**value, "date_to": "2026-06-03"}, 7)[1:3] == (
        date(2026, 6, 3), date(2026, 6, 3))
