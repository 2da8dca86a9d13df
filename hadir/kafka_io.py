"""One-off reads and writes of Hadir's topics for the CLI's commands: records published and
acknowledged by every in-sync replica, and a compacted topic's latest value per key."""

from __future__ import annotations

import uuid
from typing import Any

from hadir import topics
from hadir.config import Settings
from hadir.kafka_access import Principal, confluent
from hadir.serde import AvroCodec, Registry


def publish(settings: Settings, topic: topics.Topic, records: list[tuple[str, dict[str, Any]]],
            principal: Principal = "admin") -> None:
    """Each (key, record) on ``topic`` as ``principal``; returns once Kafka acknowledged them
    all."""
    from confluent_kafka import Producer

    codec = AvroCodec(topic, Registry(settings.infra.registry))
    producer = Producer({**confluent(settings.infra, principal), "acks": "all",
                         "enable.idempotence": True, "partitioner": "murmur2_random"})
    failed: list[str] = []
    for key, record in records:
        producer.produce(topic.name, key=key.encode(), value=codec.encode(record),
                         on_delivery=lambda err, _m: failed.append(str(err)) if err else None)
    if producer.flush(30) or failed:
        raise TimeoutError(f"Kafka did not acknowledge {topic.name}: {failed or 'timeout'}")


def latest(settings: Settings, topic: topics.Topic,
           principal: Principal = "admin") -> dict[bytes, dict[str, Any] | None]:
    """Each key's latest value on a compacted topic (None: deleted), read as ``principal``."""
    codec = AvroCodec(topic, Registry(settings.infra.registry))
    return {msg.key(): None if msg.value() is None else codec.decode(msg.value())
            for msg in topics.read_to_end(settings.infra, topic, f"hadir-cli-{uuid.uuid4()}",
                                          principal)}
