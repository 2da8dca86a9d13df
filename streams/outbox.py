"""What a stage writes for one batch, handed to Kafka as whole record batches.

faust's ``Topic.send`` makes a future, callbacks and an accumulator entry for every message,
and a table assignment does the same for its changelog record; in the core worker that was
most of the CPU spent per check-in. An :class:`Outbox` collects a batch's records, appends
them per topic partition to aiokafka's record-batch builder (one C call each) and gives the
producer whole batches: one future per partition batch instead of one per message. Records
go to the partition the producers' default partitioner picks for their key (murmur2, as
aiokafka and the Java client), so keys land where they did before. For a batched topic
(``hadir.topics.Topic.batched``) the items for one partition become a single record.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2


@functools.lru_cache(maxsize=1 << 16)  # keys (NIPs, devices) recur; murmur2 is pure Python
def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Outbox:
    """Records to send, sent together by :meth:`send`, which returns once Kafka has them all.
    ``producer`` gives the started producer (a faust app's: ``app.producer._ensure_producer``)."""

    def __init__(self, producer: Callable[[], AIOKafkaProducer]) -> None:
        self._producer = producer
        self._records: list[tuple[str, bytes | None, bytes, int | None]] = []
        self._items: dict[tuple[str, int], list[bytes]] = {}
        self._joins: dict[str, Callable[[list[bytes]], bytes]] = {}
        self._spread = itertools.count()  # partitions for records without a key, in turn

    def add(self, topic: str, key: bytes | None, value: bytes,
            partition: int | None = None) -> None:
        self._records.append((topic, key, value, partition))

    def add_item(self, topic: str, key: bytes, partitions: int, item: bytes,
                 join: Callable[[list[bytes]], bytes]) -> None:
        """An encoded item for a batched topic of ``partitions`` partitions: it goes, in order,
        into the one record sent to its key's partition, which ``join`` makes of the items."""
        self._items.setdefault((topic, partition_for(key, partitions)), []).append(item)
        self._joins[topic] = join

    def __len__(self) -> int:
        """Records to send (the items for one batched partition count as one)."""
        return len(self._records) + len(self._items)

    async def send(self) -> None:
        """Send every record added since the last call and wait until Kafka acknowledged all
        of them (an error in any batch is raised here)."""
        records, self._records = self._records, []
        records.extend((topic, None, self._joins[topic](items), partition)
                       for (topic, partition), items in self._items.items())
        self._items.clear()
        if not records:
            return
        producer = self._producer()
        counts: dict[str, int] = {}
        open_batches: dict[tuple[str, int], Any] = {}
        sent: list[asyncio.Future[Any]] = []

        async def ship(topic: str, partition: int, batch: Any) -> None:
            batch.close()  # complete: no reason to linger
            sent.append(await producer.send_batch(batch, topic, partition=partition))

        for topic, key, value, partition in records:
            if partition is None:
                if topic not in counts:
                    await producer.client._wait_on_metadata(topic)
                    counts[topic] = len(producer.client.cluster.partitions_for_topic(topic))
                partition = (partition_for(key, counts[topic]) if key is not None
                             else next(self._spread) % counts[topic])
            where = (topic, partition)
            batch = open_batches.get(where)
            if batch is None:
                batch = open_batches[where] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                await ship(topic, partition, batch)
                batch = open_batches[where] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # a first record always fits
        for (topic, partition), batch in open_batches.items():
            await ship(topic, partition, batch)
        await asyncio.gather(*sent)
