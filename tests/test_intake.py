"""streams/intake.py's cutting of a batch into face batches (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from processors.events import Checkin, CheckinType
from streams.intake import face_chunks


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
