"""The ClickHouse sink: verdicts, alerts and reference data from Kafka into ClickHouse.

Like a quixstreams sink, it batches rows per partition (bounded by rows and by time), inserts
each batch, and commits the Kafka offsets only after the insert succeeded. When ClickHouse is
down it keeps the batch, retries with backoff and stops fetching, so lag grows and nothing is
lost. Tables are ReplacingMergeTree keyed by the natural id, so a batch inserted twice (a crash
between insert and commit) still reads as one row per check-in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from clickhouse_driver import Client

from hadir import topics
from hadir.config import InfraSettings, Settings
from hadir.serde import AvroCodec, Registry, SerdeError

log = logging.getLogger("hadir.sink")

Row = tuple[Any, ...]


def connect(infra: InfraSettings, database: str | None = None) -> Client:
    return Client(infra.clickhouse_host, port=infra.clickhouse_port, user=infra.clickhouse_user,
                  password=infra.clickhouse_password,
                  database=database or infra.clickhouse_database, connect_timeout=5,
                  send_receive_timeout=120, settings={"use_numpy": False})


def _seconds(ms: int | None) -> int | None:
    """An epoch-millisecond timestamp as a ClickHouse DateTime (epoch seconds, UTC)."""
    return None if ms is None else ms // 1000


class LocalDates:
    """Epoch milliseconds -> the date in one time zone, remembered per 15 minutes of UTC time
    (every zone's offset is a multiple of 15 minutes, so a local midnight never falls inside
    one of those spans)."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._dates: dict[int, date] = {}

    def __call__(self, ms: int) -> date:
        span = ms // 900_000
        day = self._dates.get(span)
        if day is None:
            if len(self._dates) > 100_000:  # three years of spans: start over
                self._dates.clear()
            day = self._dates[span] = datetime.fromtimestamp(span * 900, self.tz).date()
        return day


@dataclass(frozen=True)
class TableMapping:
    """How one topic's records become rows of one table."""

    topic: topics.Topic
    table: str
    columns: tuple[str, ...]
    to_row: Callable[[bytes | None, dict[str, Any] | None, int], Row]


def _mappings(tz: ZoneInfo) -> list[TableMapping]:
    """Records are decoded without Avro logical types: timestamps are epoch milliseconds."""
    local = LocalDates(tz)

    def verdict_row(_key: bytes | None, v: dict[str, Any] | None, _off: int) -> Row:
        assert v is not None
        at = v["server_time"]
        return (v["event_id"], v["nip"], v["device_id"], v["office_id"], v["type"],
                at // 1000, at, local(at), _seconds(v["client_time"]), v["verdict"],
                v["reasons"], v["face_similarity"], v["spoof_score"], v["h3_cell"],
                v["distance_m"], v["lat"], v["lon"], v["accuracy_m"], v["decided_at"] // 1000,
                v["decided_at"])

    def alert_row(_key: bytes | None, v: dict[str, Any] | None, _off: int) -> Row:
        assert v is not None
        return (v["alert_id"], v["event_id"], v["nip"], v["device_id"], v["office_id"],
                v["rule"], v["severity"], v["server_time"] // 1000, local(v["server_time"]),
                v["detected_at"] // 1000, v["evidence"], v["detected_at"])

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
        return (v["nip"], date.fromisoformat(v["date_from"]), date.fromisoformat(v["date_to"]),
                v["kind"], 0, off)

    return [
        TableMapping(topics.VERDICTS, "checkins", (
            "event_id", "nip", "device_id", "office_id", "type", "server_time",
            "server_time_ms", "local_date", "client_time", "verdict", "reasons",
            "face_similarity", "spoof_score", "h3_cell", "distance_m", "lat", "lon",
            "accuracy_m", "decided_at", "version"), verdict_row),
        TableMapping(topics.ALERTS, "alerts", (
            "alert_id", "event_id", "nip", "device_id", "office_id", "rule", "severity",
            "server_time", "local_date", "detected_at", "evidence", "version"), alert_row),
        TableMapping(topics.EMPLOYEES, "employees", (
            "nip", "name", "office_id", "tpp_base_idr", "deleted", "version"), employee_row),
        TableMapping(topics.OFFICES, "offices", (
            "office_id", "name", "geometry", "deleted", "version"), office_row),
        TableMapping(topics.EXCUSES, "excuses", (
            "nip", "date_from", "date_to", "kind", "deleted", "version"), excuse_row),
    ]


@dataclass
class _Batch:
    rows: dict[str, list[Row]] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to commit
    count: int = 0
    started: float = 0.0

    def add(self, table: str, row: Row, topic: str, partition: int, offset: int) -> None:
        if not self.count:
            self.started = time.monotonic()
        self.rows.setdefault(table, []).append(row)
        self.offsets[(topic, partition)] = offset + 1
        self.count += 1


def mappings(settings: Settings) -> list[TableMapping]:
    return _mappings(ZoneInfo(settings.attendance.timezone))


class ClickHouseSink:
    """Run with :meth:`run`; stop by setting ``stopping`` (signal handler) or ``max_idle_s``.
    ``tables`` and ``group_id`` default to Hadir's topics; the benchmark points them elsewhere."""

    def __init__(self, settings: Settings, tables: list[TableMapping] | None = None,
                 group_id: str = "hadir-clickhouse-sink") -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings
        infra = settings.infra
        registry = Registry(infra.registry)
        self.mappings = {m.topic.name: m for m in (tables or mappings(settings))}
        self.codecs = {name: AvroCodec(m.topic, registry, logical_types=False)
                       for name, m in self.mappings.items()}
        self.dlq = AvroCodec(topics.DLQ, registry)
        self.consumer = Consumer({
            "bootstrap.servers": infra.bootstrap, "group.id": group_id,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "enable.partition.eof": False, "max.poll.interval.ms": 600_000,
        })
        self.producer = Producer({"bootstrap.servers": infra.bootstrap, "linger.ms": 5})
        self.client = connect(infra)
        self.batch = _Batch()
        self.stopping = False
        self.rows_written = 0

    def _dead_letter(self, msg: Any, error: str) -> None:
        record = {"source_topic": msg.topic(), "source_partition": msg.partition(),
                  "source_offset": msg.offset(), "key": msg.key(), "value": msg.value(),
                  "error": error, "stage": "clickhouse-sink", "failed_at": datetime.now(UTC)}
        self.producer.produce(topics.DLQ.name, self.dlq.encode(record))

    def _add(self, msg: Any) -> None:
        mapping = self.mappings[msg.topic()]
        try:
            value = None if msg.value() is None and mapping.topic.compacted else \
                self.codecs[msg.topic()].decode(msg.value())
            row = mapping.to_row(msg.key(), value, msg.offset())
        except (SerdeError, KeyError, ValueError, TypeError, AssertionError) as exc:
            log.warning("dead letter from %s@%s: %s", msg.topic(), msg.offset(), exc)
            self._dead_letter(msg, f"{type(exc).__name__}: {exc}")
            self.batch.offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
            return
        self.batch.add(mapping.table, row, msg.topic(), msg.partition(), msg.offset())

    def _insert(self) -> None:
        for table, rows in self.batch.rows.items():
            columns = next(m.columns for m in self.mappings.values() if m.table == table)
            self.client.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", rows)

    def flush(self) -> None:
        """Insert the batch, retrying with backoff until ClickHouse takes it, then commit."""
        from confluent_kafka import TopicPartition

        if not self.batch.offsets:
            return
        delay = 0.2
        paused: list[Any] = []
        while True:
            try:
                self._insert()
                break
            except Exception as exc:  # network or server error: keep the batch, retry
                log.warning("ClickHouse insert failed (%s); retrying in %.1fs", exc, delay)
                self.client.disconnect()
                if self.stopping:
                    return  # not committed: the next run re-reads and re-inserts
                if not paused:
                    # Stop fetching but keep polling, so the group keeps this member.
                    paused = self.consumer.assignment()
                    self.consumer.pause(paused)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not self.stopping:
                    self.consumer.poll(0.1)
                delay = min(delay * 2, self.settings.sink.retry_max_seconds)
        if paused:
            self.consumer.resume(paused)
        self.producer.flush(10)  # dead letters of this batch are on Kafka before we commit
        self.consumer.commit(offsets=[TopicPartition(t, p, o)
                                      for (t, p), o in self.batch.offsets.items()],
                             asynchronous=False)
        self.rows_written += self.batch.count
        self.batch = _Batch()

    def _on_revoke(self, _consumer: Any, _partitions: Any) -> None:
        # Uncommitted rows of revoked partitions are re-read by their new owner; the tables are
        # idempotent, so flushing here is only an optimisation we skip for simplicity.
        self.batch = _Batch()

    def run(self, max_idle_s: float | None = None) -> None:
        self.consumer.subscribe(list(self.mappings), on_revoke=self._on_revoke)
        sink = self.settings.sink
        idle_since = time.monotonic()
        try:
            while not self.stopping:
                messages = self.consumer.consume(num_messages=sink.batch_rows, timeout=0.1)
                for msg in messages:
                    if msg.error():
                        log.warning("consumer error: %s", msg.error())
                        continue
                    self._add(msg)
                if messages:
                    idle_since = time.monotonic()
                due = self.batch.offsets and (
                    not messages or self.batch.count >= sink.batch_rows
                    or time.monotonic() - self.batch.started >= sink.batch_seconds)
                if due:
                    self.flush()
                if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                    break
        finally:
            self.flush()
            self.consumer.close()
