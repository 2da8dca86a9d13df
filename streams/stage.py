"""The stage framework every faust worker of Hadir is built on: the app's settings, raw-bytes
topics, the one dead-letter writer, crash-only agents, input batches with Hadir's own offset
commits, and tables keyed like their input.

Each stage takes a batch of events, computes every output, waits until Kafka has acknowledged
the outputs, and only then writes its table: after a crash a re-delivered event is recomputed
from the same state (same output), and a duplicate event id is dropped only once its output is
known to be out. Input offsets are committed after the batch (at least once, see
:func:`input_batches`); the ClickHouse sink is idempotent on event_id, so nothing is counted
twice. The wiring of the stages themselves is in streams/intake.py and streams/core_app.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import faust
from aiokafka.errors import IllegalStateError
from faust.serializers.codecs import dumps

from hadir import kafka_access, topics
from hadir.config import Settings
from hadir.serde import AvroCodec, SerdeError
from processors.events import InvalidCheckin
from streams.core import seen
from streams.deadletters import DeadLetters, decoded
from streams.offsets import Admit, OffsetLedger
from streams.outbox import Outbox, partition_for

log = logging.getLogger("hadir.streams")

BATCH = 500
BATCH_WAIT_S = 0.02
COMMIT_EVERY_S = 0.5


def new_app(name: str, settings: Settings, principal: kafka_access.Principal) -> faust.App:
    return faust.App(
        name,
        broker=f"kafka://{settings.infra.bootstrap}",
        broker_credentials=kafka_access.faust_credentials(settings.infra, principal),
        store="memory://",  # tables are rebuilt from their changelog topics at start
        web_enabled=False,
        topic_replication_factor=1,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,  # streams/outbox.py fills whole batches
        # The brokers' message.max.bytes: a dead letter keeps records up to that size (and
        # aiokafka's default, 1 MB, refused a 2 MB one, which ended the worker every time).
        producer_max_request_size=4_194_304,
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
        checkins_of = decoded(events, lambda value: codec.decode(value)["checkins"], dlq, outbox)
        if prepare is not None:
            await prepare([record for _, checkins in checkins_of for record in checkins])
        overlay: dict[bytes, Any] = {}
        for event, checkins in checkins_of:
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
