"""Reference data held by every worker: the compacted topics read from the beginning into memory
and followed for updates (a hand-made global table: every worker sees every partition, so it can
decide alone; an update such as a new office polygon takes effect without a restart).

A check-in that refers to something not (yet) known makes the stage call :meth:`catch_up`, which
waits until this worker has read up to the topics' current end: a check-in published right after
its employee is never judged against stale reference data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from hadir.serde import AvroCodec, SerdeError

log = logging.getLogger("hadir.reference")

Handler = Callable[[bytes | None, dict[str, Any] | None], None]


class ReferenceFollower:
    """Follows some compacted topics and calls ``handlers[topic]`` for each record (the value is
    None for a tombstone)."""

    def __init__(self, client: dict[str, Any], codecs: dict[str, AvroCodec],
                 handlers: dict[str, Handler]) -> None:
        """``client``: aiokafka's connection arguments (hadir/kafka_access.py, as whom)."""
        self.client = client
        self.codecs = codecs
        self.handlers = handlers
        self.ready = asyncio.Event()
        self.positions: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._progress = asyncio.Condition()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", **self.client)
        await consumer.start()
        self._consumer = consumer
        try:
            tps = [TopicPartition(t, p) for t in self.handlers
                   for p in sorted(consumer.partitions_for_topic(t) or
                                   await self._partitions(consumer, t))]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            self.positions = {tp: 0 for tp in tps}
            if all(o == 0 for o in end.values()):
                self.ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, messages in batches.items():
                    for m in messages:
                        self._apply(tp.topic, m.key, m.value, m.offset)
                    self.positions[tp] = messages[-1].offset + 1
                if not self.ready.is_set() and all(
                        self.positions[tp] >= end[tp] for tp in tps):
                    self.ready.set()
                async with self._progress:
                    self._progress.notify_all()
        finally:
            await consumer.stop()

    @staticmethod
    async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
        await consumer._client.force_metadata_update()
        return consumer.partitions_for_topic(topic) or {0}

    def _apply(self, topic: str, key: bytes | None, value: bytes | None, offset: int) -> None:
        try:
            record = None if value is None else self.codecs[topic].decode(value)
            self.handlers[topic](key, record)
        except (SerdeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Reference records are published by `hadir replay` after validation; a bad one is
            # logged and skipped so the rest of the reference data still loads.
            log.error("skipping bad reference record %s@%d: %s", topic, offset, exc)

    async def catch_up(self, timeout: float = 10.0) -> bool:
        """Wait until every followed partition is read up to its end as of now."""
        if self._consumer is None:
            await asyncio.wait_for(self.ready.wait(), timeout)
        assert self._consumer is not None
        end = await self._consumer.end_offsets(list(self.positions))

        def done() -> bool:
            return all(self.positions.get(tp, 0) >= o for tp, o in end.items())

        try:
            async with self._progress:
                await asyncio.wait_for(self._progress.wait_for(done), timeout)
        except TimeoutError:
            # The check-ins are judged with what is known (an ASN not seen yet: NO_TEMPLATE
            # or UNKNOWN_EMPLOYEE, for a person to look at); say why.
            behind = {f"{tp.topic}[{tp.partition}]": o - self.positions.get(tp, 0)
                      for tp, o in end.items() if self.positions.get(tp, 0) < o}
            log.warning("reference data not caught up after %.0fs (records behind: %s)",
                        timeout, behind)
            return False
        return True
