"""Which input offsets a stage has finished, so that only those are committed.

faust's own offset commits are switched off for the stages' input topics (``acks=False``):
around stops and rebalances faust can drop records it has already fetched, and it then counts a
jump in the offsets it reads as done ("gaps"), committing check-ins that no stage processed.
Measured in the fault tests: a worker stopped mid-load lost a run of check-ins per partition.

Here an offset becomes committable only after every offset before it, back to the committed
one, went through the stage. A record that arrives after a hole is held back and the partition
is sought back to the hole, so the missing records come again, in order, followed by the held
ones. Plain bookkeeping, no Kafka: the stage loop (streams/stage.py) feeds it.

Some holes are real: a transactional producer's commit markers take offsets no consumer is
given, and records deleted by retention leave the committed offset below the log's start.
Such a hole is seen again after every seek back, starting at the same record; after
GAP_CONFIRMATIONS seeks back in a row it is taken as records that do not exist, and reading
goes on after it (:meth:`OffsetLedger.gaps` tells the stage, which logs it). Records faust
dropped come back after the first seek.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Hashable

REWIND_EVERY_S = 2.0  # while a hole stays open, seek back to it at most this often
STALL_S = 5.0  # a partition with records left that has not advanced for this long is sought back
GAP_CONFIRMATIONS = 3  # seeks back that found the same hole before it is taken as real


class Admit(enum.Enum):
    PROCESS = "process"  # the next offset of its partition: process it
    DONE = "done"  # processed before (a re-delivery): skip it
    HOLD = "hold"  # after a hole: skip it now, it comes again after the seek back


class OffsetLedger:
    """Per input partition, the first offset not read yet (to find holes) and the first offset
    not finished yet (what may be committed)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._next: dict[Hashable, int] = {}
        self._done: dict[Hashable, int] = {}
        self._holes: dict[Hashable, float] = {}  # partition -> when it was last sought back
        self._advanced: dict[Hashable, float] = {}  # partition -> when it last advanced
        self._changed: set[Hashable] = set()
        self._sought: set[Hashable] = set()  # sought back; the next record says what came
        self._seen_after_seek: dict[Hashable, tuple[int, int, int]] = {}  # (hole, first, n)
        self._gaps: list[tuple[Hashable, int, int]] = []
        self._clock = clock

    def forget(self) -> None:
        """After a rebalance: positions are learned again from the committed offsets."""
        self._next.clear()
        self._done.clear()
        self._holes.clear()
        self._advanced.clear()
        self._changed.clear()
        self._sought.clear()
        self._seen_after_seek.clear()

    def knows(self, tp: Hashable) -> bool:
        """Whether the partition's position is known (seen or watched since the last forget)."""
        return tp in self._next

    def admit(self, tp: Hashable, offset: int, start: int | None) -> Admit:
        """Decide one record. ``start`` is where reading the partition starts: its committed
        offset or, for a partition the group never committed, its first offset (None: not
        known, the first record sets it); it is used only the first time a partition is seen."""
        expected = self._next.get(tp, start)
        if expected is not None and offset > expected and self._real_gap(tp, expected, offset):
            self._gaps.append((tp, expected, offset))
            expected = offset
        if expected is None or offset == expected:
            self._next[tp] = offset + 1
            self._advanced[tp] = self._clock()
            self._holes.pop(tp, None)
            self._seen_after_seek.pop(tp, None)
            self._sought.discard(tp)
            return Admit.PROCESS
        if offset < expected:
            return Admit.DONE
        self._next[tp] = expected
        self._holes.setdefault(tp, -REWIND_EVERY_S)
        # Watched by stalled() too: a seek back can be lost (faust seeks on its own while it
        # starts or rebalances), and then no record comes to trigger the next one.
        self._advanced.setdefault(tp, self._clock())
        return Admit.HOLD

    def _real_gap(self, tp: Hashable, hole: int, first: int) -> bool:
        """Whether ``first``, the first record after a seek back to ``hole``, is what came
        after that same hole the last GAP_CONFIRMATIONS - 1 times too."""
        if tp not in self._sought:
            return False
        self._sought.discard(tp)
        last_hole, last_first, times = self._seen_after_seek.get(tp, (hole, first, 0))
        times = times + 1 if (last_hole, last_first) == (hole, first) else 1
        self._seen_after_seek[tp] = (hole, first, times)
        return times >= GAP_CONFIRMATIONS

    def gaps(self) -> list[tuple[Hashable, int, int]]:
        """Holes taken as real since the last call: (partition, first missing, next record)."""
        out, self._gaps = self._gaps, []
        return out

    def watch(self, tp: Hashable, start: int | None) -> None:
        """A partition assigned to the stage, watched by :meth:`stalled` from now on even if
        none of its records ever arrives: faust can drop every record it fetched around a
        rebalance, and when nothing comes after them no hole reveals the loss (seen in the
        fault tests once the stages passed few, batched records; and for a partition never
        committed, whose first record was dropped while a restarted worker joined). ``start``
        as for :meth:`admit`; while it is None the partition is left to :meth:`admit`."""
        if tp not in self._next and start is not None:
            self._next[tp] = start
            self._advanced[tp] = self._clock()

    def rewinds(self) -> dict[Hashable, int]:
        """Partitions to seek back, to the first offset of their hole: once when the hole is
        found, then again every REWIND_EVERY_S while it stays open."""
        now = self._clock()
        due = {}
        for tp, last in self._holes.items():
            if now - last >= REWIND_EVERY_S:
                self._holes[tp] = now
                self._sought.add(tp)
                due[tp] = self._next[tp]
        return due

    def stalled(self, end: Callable[[Hashable], int | None]) -> dict[Hashable, int]:
        """Partitions with records before ``end(tp)`` (the log end) that have not advanced
        for STALL_S: records dropped with nothing after them to reveal the hole. Seek them
        back to their first unprocessed offset (at most every STALL_S)."""
        now = self._clock()
        due = {}
        for tp, offset in self._next.items():
            last = end(tp)
            if last is not None and last > offset and now - self._advanced.get(tp, now) >= STALL_S:
                self._advanced[tp] = now
                self._sought.add(tp)
                due[tp] = offset
        return due

    def finished(self, tp: Hashable, offset: int) -> None:
        """The stage is done with a record it was told to PROCESS (outputs and state written)."""
        if offset >= self._done.get(tp, 0):
            self._done[tp] = offset + 1
            self._changed.add(tp)

    def committable(self) -> dict[Hashable, int]:
        """Offsets to commit for the partitions finished further since the last call."""
        out = {tp: self._done[tp] for tp in self._changed}
        self._changed.clear()
        return out
