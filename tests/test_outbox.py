"""streams/outbox.py against the real broker: records land where the producers' default
partitioner puts their key, in order per partition, across as many record batches as needed."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from hadir import kafka_access
from streams.outbox import Outbox, partition_for


def test_keys_go_to_the_partition_the_default_partitioner_picks() -> None:
    default = DefaultPartitioner()
    every = list(range(6))
    for i in range(500):
        key = f"19800101200001{i:04d}".encode()
        assert partition_for(key, 6) == default(key, every, every)


@pytest.mark.infra
def test_a_batch_of_records_arrives_whole_and_in_order(stack) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka.admin import AdminClient, NewTopic

    client = kafka_access.aiokafka(stack.infra, "admin")
    topic = f"hadir.test.outbox.{uuid.uuid4().hex[:6]}"
    admin = AdminClient(kafka_access.confluent(stack.infra, "admin"))
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result()
    keyed = [(f"nip-{i % 17}".encode(), f"{i:05d}".encode() * 20) for i in range(300)]

    async def run() -> dict[int, list[tuple[bytes | None, bytes]]]:
        # Small batches, so that 300 records of 100 bytes need many of them.
        producer = AIOKafkaProducer(max_batch_size=2048, acks="all", **client)
        await producer.start()
        try:
            outbox = Outbox(lambda: producer)
            for key, value in keyed:
                outbox.add(topic, key, value)
            for n in range(3):
                outbox.add(topic, None, f"no key {n}".encode())
            outbox.add(topic, b"big", b"x" * 4096)  # larger than a batch: goes in one alone
            assert len(outbox) == 304
            await outbox.send()
            assert len(outbox) == 0
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, **client, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        got: dict[int, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while sum(map(len, got.values())) < 304:
                assert asyncio.get_running_loop().time() < deadline, "records are missing"
                for tp, records in (await consumer.getmany(timeout_ms=5000)).items():
                    got[tp.partition].extend((r.key, r.value) for r in records)
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(run())
    expected: dict[int, list[tuple[bytes | None, bytes]]] = defaultdict(list)
    for key, value in [*keyed, (b"big", b"x" * 4096)]:
        expected[partition_for(key, 3)].append((key, value))
    for partition in range(3):
        assert [r for r in got[partition] if r[0] is not None] == expected[partition]
    unkeyed = sorted(v for records in got.values() for k, v in records if k is None)
    assert unkeyed == [b"no key 0", b"no key 1", b"no key 2"]
    assert sum(1 for records in got.values() if any(k is None for k, _ in records)) == 3


@pytest.mark.infra
def test_items_joined_decode_as_the_batched_topics_record(stack) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from hadir import topics
    from hadir.serde import AvroCodec, Registry, SerdeError
    from processors.events import Checkin, CheckinType, Finding, Reason
    from streams.records import checkin_from_progress, in_progress

    # Decoded as the core worker does: times stay epoch milliseconds (streams/records.py).
    codec = AvroCodec(topics.FACED, Registry(stack.infra.registry), logical_types=False)
    at = datetime(2026, 11, 30, 0, 30, 1, 250_000, tzinfo=UTC)
    records = [in_progress(Checkin(str(uuid.uuid4()), f"1980010120000100{i:02d}", "dev",
                                   CheckinType.IN, at, at, -2.4, 106.4, 10.0, False),
                           [Finding(Reason.NO_SELFIE, {})] * i, source=f"raw[0]@{i}")
               for i in range(3)]
    for n in (0, 1, 3):
        joined = codec.join([codec.encode_item(r) for r in records[:n]])
        assert codec.decode(joined) == {"checkins": records[:n]}
    back = checkin_from_progress(codec.decode(codec.join([codec.encode_item(records[2])]))
                                 ["checkins"][0])
    assert (back.server_time, back.client_time, back.nip) == (at, at, records[2]["nip"])
    with pytest.raises(SerdeError, match="cannot encode item"):
        codec.encode_item({**records[0], "lat": "not a number"})
