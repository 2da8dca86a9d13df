"""The ClickHouse sink: verdicts, alerts and reference data from Kafka into ClickHouse.

Like a quixstreams sink, it batches rows per partition (bounded by rows and by time), inserts
each batch, and commits the Kafka offsets only after the insert succeeded. When ClickHouse is
down it keeps the batch, retries with backoff and stops fetching, so lag grows and nothing is
lost. Tables are ReplacingMergeTree keyed by the natural id, so a batch inserted twice (a crash
between insert and commit) still reads as one row per check-in.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from itertools import chain
from typing import Any

import polars as pl

from hadir import kafka_access, topics
from hadir.config import Settings
from hadir.serde import AvroCodec, Registry, SerdeError, schema_text
from sinks.connection import connect
from sinks.frames import FrameDecoder
from streams.deadletters import DeadLetters

log = logging.getLogger("hadir.sink")

Row = tuple[Any, ...]


def _local_date(column: str | pl.Expr, tz: str) -> pl.Expr:
    """Epoch milliseconds -> the calendar date in ``tz`` (attendance is per local day)."""
    return pl.from_epoch(column, time_unit="ms").dt.replace_time_zone("UTC") \
        .dt.convert_time_zone(tz).dt.date()


DATETIME_MAX_S = 2**32 - 1  # ClickHouse DateTime: seconds from 1970 to 2106


def _seconds(column: str) -> pl.Expr:
    """Epoch milliseconds -> DateTime's epoch seconds; null where DateTime cannot hold it (a
    phone's clock set to 1969 is a CLOCK_SKEW to store, not a batch that can never insert)."""
    seconds = pl.col(column) // 1000
    return pl.when(seconds.is_between(0, DATETIME_MAX_S)).then(seconds).otherwise(None)


@dataclass(frozen=True)
class EventMapping:
    """An event topic (append-only, high volume) into a table: records are decoded a batch at a
    time into a polars frame (``sinks/frames.py``), and ``columns`` computes the table's
    columns from the frame, whose timestamps are epoch milliseconds (no Avro logical types).
    ``required`` columns cannot be null in the table: a record that leaves one null (a time
    outside DateTime's range) is a dead letter."""

    topic: topics.Topic
    table: str
    columns: dict[str, pl.Expr]
    required: tuple[str, ...]


@dataclass(frozen=True)
class RecordMapping:
    """A compacted reference topic into a table, record by record: the key names the entity,
    a null value (tombstone) deletes it, the offset orders versions."""

    topic: topics.Topic
    table: str
    columns: tuple[str, ...]
    to_row: Callable[[bytes | None, dict[str, Any] | None, int], Row]


Mapping = EventMapping | RecordMapping


def _event_mappings(tz: str) -> list[EventMapping]:
    def same(*names: str) -> dict[str, pl.Expr]:
        return {name: pl.col(name) for name in names}

    return [
        EventMapping(topics.VERDICTS, "checkins", {
            **same("event_id", "nip", "device_id", "office_id", "type"),
            "server_time": _seconds("server_time"),
            "server_time_ms": pl.col("server_time"),
            # the day of the check-in itself, which an offline one precedes its sending by
            "local_date": _local_date(pl.col("server_time") - pl.col("offline_age_ms"), tz),
            "client_time": _seconds("client_time"),
            **same("verdict", "reasons", "face_similarity", "spoof_score", "h3_cell",
                   "distance_m", "lat", "lon", "accuracy_m", "offline_age_ms",
                   "source_offset"),
            "decided_at": _seconds("decided_at"),
            "version": pl.col("decided_at")}, required=("server_time", "decided_at")),
        EventMapping(topics.ALERTS, "alerts", {
            **same("alert_id", "event_id", "nip", "device_id", "office_id", "rule", "severity"),
            "server_time": _seconds("server_time"),
            "local_date": _local_date("server_time", tz),
            "detected_at": _seconds("detected_at"),
            "evidence": pl.col("evidence"),
            "version": pl.col("detected_at")}, required=("server_time", "detected_at")),
    ]


def _record_mappings() -> list[RecordMapping]:
    def employee_row(key: bytes | None, v: dict[str, Any] | None, off: int) -> Row:
        if v is None:
            return ((key or b"").decode(), "", "", 0, 1, off)
        return (v["nip"], v["name"], v["office_id"], v["tpp_base_idr"], 0, off)

    def office_row(key: bytes | None, v: dict[str, Any] | None, off: int) -> Row:
        if v is None:
            return ((key or b"").decode(), "", "", 1, off)
        return (v["office_id"], v["name"], v["geometry"], 0, off)

    def excuse_row(key: bytes | None, v: dict[str, Any] | None, off: int) -> Row:
        if v is None:
            nip, date_from, kind = (key or b"||").decode().split("|")
            day = date.fromisoformat(date_from)
            return (nip, day, day, kind, 1, off)
        date_from, date_to = date.fromisoformat(v["date_from"]), date.fromisoformat(v["date_to"])
        if date_to < date_from:  # the reports could not use it, nor any other excuse
            raise ValueError(f"excuse ends ({date_to}) before it starts ({date_from})")
        return (v["nip"], date_from, date_to, v["kind"], 0, off)

    def seconds(ms: int | None) -> int | None:
        return None if ms is None else ms // 1000

    def present(v: dict[str, Any] | None) -> dict[str, Any]:
        if v is None:  # Hadir deletes nothing on these topics
            raise ValueError("unexpected tombstone")
        return v

    def decision_row(_key: bytes | None, v: dict[str, Any] | None, off: int) -> Row:
        v = present(v)
        return (v["decision_id"], v["event_id"], v["nip"], v["decision"], v["reviewer"],
                v["note"], seconds(v["decided_at"]), v["decided_at"], off)

    def appeal_row(_key: bytes | None, v: dict[str, Any] | None, off: int) -> Row:
        v = present(v)
        return (v["appeal_id"], v["event_id"], v["nip"], v["note"],
                seconds(v["submitted_at"]), off)

    def request_row(_key: bytes | None, v: dict[str, Any] | None, off: int) -> Row:
        v = present(v)
        return (v["request_id"], v["nip"], v["kind"], date.fromisoformat(v["date_from"]),
                date.fromisoformat(v["date_to"]), v["note"], seconds(v["submitted_at"]),
                v["status"], v["decided_by"], seconds(v["decided_at"]), off)

    def month_row(_key: bytes | None, v: dict[str, Any] | None, off: int) -> Row:
        v = present(v)
        return (v["month"], int(v["closed"]), v["by"], seconds(v["at"]), off)

    def dead_letter_row(_key: bytes | None, v: dict[str, Any] | None, off: int) -> Row:
        v = present(v)  # its metadata only: the value (a selfie, say) stays on the topic
        return (v["source_topic"], v["source_partition"], v["source_offset"], v["stage"],
                v["error"], seconds(v["failed_at"]), v.get("event_id") or "",
                v.get("nip") or "", len(v["value"] or b""), off)

    def access_row(_key: bytes | None, v: dict[str, Any] | None, off: int) -> Row:
        v = present(v)
        return (v["entry_id"], seconds(v["at"]), v["username"], v["role"], v["action"],
                v["subject"], v["nip"], v["office_id"], off)

    return [
        RecordMapping(topics.ACCESS_LOG, "access_log", (
            "entry_id", "at", "username", "role", "action", "subject", "nip", "office_id",
            "version"), access_row),
        RecordMapping(topics.DECISIONS, "decisions", (
            "decision_id", "event_id", "nip", "decision", "reviewer", "note", "decided_at",
            "decided_at_ms", "version"), decision_row),
        RecordMapping(topics.APPEALS, "appeals", (
            "appeal_id", "event_id", "nip", "note", "submitted_at", "version"), appeal_row),
        RecordMapping(topics.EXCUSE_REQUESTS, "excuse_requests", (
            "request_id", "nip", "kind", "date_from", "date_to", "note", "submitted_at",
            "status", "decided_by", "decided_at", "version"), request_row),
        RecordMapping(topics.MONTHS, "months", ("month", "closed", "by", "at", "version"),
                      month_row),
        RecordMapping(topics.DLQ, "dead_letters", (
            "source_topic", "source_partition", "source_offset", "stage", "error", "failed_at",
            "event_id", "nip", "value_bytes", "version"), dead_letter_row),
        RecordMapping(topics.EMPLOYEES, "employees", (
            "nip", "name", "office_id", "tpp_base_idr", "deleted", "version"), employee_row),
        RecordMapping(topics.OFFICES, "offices", (
            "office_id", "name", "geometry", "deleted", "version"), office_row),
        RecordMapping(topics.EXCUSES, "excuses", (
            "nip", "date_from", "date_to", "kind", "deleted", "version"), excuse_row),
    ]


Columns = list[list[Any]]  # one list of values per column, in the mapping's column order


@dataclass
class _Batch:
    """What the next insert writes, per table, and the offsets to commit after it."""

    rows: dict[str, list[Row]] = field(default_factory=dict)  # reference tables
    columns: dict[str, list[Columns]] = field(default_factory=dict)  # event tables, in chunks
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to commit
    count: int = 0
    started: float = 0.0

    def _grow(self, rows: int) -> None:
        if not self.count:
            self.started = time.monotonic()
        self.count += rows

    def add_row(self, table: str, row: Row) -> None:
        self._grow(1)
        self.rows.setdefault(table, []).append(row)

    def add_columns(self, table: str, columns: Columns) -> None:
        self._grow(len(columns[0]))
        self.columns.setdefault(table, []).append(columns)


def _values(column: pl.Series) -> list[Any]:
    """A column as the Python values clickhouse-driver writes. Dates go through numpy, which
    makes them 4x faster than polars does (measured: 61 against 277 ns a row)."""
    if column.dtype == pl.Date and not column.has_nulls():
        return column.to_numpy().tolist()  # type: ignore[no-any-return]
    return column.to_list()


@contextmanager
def _cycle_collection_after_flushes() -> Iterator[Callable[[], None]]:
    """Python's cycle collector, run only when the caller says (after each flush). A batch is
    a few hundred thousand values, among them one list per row (its reasons), all freed by
    reference counting once inserted; the collector would otherwise scan them again and again
    while they are alive (measured: 500 ns for each list). What lived before the sink started
    is frozen out of those collections."""
    enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield gc.collect
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


def mappings(settings: Settings) -> list[Mapping]:
    return [*_event_mappings(settings.attendance.timezone), *_record_mappings()]


class _Delivered:
    """Sends through the sink's producer, and sends again what Kafka refused until
    :meth:`deliver` sees everything acknowledged."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.refused: list[tuple[str, bytes | None, bytes]] = []

    def add(self, topic: str, key: bytes | None, value: bytes) -> None:
        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                self.refused.append((topic, key, value))
        self.producer.produce(topic, value, key=key, on_delivery=delivered)

    def deliver(self, timeout_s: float) -> None:
        again, self.refused = self.refused, []
        for record in again:
            self.add(*record)
        left = self.producer.flush(timeout_s)
        if left or self.refused:
            raise RuntimeError(f"{left + len(self.refused)} dead letters not delivered")


class ClickHouseSink:
    """Run with :meth:`run`; stop by setting ``stopping`` (signal handler), ``max_idle_s`` or
    ``until_rows``. ``tables`` and ``group_id`` default to Hadir's topics and group; the
    benchmark and the tests point them elsewhere."""

    def __init__(self, settings: Settings, tables: list[Mapping] | None = None,
                 group_id: str = kafka_access.SINK_GROUP,
                 principal: kafka_access.Principal = "sink") -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings
        infra = settings.infra
        registry = Registry(infra.registry)
        self.mappings = {m.topic.name: m for m in (tables or mappings(settings))}
        self.by_table = {m.table: m for m in self.mappings.values()}
        self.codecs = {name: AvroCodec(m.topic, registry, logical_types=False)
                       for name, m in self.mappings.items()}
        self.decoders = {name: FrameDecoder(json.loads(schema_text(m.topic.schema)))
                         for name, m in self.mappings.items() if isinstance(m, EventMapping)}
        # The sink's input is Hadir's own output: its dead letters never become verdicts.
        self.dead_letters = DeadLetters(registry, "clickhouse-sink", None)
        self.consumer = Consumer({
            **kafka_access.confluent(infra, principal), "group.id": group_id,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "enable.partition.eof": False, "max.poll.interval.ms": 600_000,
            "fetch.min.bytes": 1_000_000, "fetch.wait.max.ms": 100,
        })
        self.producer = Producer({**kafka_access.confluent(infra, principal), "linger.ms": 5,
                                  "message.max.bytes": 4_194_304})  # the brokers' limit
        self.client = connect(infra)
        self.batch = _Batch()
        self.refused = _Delivered(self.producer)
        self.held: list[Any] = []  # fetched while a flush waited; they start the next batch
        self.stopping = False
        self.rows_written = 0
        self.first_message_at: float | None = None  # monotonic; for rates
        self.last_commit_at: float | None = None

    def _dead_letter(self, msg: Any, error: str) -> None:
        self.dead_letters.write(self.refused, msg.topic(), msg.partition(), msg.offset(),
                                msg.key(), msg.value(), error)

    def _deliver_dead_letters(self) -> None:
        """Every dead letter of the batch is on Kafka (its source offset may be committed)."""
        self.refused.deliver(5.0)

    def _add_record(self, mapping: RecordMapping, msg: Any) -> None:
        try:
            value = None if msg.value() is None else self.codecs[msg.topic()].decode(msg.value())
            row = mapping.to_row(msg.key(), value, msg.offset())
        except (SerdeError, KeyError, ValueError, TypeError) as exc:
            self._dead_letter(msg, f"{type(exc).__name__}: {exc}")
            return
        self.batch.add_row(mapping.table, row)

    def _add_events(self, mapping: EventMapping, messages: list[Any]) -> None:
        """One topic's records of one fetch: decoded together when they are all well formed
        and written with the topic's schema, else one by one (bad ones to the dead letters)."""
        name = mapping.topic.name
        codec, decoder = self.codecs[name], self.decoders[name]
        ours, others = [], []
        for msg in messages:
            value = msg.value()
            (ours if value is not None and value.startswith(codec.header) else others).append(msg)
        frame = decoder.decode([m.value()[len(codec.header):] for m in ours])
        if frame is None:
            ours, others = [], messages
        decoded, records = [], []
        for msg in others:
            try:
                records.append(codec.decode(msg.value()))
                decoded.append(msg)
            except SerdeError as exc:
                self._dead_letter(msg, f"{type(exc).__name__}: {exc}")
        if records:
            frame = decoder.frame(records) if frame is None else \
                pl.concat([frame, decoder.frame(records)])
        if frame is not None:
            self._add_frame(mapping, frame, ours + decoded)

    def _add_frame(self, mapping: EventMapping, frame: pl.DataFrame, messages: list[Any]) -> None:
        try:
            selected = frame.select([e.alias(c) for c, e in mapping.columns.items()])
            empty = [c for c in mapping.required if selected[c].null_count()]
            if empty:
                raise ValueError(f"{', '.join(empty)}: outside ClickHouse DateTime's range "
                                 "(1970 to 2106)")
            columns = [_values(selected[c]) for c in mapping.columns]
        except (pl.exceptions.PolarsError, ValueError, OverflowError) as exc:
            if frame.height == 1:
                self._dead_letter(messages[0], f"{type(exc).__name__}: {exc}")
                return
            for i, msg in enumerate(messages):  # find the records that cannot be stored
                self._add_frame(mapping, frame.slice(i, 1), [msg])
            return
        self.batch.add_columns(mapping.table, columns)

    def _insert(self, batch: _Batch) -> None:
        for table, rows in batch.rows.items():
            columns = self.by_table[table].columns
            self.client.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", rows)
        for table, chunks in batch.columns.items():
            names = list(self.by_table[table].columns)
            merged = [list(chain.from_iterable(chunk[i] for chunk in chunks))
                      for i in range(len(names))]
            self.client.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES", merged,
                                columnar=True)

    def flush(self) -> None:
        """Insert the batch and deliver its dead letters, each retried with backoff until it
        succeeds, then commit. Records fetched meanwhile start the next batch."""
        from confluent_kafka import KafkaException, TopicPartition

        if not self.batch.offsets:
            return
        batch = self.batch
        done = self._until_done(lambda: self._insert(batch), "ClickHouse insert", batch) and \
            self._until_done(self._deliver_dead_letters, "dead-letter delivery", batch)
        if done:
            try:
                self.consumer.commit(offsets=[TopicPartition(t, p, o)
                                              for (t, p), o in batch.offsets.items()],
                                     asynchronous=False)
            except KafkaException as exc:  # a rebalance in between: the rows are stored, and
                # whoever owns the partitions now re-reads them (the tables are idempotent)
                log.warning("offset commit failed after the insert (%s)", exc)
            self.rows_written += batch.count
            self.last_commit_at = time.monotonic()
            self.batch = _Batch()
        held, self.held = self.held, []
        if held:  # of partitions taken away since, the new owner reads them from the commit
            owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
            self._add([m for m in held if (m.topic(), m.partition()) in owned])

    def _until_done(self, step: Callable[[], None], what: str, batch: _Batch) -> bool:
        """Run ``step`` until it succeeds (True). Meanwhile fetching is paused and the consumer
        polled, so the group keeps this member. False when the sink stops, or when a rebalance
        took the batch's partitions (their new owner re-reads them from the last commit)."""
        from confluent_kafka import KafkaException

        delay, paused = 0.2, False
        try:
            while True:
                if self.batch is not batch:  # revoked while waiting: its offsets are not ours
                    return False
                try:
                    step()
                    return True
                except Exception as exc:  # network, server or broker error: keep the batch
                    log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                    self.client.disconnect()
                if not paused:
                    self.consumer.pause(self.consumer.assignment())
                    paused = True
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    if self.stopping or self.batch is not batch:
                        return False
                    msg = self.consumer.poll(0.1)  # from partitions assigned in a rebalance
                    if msg is not None:
                        self.held.append(msg)
                delay = min(delay * 2, self.settings.sink.retry_max_seconds)
        finally:
            if paused:
                try:
                    self.consumer.resume(self.consumer.assignment())
                except KafkaException as exc:
                    log.warning("resuming the partitions failed (%s)", exc)

    def _add(self, messages: list[Any]) -> None:
        """One fetch into the batch. Every record is passed at the next commit, stored or
        dead-lettered."""
        events: dict[str, list[Any]] = {}
        offsets = self.batch.offsets
        for msg in messages:
            if msg.error():
                log.warning("consumer error: %s", msg.error())
                continue
            topic = msg.topic()
            offsets[(topic, msg.partition())] = msg.offset() + 1
            mapping = self.mappings[topic]
            if isinstance(mapping, EventMapping):
                events.setdefault(topic, []).append(msg)
            else:
                self._add_record(mapping, msg)
        for name, batch in events.items():
            self._add_events(self.mappings[name], batch)  # type: ignore[arg-type]

    def _close_producer(self) -> None:
        """Its threads end now rather than whenever the sink is collected (the consumer's
        revoke callback keeps the sink in a reference cycle, and a live producer logged
        refused connections once Kafka was gone). A dead letter still queued after 10 s
        (Kafka unreachable) is dropped, as it would be at the process's exit."""
        self.producer.flush(10)
        self.producer.purge()
        self.producer.close()

    def _on_revoke(self, consumer: Any, partitions: Any) -> None:
        # Uncommitted rows of revoked partitions are re-read by their new owner; the tables are
        # idempotent, so flushing here is only an optimisation we skip for simplicity.
        self.batch = _Batch()
        # A partition paused while an insert was retried stays paused in librdkafka after it
        # leaves, and would never be fetched again when it comes back to this sink.
        consumer.resume(partitions)

    def run(self, max_idle_s: float | None = None, until_rows: int | None = None) -> None:
        """Until stopped; or after ``max_idle_s`` without records once some arrived, or once
        ``until_rows`` rows are written (both for tests and benchmarks)."""
        self.consumer.subscribe(list(self.mappings), on_revoke=self._on_revoke)
        sink = self.settings.sink
        idle_since = time.monotonic()
        with _cycle_collection_after_flushes() as collect_cycles:
            try:
                while not self.stopping:
                    messages = self.consumer.consume(num_messages=sink.batch_rows, timeout=0.1)
                    self._add(messages)
                    if messages:
                        idle_since = time.monotonic()
                        if self.first_message_at is None:
                            self.first_message_at = idle_since
                    due = self.batch.offsets and (
                        not messages or self.batch.count >= sink.batch_rows
                        or time.monotonic() - self.batch.started >= sink.batch_seconds)
                    if due:
                        self.flush()
                        collect_cycles()
                    if until_rows is not None and self.rows_written >= until_rows:
                        break
                    if (max_idle_s is not None and self.first_message_at is not None
                            and time.monotonic() - idle_since > max_idle_s):
                        break
            finally:
                try:
                    self.flush()
                finally:
                    self.consumer.close()
                    self._close_producer()
