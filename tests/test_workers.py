"""The supervisor's restart pauses (hadir/workers.py ``Restarts``): plain data, a fake clock."""

from __future__ import annotations

from hadir.workers import CRASH_LOOP_S, MAX_PAUSE_S, Restarts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _crash(restarts: Restarts, clock: Clock, name: str = "core-0") -> float | None:
    """The worker runs 2 s, exits, and is seen down until its restart is due."""
    clock.now += 2
    pause = restarts.exited(name)
    assert restarts.exited(name) is None  # seen down again: already counted
    while not restarts.due(name):
        clock.now += 1
    restarts.started(name)
    return pause


def test_a_crash_loop_pauses_longer_each_time_up_to_the_limit() -> None:
    clock = Clock()
    restarts = Restarts(clock)
    restarts.started("core-0")
    pauses = [_crash(restarts, clock) for _ in range(9)]
    assert pauses == [1, 2, 4, 8, 16, 32, MAX_PAUSE_S, MAX_PAUSE_S, MAX_PAUSE_S]


def test_after_a_normal_run_the_restart_is_immediate_and_a_new_loop_starts_at_one() -> None:
    clock = Clock()
    restarts = Restarts(clock)
    restarts.started("core-0")
    assert [_crash(restarts, clock) for _ in range(3)] == [1, 2, 4]
    clock.now += CRASH_LOOP_S + 40  # ran normally for a while
    assert restarts.exited("core-0") == 0 and restarts.due("core-0")
    restarts.started("core-0")
    assert [_crash(restarts, clock) for _ in range(2)] == [1, 2]  # crashing again: anew


def test_workers_are_paused_apart() -> None:
    clock = Clock()
    restarts = Restarts(clock)
    for name in ("core-0", "sink-0"):
        restarts.started(name)
    assert [_crash(restarts, clock, "core-0") for _ in range(3)] == [1, 2, 4]
    assert _crash(restarts, clock, "sink-0") == 1
