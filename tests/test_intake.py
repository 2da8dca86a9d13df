"""The intake stage's pure parts: cutting a batch into face batches, reading a raw check-in,
making a dead letter."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from processors.events import Checkin, CheckinType, InvalidCheckin
from streams.intake import face_chunks
from streams.records import DEAD_LETTER_VALUE_MAX, checkin_from_raw, dead_letter


def _checkin(n: int, selfie: bool) -> Checkin:
    at = datetime(2026, 11, 30, 0, 30, tzinfo=UTC)
    return Checkin(f"e{n}", f"nip{n % 7}", "dev", CheckinType.IN, at, at, -2.4, 106.4, 10.0,
                   False, selfie=b"jpeg" if selfie else None)


def _batch(pattern: str) -> list[tuple[int, Checkin, list[object]]]:
    """'s' a check-in with a selfie, '.' one without."""
    return [(n, _checkin(n, p == "s"), []) for n, p in enumerate(pattern)]


def test_a_batch_without_selfies_is_one_run() -> None:
    batch = _batch("." * 500)
    assert [len(c) for c in face_chunks(batch, 64)] == [500]


def test_runs_hold_at_most_size_selfies_and_keep_the_order() -> None:
    batch = _batch("s.ss..s.s" * 20)
    chunks = list(face_chunks(batch, 4))
    assert [item for chunk in chunks for item in chunk] == batch
    selfies = [sum(c.selfie is not None for _, c, _ in chunk) for chunk in chunks]
    assert selfies == [4] * 25


def test_check_ins_without_a_selfie_ride_along_at_the_end() -> None:
    chunks = list(face_chunks(_batch("ss..s"), 2))
    assert [[n for n, _, _ in chunk] for chunk in chunks] == [[0, 1, 2, 3], [4]]


def test_an_empty_batch_has_no_runs() -> None:
    assert list(face_chunks([], 64)) == []


def test_check_ins_the_later_stages_could_not_judge_are_refused() -> None:
    at = datetime(2026, 11, 30, 0, 30, tzinfo=UTC)
    raw = {"event_id": "0b9d4f7e-8f51-4d84-9a43-93c5b3bb1c0e", "nip": "198001012005011001",
           "device_id": "d", "type": "IN", "server_time": at, "client_time": at, "lat": -2.4,
           "lon": 106.4, "accuracy_m": 10.0, "mock_location": False, "selfie": None,
           "app_version": "1"}
    day_ms = 24 * 3600 * 1000
    assert checkin_from_raw(raw, day_ms).nip == "198001012005011001"
    assert checkin_from_raw({**raw, "offline_age_ms": day_ms}, day_ms).offline_age_ms == day_ms
    for bad, reason in (({"nip": "  "}, "nip '' is not 18 digits"),
                        ({"nip": "12345"}, "nip '12345' is not 18 digits"),
                        ({"device_id": "d" * 2_000_000}, r"device_id .* \(2,000,000 characters\)"),
                        ({"device_id": ""}, "device_id is not 1..128 printable"),
                        ({"device_id": "telepon saya"}, "device_id is not 1..128 printable"),
                        ({"app_version": "v" * 65}, "app_version is over 64"),
                        ({"selfie": b"\xff" * 1_500_001}, "selfie of 1,500,001 bytes is over"),
                        ({"offline_age_ms": day_ms + 1}, "offline_age_ms 86400001 is outside"),
                        ({"offline_age_ms": -1}, "outside 0..86400000"),
                        ({"server_time": datetime(9999, 12, 31, 23, tzinfo=UTC)},
                         "server_time 9999-12-31 is outside 2000..2100"),
                        ({"server_time": datetime(1970, 1, 1, tzinfo=UTC)}, "outside")):
        with pytest.raises(InvalidCheckin, match=reason):
            checkin_from_raw({**raw, **bad}, day_ms)


def test_a_dead_letter_too_large_for_kafka_keeps_the_values_fingerprint() -> None:
    small = dead_letter("hadir.checkins.raw", 2, 7, b"k", b"v" * 10, "bad", "intake")
    assert small["value"] == b"v" * 10 and small["error"] == "bad"
    value = b"x" * (DEAD_LETTER_VALUE_MAX + 1)
    large = dead_letter("hadir.checkins.raw", 2, 7, b"k", value, "bad", "intake")
    assert large["value"] is None
    assert large["error"] == (f"bad [value not kept: {len(value):,} bytes, sha256 "
                              f"{hashlib.sha256(value).hexdigest()}]")
    assert (large["source_topic"], large["source_partition"], large["source_offset"]) == (
        "hadir.checkins.raw", 2, 7)
