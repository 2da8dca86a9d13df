"""The core app: the person and device stages, with their tables and the reference data they
follow. The intake (streams/intake.py) scales apart from it, because the face stage is the
expensive one (docs/architecture.md)::

    hadir.internal.faced.batches (by NIP) --[person: geofence, travel, skew]--> ...bydevice.batches
    hadir.internal.bydevice.batches (by device) --[device: shared device, verdict]--> verdicts,
        alerts

The internal topics are batched (``hadir.topics.Topic.batched``): a record holds the check-ins
a stage batch sends to one partition, so faust handles one record per batch and partition.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import faust

from hadir import kafka_access, topics
from hadir.config import Settings
from hadir.serde import AvroCodec, Registry
from processors.attendance import Excuse, ExcuseKind
from processors.events import NIP_PATTERN, TEXT_MAX
from processors.geo import GeofenceError, Geofences, office_from_feature
from streams.core import Reference, device_step, person_step
from streams.deadletters import DeadLetters
from streams.outbox import Outbox
from streams.reference import ReferenceFollower
from streams.stage import (
    KeyPartitionedTable,
    crash_only,
    keyed_batches,
    new_app,
    raw_topic,
)


def build_core_app(settings: Settings) -> faust.App:
    """The person and device stages, with their tables and the reference data they follow."""
    app = new_app(topics.CORE_APP, settings, "core")
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
    follower = ReferenceFollower(kafka_access.aiokafka(settings.infra, "core"), {
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
        return
    if not re.fullmatch(NIP_PATTERN, value["nip"]) or len(value["office_id"]) > TEXT_MAX:
        raise ValueError(f"employee record with NIP {value['nip'][:40]!r} and office id of "
                         f"{len(value['office_id'])} characters: out of bounds")
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
