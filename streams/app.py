"""The faust apps: topics, tables and agents that wire the processors together.

Two apps, so the expensive face stage scales apart from the rest (README: "Topology")::

    hadir.checkins.raw (key NIP) --[intake: decode, GPS sanity, face]--> ...faced.batches
    hadir.internal.faced.batches (by NIP) --[person: geofence, travel, skew]--> ...bydevice.batches
    hadir.internal.bydevice.batches (by device) --[device: shared device, verdict]--> verdicts,
        alerts
    anything that cannot be processed --> hadir.checkins.dlq

The internal topics are batched (``hadir.topics.Topic.batched``): a record holds the check-ins
a stage batch sends to one partition, so faust handles one record per batch and partition.

Each agent takes a batch of events, computes every output, waits until Kafka has acknowledged
the outputs, and only then writes its table: after a crash a re-delivered event is recomputed
from the same state (same output), and a duplicate event id is dropped only once its output is
known to be out. Input offsets are committed after the batch (at least once, see
:func:`input_batches`); the ClickHouse sink is idempotent on event_id, so nothing is counted
twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import faust
from aiokafka.errors import IllegalStateError
from faust.serializers.codecs import dumps

from hadir import topics
from hadir.config import Settings
from hadir.serde import AvroCodec, Registry, SerdeError
from processors.attendance import Excuse, ExcuseKind
from processors.events import InvalidCheckin
from processors.fraud import FraudPolicy
from processors.geo import GeofenceError, Geofences, office_from_feature
from streams.core import Reference, device_step, person_step, seen
from streams.offsets import Admit, OffsetLedger
from streams.outbox import Outbox, partition_for
from streams.records import dead_letter, invalid_input, readable
from streams.reference import ReferenceFollower

log = logging.getLogger("hadir.streams")

BATCH = 500
BATCH_WAIT_S = 0.02
COMMIT_EVERY_S = 0.5


def new_app(name: str, settings: Settings) -> faust.App:
    return faust.App(
        name,
        broker=f"kafka://{settings.infra.bootstrap}",
        store="memory://",  # tables are rebuilt from their changelog topics at start
        web_enabled=False,
        topic_replication_factor=1,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,  # streams/outbox.py fills whole batches
        stream_wait_empty=False,
        table_standby_replicas=0,
        datadir=str(settings.infra.home_path / "workers" / name),
    )


def new_outbox(app: faust.App) -> Outbox:
    """A stage's outbox, sending through the app's own producer (started with the app)."""
    return Outbox(lambda: app.producer._ensure_producer())


def raw_topic(app: faust.App, topic: topics.Topic, stage_input: bool = False) -> Any:
    """Values stay bytes in faust: Hadir's own codecs decode them, so a bad record becomes a
    dead letter instead of a crashed agent. A stage's input has faust's acknowledgements and
    commits switched off: :func:`input_batches` commits it (streams/offsets.py says why)."""
    return app.topic(topic.name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", acks=not stage_input)


class DeadLetters:
    """The one dead-letter writer of every stage. A check-in whose event id and NIP can be
    read also gets its verdict, REJECTED with INVALID_INPUT, and the alert: the ASN sees why
    on the phone and can appeal, instead of a silent TK day."""

    def __init__(self, registry: Registry, stage: str, policy: FraudPolicy) -> None:
        self.codec = AvroCodec(topics.DLQ, registry)
        self.verdicts = AvroCodec(topics.VERDICTS, registry)
        self.alerts = AvroCodec(topics.ALERTS, registry)
        self.stage = stage
        self.policy = policy

    def add(self, outbox: Outbox, event: Any, error: str,
            record: dict[str, Any] | None = None) -> None:
        """The record of ``event``, which failed; ``record``: the check-in as far as it
        could be decoded."""
        m = event.message
        self._add(outbox, m.topic, m.partition, m.offset, m.key, m.value, error, record)

    def add_checkin(self, outbox: Outbox, event: Any, codec: AvroCodec, n: int,
                    error: str) -> None:
        """Check-in ``n`` of a batched record, which failed alone: the dead letter holds that
        check-in as the stage received it (not the whole batch, whose other check-ins have
        their verdicts) and names where it entered Hadir, its raw-topic position; the batch
        record's own position is added to the error."""
        m = event.message
        where = f"{m.topic}[{m.partition}]@{m.offset}"
        try:
            original = codec.decode(m.value)["checkins"][n]  # before the step changed it
            value = codec.join([codec.encode_item(original)])
            source = _RAW_POSITION.fullmatch(original.get("source_offset") or "")
        except (SerdeError, KeyError, IndexError):
            self.add(outbox, event, error)
            return
        if source is None:
            self._add(outbox, m.topic, m.partition, m.offset, m.key, value, error, original)
            return
        self._add(outbox, source[1], int(source[2]), int(source[3]), m.key, value,
                  f"{error} (in {where})", original)

    def _add(self, outbox: Outbox, topic: str, partition: int, offset: int, key: bytes | None,
             value: bytes | None, error: str, record: dict[str, Any] | None) -> None:
        log.warning("dead letter %s[%d]@%d: %s", topic, partition, offset, error)
        letter = dead_letter(topic, partition, offset, key, value, error, self.stage,
                             readable(record))
        outbox.add(topics.DLQ.name, None, self.codec.encode(letter))
        decided = invalid_input(record, error, self.policy, datetime.now(UTC))
        if decided is not None:
            verdict, alert = decided
            outbox.add(topics.VERDICTS.name, verdict["nip"].encode(),
                       self.verdicts.encode(verdict))
            outbox.add(topics.ALERTS.name, alert["nip"].encode(), self.alerts.encode(alert))


# A check-in's source_offset as the intake wrote it: topic[partition]@offset.
_RAW_POSITION = re.compile(r"(.+)\[(\d+)\]@(\d+)")


async def crash_only(run: Awaitable[None], what: str) -> None:
    """A stage that fails unexpectedly ends its worker process instead of leaving a live worker
    with a dead agent: `hadir run` (or the orchestrator) restarts it, and at-least-once delivery
    with idempotent outputs makes the restart lose and double nothing."""
    try:
        await run
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s crashed; exiting so that the worker is restarted", what)
        os._exit(70)


async def input_batches(app: faust.App, stream: Any,
                        size: int = BATCH) -> AsyncIterator[list[Any]]:
    """Batches of at most ``size`` events of a stage's input, each event once and, per
    partition, in offset order. A batch is finished when the caller asks for the next one;
    finished offsets are committed every COMMIT_EVERY_S (streams/offsets.py: why not by
    faust). A crash or a stop re-delivers what was not committed; the stages are idempotent."""
    consumer = app.consumer
    ledger = OffsetLedger()
    generation = app.consumer_generation_id
    committer = asyncio.create_task(_commit_every(app, ledger, set(stream.channel.topics)))
    try:
        async for events in stream.noack_take(size, within=BATCH_WAIT_S):
            if app.consumer_generation_id != generation:  # a rebalance: positions may change
                generation = app.consumer_generation_id
                ledger.forget()
            starts = await _starts(app, ledger, {e.message.tp for e in events})
            batch = [e for e in events
                     if ledger.admit(e.message.tp, e.message.offset, starts[e.message.tp])
                     is Admit.PROCESS]
            for tp, first, after in ledger.gaps():
                log.warning("%s[%d]: offsets %d..%d hold no records (transaction markers, or "
                            "deleted by retention); reading on from %d", tp.topic,
                            tp.partition, first, after - 1, after)
            await _seek_back(consumer, ledger.rewinds(), "a hole in the offsets")
            if not batch:
                continue
            yield batch
            if app.consumer_generation_id == generation:
                for event in batch:
                    ledger.finished(event.message.tp, event.message.offset)
    finally:
        committer.cancel()


async def _starts(app: faust.App, ledger: OffsetLedger, tps: Iterable[Any]) -> dict[Any, int]:
    """Where reading each partition starts, where it is known: its committed offset, or for a
    partition the group never committed its first offset (the stages read such a partition
    from the beginning). faust's cache of committed offsets can be empty for a while around a
    rebalance, so a partition missing from it, and not known to the ledger yet, is looked up
    on the broker (once: the ledger knows it from then on)."""
    starts = {tp: app.consumer._committed_offset.get(tp) for tp in tps}
    fresh = [tp for tp, start in starts.items() if start is None and not ledger.knows(tp)]
    if fresh:
        thread = app.consumer._thread
        consumer = thread._ensure_consumer()
        committed = {tp: await thread.call_thread(consumer.committed, tp) for tp in fresh}
        starts.update({tp: c for tp, c in committed.items() if c is not None})
        never = [tp for tp, c in committed.items() if c is None]
        if never:
            starts.update(await app.consumer.earliest_offsets(*never))
    return starts


async def _commit_every(app: faust.App, ledger: OffsetLedger, inputs: set[str]) -> None:
    """Commit the finished offsets, once what the stage wrote (outputs, table changelogs) is on
    Kafka; seek back partitions of the stage's ``inputs`` that stalled with records left.
    (``_commit_offsets`` is faust's own commit step, used directly because faust's
    acknowledgement bookkeeping is what lost records.)"""
    while True:
        await asyncio.sleep(COMMIT_EVERY_S)
        try:
            assigned = [tp for tp in app.consumer.assignment() if tp.topic in inputs]
            for tp, start in (await _starts(app, ledger, assigned)).items():
                ledger.watch(tp, start)
            offsets = ledger.committable()
            if offsets:
                await app.producer.flush()
                await app.consumer._commit_offsets(offsets)
            await _seek_back(app.consumer, ledger.stalled(lambda tp: _log_end(app, tp)),
                             "a stalled partition")
        except Exception:  # a rebalance in between: the next round (or owner) commits
            log.warning("offset commit skipped", exc_info=True)


def _log_end(app: faust.App, tp: Any) -> int | None:
    """The partition's end as last seen by the consumer (None if it is not assigned now)."""
    try:
        return int(app.consumer.highwater(tp))
    except Exception:
        return None


async def _seek_back(consumer: Any, positions: dict[Any, int], why: str) -> None:
    """Seek on the consumer's own thread: aiokafka's fetcher is not thread-safe, and faust's
    ``Consumer.seek`` calls it from this one, where it raced with a fetch in progress (a
    KeyError in ``fetched_records`` ended the worker). The read offset is then set as faust's
    ``seek`` sets it."""
    for tp, offset in positions.items():
        log.warning("%s[%d]: %s; reading again from offset %d", tp.topic, tp.partition, why,
                    offset)
        try:
            await consumer._thread.call_thread(consumer._thread.seek, tp, offset)
        except IllegalStateError:  # revoked meanwhile: its new owner reads from the commit
            continue
        consumer._read_offset[tp] = offset if offset else None


class KeyPartitionedTable(faust.Table):  # type: ignore[misc]
    """A table whose changelog partition is the key's partition in the input topic.

    Keys are the raw key bytes of the input (key_type=bytes, used both when writing the
    changelog and when recovering from it); values are JSON. The partition is computed here
    with the producers' partitioner (murmur2, as aiokafka and the Java client), because faust's
    own choice is either the current event's partition (wrong for a batch mixing partitions) or
    the producer's, which fails while a new changelog topic is not in its metadata yet."""

    def partition_for_key(self, key: Any) -> int:
        return partition_for(key, int(self.partitions))

    def write(self, outbox: Outbox, key: bytes, value: Any) -> None:
        """``table[key] = value``, with the changelog record added to ``outbox`` (sent with
        the rest of the batch) instead of sent on its own."""
        self.data[key] = value
        outbox.add(self.changelog_topic.get_topic_name(), key,
                   dumps(self.value_serializer, value), self.partition_for_key(key))

    @classmethod
    def create(cls, app: faust.App, changelog: topics.Changelog,
               settings: Settings) -> KeyPartitionedTable:
        table = cls(app, name=changelog.table, default=None, key_type=bytes,
                    partitions=topics.partitions(changelog.like, settings.infra),
                    beacon=app.tables.beacon)
        app.tables.add(table)
        return table


# A stage's step: given a check-in and its key's state, it adds its outputs to the outbox
# (once nothing can fail any more) and returns the new state.
Step = Callable[[dict[str, Any], Any, Outbox], Any]
# Run once per batch before its steps, with every check-in of the batch.
Prepare = Callable[[list[dict[str, Any]]], Awaitable[None]]


async def keyed_batches(app: faust.App, stream: Any, table: KeyPartitionedTable,
                        codec: AvroCodec, dlq: DeadLetters, key_field: str, step: Step,
                        prepare: Prepare | None = None) -> None:
    """The loop of a stateful stage: for each batch, decode each record's check-ins, let
    ``prepare`` see them all, drop event ids the key's state has seen, run ``step`` (outputs,
    new state), wait until Kafka has every output, then write the states and wait for their
    changelog; only then is the batch finished. A state changed earlier in the batch is seen
    by later events of the same key."""
    outbox = new_outbox(app)
    async for events in input_batches(app, stream):
        decoded = []
        for event in events:
            try:
                decoded.append((event, codec.decode(event.value)["checkins"]))
            except (SerdeError, KeyError) as exc:
                dlq.add(outbox, event, f"{type(exc).__name__}: {exc}")
        if prepare is not None:
            await prepare([record for _, checkins in decoded for record in checkins])
        overlay: dict[bytes, Any] = {}
        for event, checkins in decoded:
            for n, record in enumerate(checkins, 1):
                try:
                    key = record[key_field].encode()
                    state = overlay[key] if key in overlay else table.get(key)
                    if seen(state, record["event_id"]):
                        continue
                    overlay[key] = step(record, state, outbox)
                except (SerdeError, InvalidCheckin, KeyError, ValueError, OverflowError) as exc:
                    which = f"check-in {n} of {len(checkins)} ({record.get('event_id')})"
                    dlq.add_checkin(outbox, event, codec, n - 1,
                                    f"{which}: {type(exc).__name__}: {exc}")
        await outbox.send()
        for key, state in overlay.items():
            table.write(outbox, key, state)
        await outbox.send()


def build_core_app(settings: Settings) -> faust.App:
    """The person and device stages, with their tables and the reference data they follow."""
    app = new_app(topics.CORE_APP, settings)
    registry = Registry(settings.infra.registry)
    # In-progress records keep their times as epoch milliseconds (streams/records.py).
    faced_codec = AvroCodec(topics.FACED, registry, logical_types=False)
    forward = AvroCodec(topics.BY_DEVICE, registry, logical_types=False)
    device_partitions = topics.partitions(topics.BY_DEVICE, settings.infra)
    verdict_codec = AvroCodec(topics.VERDICTS, registry)
    alert_codec = AvroCodec(topics.ALERTS, registry)
    dlq = DeadLetters(registry, "core", settings.fraud)
    faced = raw_topic(app, topics.FACED, stage_input=True)
    by_device = raw_topic(app, topics.BY_DEVICE, stage_input=True)
    tz = ZoneInfo(settings.attendance.timezone)

    # Keys are the raw key bytes and the changelog is partitioned like the input topic, so each
    # worker restores exactly the state of the partitions it owns.
    person_state = KeyPartitionedTable.create(app, topics.PERSON_STATE, settings)
    device_state = KeyPartitionedTable.create(app, topics.DEVICE_STATE, settings)

    ref = Reference(Geofences(policy=settings.geo))
    follower = ReferenceFollower(settings.infra.bootstrap, {
        t.name: AvroCodec(t, registry) for t in (topics.EMPLOYEES, topics.OFFICES, topics.EXCUSES)
    }, {
        topics.EMPLOYEES.name: lambda k, v: _employee(ref, k, v),
        topics.OFFICES.name: lambda k, v: _office(ref, k, v),
        topics.EXCUSES.name: lambda k, v: _excuse(ref, k, v),
    })

    @app.task
    async def follow_reference() -> None:
        await follower.run()

    def needs_catch_up(record: dict[str, Any]) -> bool:
        employee = ref.employees.get(record["nip"])
        return employee is None or employee["office_id"] not in ref.geofences

    async def catch_up_once(records: list[dict[str, Any]]) -> None:
        """One catch-up covers the batch: its check-ins were all published before it was
        fetched. (One per check-in let a burst of unknown NIPs stall everyone's.)"""
        if any(needs_catch_up(r) for r in records):
            await follower.catch_up()

    def person_outputs(record: dict[str, Any], state: Any, outbox: Outbox) -> Any:
        record, new_state = person_step(record, state, ref, settings.geo, settings.fraud, tz)
        item = forward.encode_item(record)
        outbox.add_item(topics.BY_DEVICE.name, record["device_id"].encode(), device_partitions,
                        item, forward.join)
        return new_state

    def device_outputs(record: dict[str, Any], state: Any, outbox: Outbox) -> Any:
        decision, revised, new_state = device_step(record, state, settings.fraud,
                                                   datetime.now(UTC))
        outputs = []
        for verdict, raised in (decision, *revised):
            nip = verdict["nip"].encode()
            outputs.append((topics.VERDICTS.name, nip, verdict_codec.encode(verdict)))
            outputs.extend((topics.ALERTS.name, nip, alert_codec.encode(a)) for a in raised)
        for topic, key, value in outputs:
            outbox.add(topic, key, value)
        return new_state

    @app.agent(faced)
    async def person(stream: Any) -> None:
        await follower.ready.wait()
        await crash_only(keyed_batches(app, stream, person_state, faced_codec, dlq, "nip",
                                       person_outputs, catch_up_once), "person stage")

    @app.agent(by_device)
    async def device(stream: Any) -> None:
        await crash_only(keyed_batches(app, stream, device_state, forward, dlq, "device_id",
                                       device_outputs), "device stage")

    return app


def _employee(ref: Reference, key: bytes | None, value: dict[str, Any] | None) -> None:
    nip = (key or b"").decode()
    if value is None:
        ref.employees.pop(nip, None)
    else:
        ref.employees[value["nip"]] = value


def _office(ref: Reference, key: bytes | None, value: dict[str, Any] | None) -> None:
    if value is None:
        ref.geofences.remove((key or b"").decode())
        return
    feature = {"type": "Feature", "geometry": json.loads(value["geometry"]),
               "properties": {"office_id": value["office_id"], "name": value["name"]}}
    try:
        ref.geofences.update(office_from_feature(feature))
    except GeofenceError as exc:
        raise ValueError(str(exc)) from None


def _excuse(ref: Reference, key: bytes | None, value: dict[str, Any] | None) -> None:
    nip, date_from, kind = (key or b"||").decode().split("|")
    kept = [e for e in ref.excuses.get(nip, [])
            if not (e.date_from.isoformat() == date_from and e.kind.value == kind)]
    if value is not None:
        kept.append(Excuse(value["nip"], datetime.fromisoformat(value["date_from"]).date(),
                           datetime.fromisoformat(value["date_to"]).date(),
                           ExcuseKind(value["kind"])))
    ref.excuses[nip] = kept
