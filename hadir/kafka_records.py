"""Kafka writes and reads the personal-data commands (erase, rekey, retention) need beyond
hadir/kafka_io.py: records found with the partition they lie on, tombstones and replacements
written to that same partition, and topic retention.

Why the partition: a key's records must stay on one partition for compaction to keep only the
newest, and for a follower (the intake's face templates) to see them in order. Records on
these topics were written by several producers (enrolment, replay, kafka_io.publish), not all
with the same partitioner, so a tombstone or a re-sealed template goes where the key's record
actually is, never where a partitioner would put it now.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hadir import topics
from hadir.config import Settings


def _kafka_config(settings: Settings) -> dict[str, Any]:
    """The one place this module's confluent-kafka clients get their connection settings
    (Kafka's authentication lives in hadir/kafka_access.py; the CLI's commands run as the
    admin principal)."""
    from hadir import kafka_access

    return kafka_access.confluent(settings.infra, "admin")


@dataclass(frozen=True)
class Found:
    """A record as it lies on a topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def read_all(settings: Settings, topic: topics.Topic | topics.Changelog) -> Iterator[Found]:
    """Every record on the topic now, in each partition's order."""
    for msg in topics.read_to_end(settings.infra, topic,  # type: ignore[arg-type]
                                  f"hadir-cli-{uuid.uuid4()}", "admin"):
        yield Found(msg.partition(), msg.offset(), msg.key(), msg.value())


def newest(settings: Settings, topic: topics.Topic | topics.Changelog) -> dict[bytes, Found]:
    """Each key's newest record (a tombstone included) with its partition. A key found on
    several partitions keeps the record of each: the dict holds the one read last, and
    :func:`placements` all of them."""
    return {f.key: f for f in read_all(settings, topic) if f.key is not None}


def placements(settings: Settings, topic: topics.Topic | topics.Changelog
               ) -> dict[bytes, dict[int, Found]]:
    """Each key's newest record per partition it was ever written to."""
    out: dict[bytes, dict[int, Found]] = {}
    for f in read_all(settings, topic):
        if f.key is not None:
            out.setdefault(f.key, {})[f.partition] = f
    return out


def write(settings: Settings, topic: str,
          records: list[tuple[int, bytes, bytes | None]]) -> list[int]:
    """Each (partition, key, value) on ``topic`` (a None value is a tombstone); returns their
    offsets once every in-sync replica has them."""
    from confluent_kafka import Producer

    if not records:
        return []
    producer = Producer({**_kafka_config(settings), "acks": "all", "enable.idempotence": True})
    offsets: list[int | None] = [None] * len(records)
    failed: list[str] = []

    def delivered(i: int) -> Any:
        def done(err: Any, msg: Any) -> None:
            if err:
                failed.append(str(err))
            else:
                offsets[i] = msg.offset()
        return done

    for i, (partition, key, value) in enumerate(records):
        producer.produce(topic, key=key, value=value, partition=partition,
                         on_delivery=delivered(i))
    if producer.flush(30) or failed or None in offsets:
        raise TimeoutError(f"Kafka did not acknowledge {topic}: {failed or 'timeout'}")
    return [o for o in offsets if o is not None]


def retention(settings: Settings, names: list[str]) -> dict[str, int | None]:
    """Each topic's ``retention.ms`` now (None: no such topic)."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = AdminClient(_kafka_config(settings))
    existing = set(admin.list_topics(timeout=10).topics)
    out: dict[str, int | None] = {n: None for n in names}
    wanted = [ConfigResource(ResourceType.TOPIC, n) for n in names if n in existing]
    for resource, future in admin.describe_configs(wanted).items():
        entry = future.result(timeout=30).get("retention.ms")
        out[resource.name] = int(entry.value) if entry is not None else None
    return out


def set_retention(settings: Settings, changes: dict[str, int]) -> None:
    """Set ``retention.ms`` of existing topics, leaving their other settings as they are."""
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    if not changes:
        return
    admin = AdminClient(_kafka_config(settings))
    resources = [ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry("retention.ms", str(ms), incremental_operation=AlterConfigOpType.SET)])
        for name, ms in changes.items()]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)
