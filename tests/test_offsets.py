"""The input-offset ledger (streams/offsets.py): only finished, gap-free offsets are committed,
holes are sought back to, stalled partitions are noticed. Plain data, a fake clock."""

from __future__ import annotations

from streams.offsets import GAP_CONFIRMATIONS, REWIND_EVERY_S, STALL_S, Admit, OffsetLedger

TP = ("hadir.internal.faced", 0)
OTHER = ("hadir.internal.faced", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_in_order_records_are_processed_and_committed_once_finished() -> None:
    ledger = OffsetLedger(Clock())
    assert [ledger.admit(TP, o, start=10) for o in (10, 11, 12)] == [Admit.PROCESS] * 3
    assert ledger.committable() == {}  # read, not finished
    for o in (10, 11):
        ledger.finished(TP, o)
    assert ledger.committable() == {TP: 12}
    assert ledger.committable() == {}  # nothing new
    ledger.finished(TP, 12)
    assert ledger.committable() == {TP: 13}


def test_a_redelivered_record_is_done_already() -> None:
    ledger = OffsetLedger(Clock())
    for o in (5, 6, 7):
        assert ledger.admit(TP, o, start=5) is Admit.PROCESS
    assert ledger.admit(TP, 6, start=5) is Admit.DONE


def test_a_hole_holds_later_records_and_asks_to_seek_back() -> None:
    clock = Clock()
    ledger = OffsetLedger(clock)
    for o in (10, 11):
        assert ledger.admit(TP, o, start=10) is Admit.PROCESS
        ledger.finished(TP, o)
    assert ledger.admit(TP, 15, start=10) is Admit.HOLD  # 12-14 were dropped
    assert ledger.admit(TP, 16, start=10) is Admit.HOLD
    assert ledger.rewinds() == {TP: 12}
    assert ledger.rewinds() == {}  # not again at once
    clock.now += REWIND_EVERY_S
    assert ledger.rewinds() == {TP: 12}  # still open: again
    assert ledger.committable() == {TP: 12}  # never past the hole
    assert [ledger.admit(TP, o, start=10) for o in (12, 13, 14, 15, 16)] == \
        [Admit.PROCESS] * 5
    clock.now += REWIND_EVERY_S
    assert ledger.rewinds() == {}  # the hole is closed


def test_partitions_are_independent() -> None:
    ledger = OffsetLedger(Clock())
    assert ledger.admit(TP, 0, start=None) is Admit.PROCESS
    assert ledger.admit(OTHER, 40, start=40) is Admit.PROCESS
    assert ledger.admit(OTHER, 42, start=40) is Admit.HOLD
    assert ledger.admit(TP, 1, start=None) is Admit.PROCESS
    assert ledger.rewinds() == {OTHER: 41}


def test_first_record_below_the_committed_offset_is_done() -> None:
    ledger = OffsetLedger(Clock())
    assert ledger.admit(TP, 7, start=9) is Admit.DONE
    assert ledger.admit(TP, 10, start=9) is Admit.HOLD  # 9 is missing
    assert ledger.rewinds() == {TP: 9}


def test_forget_relearns_from_the_committed_offset() -> None:
    ledger = OffsetLedger(Clock())
    for o in (0, 1, 2):
        ledger.admit(TP, o, start=0)
        ledger.finished(TP, o)
    ledger.forget()  # a rebalance; another worker had the partition and committed 50
    assert ledger.committable() == {}
    assert ledger.admit(TP, 3, start=50) is Admit.DONE
    assert ledger.admit(TP, 50, start=50) is Admit.PROCESS


def test_a_partition_that_stops_advancing_with_records_left_is_sought_back() -> None:
    clock = Clock()
    ledger = OffsetLedger(clock)
    ledger.admit(TP, 0, start=0)
    ledger.admit(TP, 1, start=0)
    ends = {TP: 2}
    clock.now += STALL_S
    assert ledger.stalled(ends.get) == {}  # read up to the end: idle, not stalled
    ends[TP] = 9  # records 2-8 exist but never came
    assert ledger.stalled(ends.get) == {TP: 2}
    assert ledger.stalled(ends.get) == {}  # not again at once
    assert ledger.stalled(lambda tp: None) == {}  # end unknown (not assigned now)


def test_a_hole_whose_seek_back_is_lost_is_sought_back_again_by_the_stall_check() -> None:
    clock = Clock()
    ledger = OffsetLedger(clock)
    # A worker's first record comes after a hole (seen in a fault test after a restart).
    assert ledger.admit(TP, 5, start=1) is Admit.HOLD
    assert ledger.rewinds() == {TP: 1}
    # The seek was lost: nothing arrives any more, so no batch asks for rewinds() again.
    clock.now += STALL_S
    assert ledger.stalled({TP: 9}.get) == {TP: 1}


def test_an_assigned_partition_whose_records_never_come_is_sought_back() -> None:
    clock = Clock()
    ledger = OffsetLedger(clock)
    ledger.watch(TP, start=4)  # assigned; every record fetched was dropped
    ledger.watch(OTHER, start=None)  # not known yet: left to admit()
    assert ledger.stalled({TP: 4}.get) == {}
    clock.now += STALL_S
    assert ledger.stalled({TP: 4, OTHER: 3}.get) == {}  # nothing past the committed offset
    assert ledger.stalled({TP: 9, OTHER: 3}.get) == {TP: 4}
    ledger.watch(TP, start=4)  # watching again changes nothing
    assert ledger.admit(TP, 4, start=4) is Admit.PROCESS
    assert ledger.admit(OTHER, 0, start=None) is Admit.PROCESS


def test_a_never_committed_partition_starts_at_its_first_offset() -> None:
    """Its start is the log's first offset (the stages read it from the beginning): a first
    record dropped around a rebalance is a hole, or a stall when nothing follows it."""
    clock = Clock()
    ledger = OffsetLedger(clock)
    assert not ledger.knows(TP)
    ledger.watch(TP, start=0)
    assert ledger.knows(TP)
    clock.now += STALL_S
    assert ledger.stalled({TP: 1}.get) == {TP: 0}  # offset 0 never came
    other = OffsetLedger(clock)
    assert other.admit(TP, 1, start=0) is Admit.HOLD
    assert other.rewinds() == {TP: 0}
    assert other.admit(TP, 0, start=0) is Admit.PROCESS


def _seek_back_and_see(ledger: OffsetLedger, clock: Clock, offset: int) -> Admit:
    """One seek back (as the stage makes it when due), then the first record that comes."""
    clock.now += REWIND_EVERY_S
    assert ledger.rewinds() == {TP: 5}
    return ledger.admit(TP, offset, start=0)


def test_a_hole_seen_after_every_seek_back_is_taken_as_real() -> None:
    """A transactional producer's commit marker (or retention) leaves an offset no consumer is
    given: offset 5 never comes, and a ledger that waited for it stopped the partition for
    good. The same hole after GAP_CONFIRMATIONS seeks back is skipped, and said."""
    clock = Clock()
    ledger = OffsetLedger(clock)
    for o in range(5):
        assert ledger.admit(TP, o, start=0) is Admit.PROCESS
        ledger.finished(TP, o)
    assert ledger.admit(TP, 6, start=0) is Admit.HOLD
    seen = [_seek_back_and_see(ledger, clock, 6) for _ in range(GAP_CONFIRMATIONS)]
    assert seen == [Admit.HOLD] * (GAP_CONFIRMATIONS - 1) + [Admit.PROCESS]
    assert ledger.gaps() == [(TP, 5, 6)] and ledger.gaps() == []
    assert ledger.admit(TP, 7, start=0) is Admit.PROCESS
    for o in (6, 7):
        ledger.finished(TP, o)
    assert ledger.committable() == {TP: 8}


def test_records_dropped_once_are_still_waited_for() -> None:
    """faust's drops: after the seek back the missing record comes, so nothing is skipped;
    and a hole that moves (other records each time) is not taken as real either."""
    clock = Clock()
    ledger = OffsetLedger(clock)
    for o in range(5):
        ledger.admit(TP, o, start=0)
    assert ledger.admit(TP, 7, start=0) is Admit.HOLD
    assert _seek_back_and_see(ledger, clock, 7) is Admit.HOLD
    assert _seek_back_and_see(ledger, clock, 6) is Admit.HOLD  # another first record: anew
    assert _seek_back_and_see(ledger, clock, 7) is Admit.HOLD
    assert _seek_back_and_see(ledger, clock, 5) is Admit.PROCESS  # it came after all
    assert ledger.gaps() == []
    assert [ledger.admit(TP, o, start=0) for o in (6, 7)] == [Admit.PROCESS] * 2
