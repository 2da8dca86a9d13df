"""One-off reads and writes of Hadir's topics for the CLI's commands: records published and
acknowledged by every in-sync replica, and a compacted topic's latest value per key."""

from __future__ import annotations

import uuid
from typing import Any

from hadir import topics
from hadir.config import Settings
from hadir.serde import AvroCodec, Registry


def publish(settings: Settings, topic: topics.Topic,
            records: list[tuple[str, dict[str, Any]]]) -> None:
    """Each (key, record) on ``topic``; returns once Kafka acknowledged them all."""
    from confluent_kafka import Producer

    codec = AvroCodec(topic, Registry(settings.infra.registry))
    producer = Producer({"bootstrap.servers": settings.infra.bootstrap, "acks": "all",
                         "enable.idempotence": True, "partitioner": "murmur2_random"})
    failed: list[str] = []
    for key, record in records:
        producer.produce(topic.name, key=key.encode(), value=codec.encode(record),
                         on_delivery=lambda err, _m: failed.append(str(err)) if err else None)
    if producer.flush(30) or failed:
        raise TimeoutError(f"Kafka did not acknowledge {topic.name}: {failed or 'timeout'}")


def latest(settings: Settings, topic: topics.Topic) -> dict[bytes, dict[str, Any] | None]:
    """Each key's latest value on a compacted topic (None: deleted)."""
    codec = AvroCodec(topic, Registry(settings.infra.registry))
    return {msg.key(): None if msg.value() is None else codec.decode(msg.value())
            for msg in topics.read_to_end(settings.infra, topic, f"hadir-cli-{uuid.uuid4()}")}
