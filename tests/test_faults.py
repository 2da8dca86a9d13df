"""Crash and outage tests (marked ``faults``; CI runs them): kill a worker, restart the broker,
stop ClickHouse, all in the middle of a load, then check that every check-in has exactly one
verdict, that bad records are dead letters, and that table state survived."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from hadir import topics, workers
from hadir.infra.clickhouse import ClickHouseServer
from hadir.infra.kafka import KafkaBroker
from streams.outbox import partition_for
from tests.pipeline_helpers import (
    FACES_DIR,
    Pipeline,
    jpeg,
    members_with_partitions,
    new_nip,
    selfie,
)

pytestmark = [pytest.mark.infra, pytest.mark.faults]
LOAD = 1500


@pytest.fixture(scope="module")
def pipe(stack) -> Iterator[Pipeline]:  # type: ignore[no-untyped-def]
    p = Pipeline(stack)
    workers.start(stack, intake=1)
    yield p
    p.close()


def _worker(stack: object, name: str) -> workers.ManagedProcess:
    return next(p for p in workers.running(stack) if p.name == name)  # type: ignore[arg-type]


def _load(pipe: Pipeline, fault: Callable[[], None], bad: int = 0,
          count: int = LOAD) -> tuple[list[str], list]:
    """Publish ``count`` check-ins (no selfies: the fault is what is tested, not faces) at
    about 300 per second with ``fault`` injected a second in, and ``bad`` malformed records
    mixed in; returns the good event ids and the positions of the bad records. What the fault
    raised (a fault that did not happen, say) is raised here: a load without its fault
    would pass as one that survived it."""
    nips = [pipe.employee(photo=None) for _ in range(20)]
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    records = [pipe.checkin(nips[k % len(nips)], at=t0 + timedelta(seconds=k))
               for k in range(count)]
    failed: list[BaseException] = []

    def inject() -> None:
        try:
            fault()
        except BaseException as exc:
            failed.append(exc)

    injector = threading.Timer(1.0, inject)
    injector.start()
    bad_positions = []
    for k, record in enumerate(records):
        pipe.producer.produce(topics.RAW.name, key=str(record["nip"]).encode(),
                              value=pipe.codecs[topics.RAW.name].encode(record))
        if bad and k % (count // bad) == 0 and len(bad_positions) < bad:
            bad_positions.append(pipe.publish(topics.RAW, "x", None,
                                              raw=b"\x00\x00\x00\x00\x01garbage"))
        pipe.producer.poll(0)
        time.sleep(1 / 300)
    pipe.producer.flush(120)
    injector.join()
    if failed:
        raise failed[0]
    return [str(r["event_id"]) for r in records], bad_positions


def _exactly_once(pipe: Pipeline, ids: list[str]) -> None:
    found = pipe.verdicts(ids, timeout=240)
    assert len(found) == len(ids), f"{len(ids) - len(found)} check-ins have no verdict"
    rows = pipe.rows("SELECT count(), uniqExact(event_id) FROM checkins FINAL "
                     "WHERE event_id IN %(ids)s", {"ids": tuple(ids)})
    assert rows == [(len(ids), len(ids))]


def _state_survives(pipe: Pipeline, restart: Callable[[], None]) -> None:
    """The person table (recent fixes) and the device table (who used a phone) come back
    after the restart."""
    nip, mate = pipe.employee(), pipe.employee(photo=None)
    t0 = datetime.now(UTC).replace(microsecond=0)
    here = pipe.checkin(nip, selfie=selfie(FACES_DIR / "img2.jpg"), at=t0)
    pipe.submit(here)
    assert pipe.verdicts([str(here["event_id"])])
    restart()
    there = pipe.checkin(nip, selfie=selfie(FACES_DIR / "img4.jpg"), kind="OUT",
                         at=t0 + timedelta(minutes=10), lat=-2.1291, lon=106.1094)
    borrowed = pipe.checkin(mate, device=str(here["device_id"]), at=t0 + timedelta(minutes=5))
    pipe.submit(there, borrowed)
    ids = [str(there["event_id"]), str(borrowed["event_id"])]
    v = pipe.verdicts(ids, timeout=180)
    assert "IMPOSSIBLE_TRAVEL" in v[ids[0]]["reasons"]
    assert "SHARED_DEVICE" in v[ids[1]]["reasons"]


@pytest.mark.parametrize(("name", "hard"), [
    ("core-0", True), ("core-0", False), ("intake-0", True), ("sink-0", True)])
def test_worker_killed_mid_load(pipe: Pipeline, stack, name: str, hard: bool) -> None:  # type: ignore[no-untyped-def]
    def fault() -> None:
        proc = _worker(stack, name)
        before = proc.pid()
        proc.kill() if hard else proc.stop()
        assert proc.pid() is None, f"{name} still runs"
        time.sleep(1)
        workers.start(stack, intake=1)  # what `hadir run`'s supervisor does
        assert _worker(stack, name).pid() not in (None, before)

    ids, _ = _load(pipe, fault)
    _exactly_once(pipe, ids)


@pytest.mark.parametrize("hard", [True, False])
def test_core_state_survives_a_restart(pipe: Pipeline, stack, hard: bool) -> None:  # type: ignore[no-untyped-def]
    def restart() -> None:
        core = _worker(stack, "core-0")
        core.kill() if hard else core.stop()
        workers.start(stack, intake=1)

    _state_survives(pipe, restart)


def test_selfie_index_survives_an_intake_restart(pipe: Pipeline, stack) -> None:  # type: ignore[no-untyped-def]
    """A restarted intake worker knows every selfie seen before (it reads the shared index's
    compacted topic): a photo sent again after a SIGKILL is still a replay."""
    first_nip, other_nip = pipe.employee(), pipe.employee()
    t0 = datetime.now(UTC).replace(microsecond=0)
    first = pipe.checkin(first_nip, selfie=jpeg(FACES_DIR / "img21.jpg"), at=t0)
    pipe.submit(first)
    assert pipe.verdicts([str(first["event_id"])])
    _worker(stack, "intake-0").kill()
    workers.start(stack, intake=1)
    again = pipe.checkin(other_nip, selfie=jpeg(FACES_DIR / "img21.jpg", 400),
                         at=t0 + timedelta(minutes=5))
    pipe.submit(again)
    v = pipe.verdicts([str(again["event_id"])], timeout=180)[str(again["event_id"])]
    assert "SELFIE_REPLAY" in v["reasons"]
    evidence = pipe.alerts(str(again["event_id"]), "SELFIE_REPLAY")["SELFIE_REPLAY"][
        "evidence"]
    assert evidence["original_event_id"] == first["event_id"]


def test_broker_restart_mid_load(pipe: Pipeline, stack) -> None:  # type: ignore[no-untyped-def]
    def fault() -> None:
        broker = KafkaBroker(stack.infra)
        broker.down()
        assert not broker.healthy(), "the broker still answers"
        time.sleep(3)
        broker.up()
        time.sleep(5)
        workers.start(stack, intake=1)  # restarts any worker that gave up on the broker

    ids, _ = _load(pipe, fault)
    _exactly_once(pipe, ids)


def test_clickhouse_outage_mid_load(pipe: Pipeline, stack) -> None:  # type: ignore[no-untyped-def]
    def fault() -> None:
        clickhouse = ClickHouseServer(stack.infra)
        clickhouse.down()
        assert not clickhouse.healthy(), "ClickHouse still answers"
        time.sleep(60)  # a minute without ClickHouse
        clickhouse.up()

    ids, _ = _load(pipe, fault)
    _exactly_once(pipe, ids)


def test_malformed_records_mid_load(pipe: Pipeline) -> None:
    ids, bad = _load(pipe, lambda: None, bad=15)
    _exactly_once(pipe, ids)
    letters = pipe.dead_letters(bad)
    assert set(letters) == set(bad)
    assert all("unknown schema id" in letter["error"] or "Avro" in letter["error"]
               for letter in letters.values())


def _until_shared(stack, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    """Wait until two intake and two core workers each own partitions of their inputs."""
    deadline = time.monotonic() + timeout
    groups = ("hadir-intake", topics.CORE_APP)
    while any(members_with_partitions(stack, g) < 2 for g in groups):
        assert time.monotonic() < deadline, "the added workers got no partitions"
        time.sleep(1)


def _one_per_partition(pipe: Pipeline, stack) -> list[str]:  # type: ignore[no-untyped-def]
    """ASN whose check-ins land on each partition of the person stage's input, one each."""
    partitions = topics.partitions(topics.FACED, stack.infra)
    by_partition: dict[int, str] = {}
    while len(by_partition) < partitions:
        nip = new_nip()
        by_partition.setdefault(partition_for(nip.encode(), partitions), nip)
    return [pipe.employee(photo=None, nip=nip) for nip in by_partition.values()]


def test_scaling_out_and_in_mid_load(pipe: Pipeline, stack) -> None:  # type: ignore[no-untyped-def]
    """``hadir run --intake 2 --core 2`` on a running pipeline, then back to one of each. The
    workers joining mid-load share out the raw and internal topics and the tables' partitions;
    the recent fixes of every person, written by the one core worker, is used by whichever
    owns it after the move (some partitions must have moved); the workers leaving mid-load
    (SIGTERM) hand their partitions back. Every check-in has exactly one verdict throughout."""
    nips = _one_per_partition(pipe, stack)
    t0 = datetime.now(UTC).replace(microsecond=0)
    here = [pipe.checkin(nip, at=t0) for nip in nips]
    pipe.submit(*here)
    assert len(pipe.verdicts([str(r["event_id"]) for r in here])) == len(nips)
    try:
        ids, _ = _load(pipe, lambda: workers.start(stack, intake=2, core=2), count=4 * LOAD)
        _exactly_once(pipe, ids)
        _until_shared(stack)
        there = [pipe.checkin(nip, kind="OUT", at=t0 + timedelta(minutes=10), lat=-2.1291,
                              lon=106.1094) for nip in nips]
        pipe.submit(*there)
        found = pipe.verdicts([str(r["event_id"]) for r in there], timeout=120)
        assert all("IMPOSSIBLE_TRAVEL" in v["reasons"] for v in found.values())
        assert len(found) == len(nips)

        def scale_back() -> None:
            _worker(stack, "intake-1").stop()
            _worker(stack, "core-1").stop()

        ids, _ = _load(pipe, scale_back)
        _exactly_once(pipe, ids)
        assert {p.name for p in workers.running(stack)} == {"intake-0", "core-0", "sink-0",
                                                            "gateway-0", "dashboard-0"}
    finally:
        for proc in workers.running(stack):
            if proc.name in ("intake-1", "core-1"):
                proc.stop()
