"""``hadir deadletters``: what could not be processed, listed from ClickHouse (metadata and the
error, never the record), and sent again to its source topic once the cause is fixed (a face
model restored, a registry back, a bug mended): the original bytes are on hadir.checkins.dlq for
as long as the raw topic keeps check-ins."""

from __future__ import annotations

import uuid
from typing import Any

from hadir import kafka_access, topics
from hadir.config import Settings
from hadir.serde import AvroCodec, Registry, SerdeError
from sinks.connection import rows

COLUMNS = ["failed_at", "stage", "source_topic", "source_partition", "source_offset",
           "event_id", "nip", "error"]


def listing(settings: Settings, stage: str | None = None, limit: int = 50
            ) -> list[dict[str, Any]]:
    return rows(settings.infra, f"SELECT {', '.join(COLUMNS)} FROM dead_letters FINAL"
                + (" WHERE stage = %(stage)s" if stage else "")
                + " ORDER BY failed_at DESC LIMIT %(limit)s", {"stage": stage, "limit": limit})


def replay(settings: Settings, event_ids: set[str] | None) -> dict[str, Any]:
    """Publish again, to the raw topic, the dead-lettered check-ins with these event ids (all
    of them with None). Only records that are raw check-ins go back: a later stage's dead
    letter holds that stage's input, which the raw topic must not carry."""
    from confluent_kafka import Producer

    registry = Registry(settings.infra.registry)
    dlq, raw = AvroCodec(topics.DLQ, registry), AvroCodec(topics.RAW, registry)
    chosen: dict[str, tuple[bytes | None, bytes]] = {}
    skipped: list[str] = []
    for msg in topics.read_to_end(settings.infra, topics.DLQ, f"hadir-cli-{uuid.uuid4()}",
                                  "admin"):
        letter = dlq.decode(msg.value())
        if letter["source_topic"] != topics.RAW.name or letter["value"] is None:
            continue
        try:
            event_id = str(raw.decode(letter["value"])["event_id"])
        except (SerdeError, KeyError):
            skipped.append(f"{letter['source_topic']}[{letter['source_partition']}]@"
                           f"{letter['source_offset']}: not a raw check-in ({letter['stage']})")
            continue
        if event_ids is None or event_id in event_ids:
            chosen[event_id] = (letter["key"], letter["value"])  # the latest letter of each
    missing = sorted((event_ids or set()) - set(chosen))
    producer = Producer({**kafka_access.confluent(settings.infra, "admin"), "acks": "all",
                         "enable.idempotence": True, "partitioner": "murmur2_random",
                         "message.max.bytes": 4_000_000})
    failed: list[str] = []
    for key, value in chosen.values():
        producer.produce(topics.RAW.name, key=key, value=value,
                         on_delivery=lambda err, _m: failed.append(str(err)) if err else None)
    if producer.flush(60) or failed:
        raise TimeoutError(f"Kafka did not acknowledge every check-in: {failed or 'timeout'}")
    return {"republished": sorted(chosen), "not_found": missing, "skipped": skipped}
