"""Helpers for tests that drive the real pipeline: publish crafted check-ins and reference
data on the test stack, wait for what comes out in ClickHouse and on the dead-letter topic."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hadir import faces, kafka_access, topics
from hadir.config import Settings
from hadir.generate import FreshShots, SelfieCamera, load_photo
from hadir.serde import AvroCodec, Registry
from processors.attendance import WorkCalendar
from sinks.connection import connect
from tests.paths import FACES as FACES_DIR

KOBA = (-2.48600, 106.41000)  # office centre used by the pipeline tests
OFFICE = {"type": "Polygon", "coordinates": [[
    [106.40960, -2.48640], [106.41040, -2.48640], [106.41040, -2.48560],
    [106.40960, -2.48560], [106.40960, -2.48640]]]}


def jpeg(path: Path, size: int = 480) -> bytes:
    """The photo as a phone would upload it (the same bytes every time: use for enrollment
    and for deliberate replays)."""
    ok, data = cv2.imencode(".jpg", load_photo(path, size))
    assert ok
    return data.tobytes()


_CAMERA = FreshShots(SelfieCamera(np.random.default_rng(11)))


def selfie(path: Path) -> bytes:
    """A fresh selfie of the person in ``path``, never a near-copy of an earlier one."""
    return _CAMERA.shoot(load_photo(path))


_NIPS = itertools.count()  # the test stack is wiped per session: a counter keeps NIPs unique


def members_with_partitions(settings: Settings, group: str) -> int:
    """How many members of a consumer group own partitions, as the broker describes it (asked
    of the broker: a consumer's own assignment() called from another thread can deadlock)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka_access.confluent(settings.infra, "admin"))
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return sum(1 for m in described.members if m.assignment.topic_partitions)


def new_nip() -> str:
    """A fresh 18-digit NIP: birth date, appointment month, sex, sequence; never one this
    test session used before (a repeat would bring another test's state into a test)."""
    k = next(_NIPS)
    return f"19{60 + k // 24_000}0101{2000 + k // 1000 % 24}011{k % 1000:03d}"


class Pipeline:
    """The test stack with workers running; publishes and waits."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        self.registry = Registry(settings.infra.registry)
        self.codecs = {t.name: AvroCodec(t, self.registry) for t in topics.ALL}
        self.producer = Producer({**kafka_access.confluent(settings.infra, "admin"),
                                  "partitioner": "murmur2_random", "linger.ms": 5,
                                  "message.max.bytes": 4_194_304,  # the brokers' limit
                                  "log.connection.close": False})
        self.verifier = faces.verifier(settings)
        self.cipher = self.verifier.cipher(faces.template_key(settings))
        self.office_id = "TEST-KOBA"
        self.publish(topics.OFFICES, self.office_id, {
            "office_id": self.office_id, "name": "Kantor uji Koba",
            "geometry": json.dumps(OFFICE)})

    def close(self) -> None:
        """Stop the producer's threads now: left to the garbage collector, they outlived the
        test stack and logged refused connections at the end of the run."""
        self.producer.close()

    def publish(self, topic: topics.Topic, key: str | None, value: dict[str, Any] | None,
                raw: bytes | None = None) -> tuple[int, int]:
        out: list[Any] = []
        payload = raw if raw is not None else (
            None if value is None else self.codecs[topic.name].encode(value))
        self.producer.produce(topic.name, key=key.encode() if key else None, value=payload,
                              on_delivery=lambda err, msg: out.append((err, msg)))
        self.producer.flush(30)
        err, msg = out[0]
        assert err is None, err
        return msg.partition(), msg.offset()

    def employee(self, photo: Path | None = FACES_DIR / "img1.jpg",
                 office_id: str | None = None, nip: str | None = None) -> str:
        """A new ASN (``nip``, else a fresh one), enrolled with ``photo`` unless it is None."""
        nip = nip or new_nip()
        self.publish(topics.EMPLOYEES, nip, {"nip": nip, "name": f"ASN {nip[-3:]}",
                                             "office_id": office_id or self.office_id,
                                             "tpp_base_idr": 4_000_000})
        if photo is not None:
            self.enroll(nip, photo)
        return nip

    def enroll(self, nip: str, photo: Path) -> None:
        """Enroll (or re-enroll) the ASN's face from this photo."""
        template = self.verifier.enroll([jpeg(photo)])
        self.publish(topics.FACES, nip, faces.template_record(nip, template, self.cipher))

    def checkin(self, nip: str, *, at: datetime | None = None, lat: float = KOBA[0],
                lon: float = KOBA[1], selfie: bytes | None = None, device: str | None = None,
                kind: str = "IN", accuracy: float | None = 10.0, mock: bool = False,
                client_offset_s: float = 3.0, event_id: str | None = None) -> dict[str, Any]:
        at = at or datetime.now(UTC).replace(microsecond=0)
        return {"event_id": event_id or str(uuid.uuid4()), "nip": nip,
                "device_id": device or f"dev-{nip}", "type": kind, "server_time": at,
                "client_time": at + timedelta(seconds=client_offset_s), "lat": lat, "lon": lon,
                "accuracy_m": accuracy, "mock_location": mock, "selfie": selfie,
                "app_version": "test"}

    def submit(self, *records: dict[str, Any]) -> list[tuple[int, int]]:
        return [self.publish(topics.RAW, r["nip"], r) for r in records]

    def verdicts(self, event_ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
        """Wait until every event has a verdict row; returns them by event_id."""
        deadline = time.monotonic() + timeout
        client = connect(self.settings.infra)
        try:
            while True:
                rows, cols = client.execute(
                    "SELECT * FROM checkins FINAL WHERE event_id IN %(ids)s",
                    {"ids": tuple(event_ids)}, with_column_types=True)
                found = {r[0]: dict(zip([c for c, _ in cols], r, strict=True)) for r in rows}
                if len(found) == len(set(event_ids)) or time.monotonic() > deadline:
                    return found
                time.sleep(0.3)
        finally:
            client.disconnect()

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        client = connect(self.settings.infra)
        try:
            return client.execute(sql, params)
        finally:
            client.disconnect()

    def alerts(self, event_id: str, wait_for: str | None = None,
               timeout: float = 30) -> dict[str, dict[str, Any]]:
        """The event's alerts by rule; with ``wait_for``, until that rule's alert is stored
        (alerts and verdicts travel on different topics and may land a batch apart)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows("SELECT rule, severity, evidence FROM alerts FINAL "
                             "WHERE event_id = %(e)s", {"e": event_id})
            found = {r: {"severity": s, "evidence": json.loads(e)} for r, s, e in rows}
            if wait_for is None or wait_for in found or time.monotonic() > deadline:
                return found
            time.sleep(0.3)

    def on_topic(self, topic: topics.Topic, key: str) -> list[dict[str, Any]]:
        """Every record with this key on the topic now, decoded (what a consumer of the topic
        sees, before ClickHouse collapses anything)."""
        return [self.codecs[topic.name].decode(msg.value())
                for msg in topics.read_to_end(self.settings.infra, topic,
                                              f"test-read-{uuid.uuid4()}", "admin", stall_s=5)
                if msg.key() == key.encode()]

    def dead_letters(self, positions: list[tuple[int, int]],
                     timeout: float = 60) -> dict[tuple[int, int], dict[str, Any]]:
        """Dead letters whose source is one of these raw-topic positions."""
        from confluent_kafka import Consumer

        consumer = Consumer({**kafka_access.confluent(self.settings.infra, "admin"),
                             "group.id": f"test-dlq-{uuid.uuid4()}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([topics.DLQ.name])
        found: dict[tuple[int, int], dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        try:
            while len(found) < len(positions) and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                d = self.codecs[topics.DLQ.name].decode(msg.value())
                pos = (d["source_partition"], d["source_offset"])
                if d["source_topic"] == topics.RAW.name and pos in positions:
                    found[pos] = d
        finally:
            consumer.close()
        return found


def no_face_jpeg() -> bytes:
    """A real photo-like image with no face: a smooth gradient with some texture."""
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 255, (6, 6, 3)).astype(np.uint8), (480, 480),
                     interpolation=cv2.INTER_CUBIC)
    ok, data = cv2.imencode(".jpg", img)
    assert ok
    return data.tobytes()


def working_days(pipe: Pipeline, month: date, n: int) -> list[date]:
    """The month's first ``n`` working days."""
    cal = WorkCalendar(pipe.settings.attendance)
    days = [month + timedelta(days=k) for k in range(28)]
    return [d for d in days if cal.schedule_minutes(d) is not None][:n]


def wib(day: date, hh: int, mm: int) -> datetime:
    """``hh:mm`` of ``day`` in Bangka Tengah (WIB, UTC+7), as UTC."""
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=UTC) - timedelta(hours=7)


def new_office(pipe: Pipeline, prefix: str) -> str:
    """A test office of its own (the test geofence), published; its id."""
    office_id = f"{prefix}-{uuid.uuid4().hex[:6]}"
    pipe.publish(topics.OFFICES, office_id, {"office_id": office_id, "name": office_id,
                                             "geometry": json.dumps(OFFICE)})
    return office_id
