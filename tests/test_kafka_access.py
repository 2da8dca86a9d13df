"""Least privilege on the real broker: every client logs in (SASL/SCRAM) as one principal, and
each principal is refused what its role must not do; a client without a login gets nothing.
The ACLs are hadir/kafka_access.py's, created by `hadir infra up`."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from hadir import kafka_access, topics
from hadir.kafka_access import Principal

pytestmark = pytest.mark.infra

DENIED = "TOPIC_AUTHORIZATION_FAILED"


def _write(client: dict[str, Any], topic: topics.Topic) -> str | None:
    """The error code of producing one record (None: Kafka has it)."""
    from confluent_kafka import Producer

    producer = Producer({**client, "message.timeout.ms": 15000})
    errors: list[str | None] = []
    producer.produce(topic.name, key=b"198001012005011001", value=b"not even Avro",
                     on_delivery=lambda err, _m: errors.append(err and err.name()))
    producer.flush(20)
    return errors[0] if errors else "NO_DELIVERY_REPORT"


def _read(client: dict[str, Any], topic: topics.Topic, principal: Principal) -> str | None:
    """The error code of reading the topic's partition 0 from its start (None: no error), in
    a consumer group the principal may use."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    groups = kafka_access.GRANTS[principal].groups or ("test-",)  # the gateway has none
    group = groups[0] + (f"test-{uuid.uuid4()}" if groups[0].endswith("-") else "")
    consumer = Consumer({**client, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.list_topics(topic.name, timeout=10).topics[topic.name]
        if found.error is not None:
            return str(found.error.name())
        consumer.assign([TopicPartition(topic.name, 0, OFFSET_BEGINNING)])
        for _ in range(10):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error():
                return str(msg.error().name())
            if msg is not None:
                return None
        return None
    finally:
        consumer.close()


def _as(stack: Any, principal: Principal) -> dict[str, Any]:
    return kafka_access.confluent(stack.infra, principal)


def test_a_client_without_a_login_gets_nothing(stack) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    plain = {"bootstrap.servers": stack.infra.bootstrap}
    with pytest.raises(KafkaException):
        AdminClient(plain).list_topics(timeout=5)
    assert _write(plain, topics.RAW) is not None  # no check-in forged
    wrong = {**_as(stack, "compliance"), "sasl.password": "not the password"}
    with pytest.raises(KafkaException):
        AdminClient(wrong).list_topics(timeout=5)
    assert _write(wrong, topics.VERDICTS) is not None


@pytest.mark.parametrize(("principal", "topic"), [
    # an outsider's wishes from the issue, for every principal that is not the one writing it
    ("reviewer", topics.RAW), ("compliance", topics.RAW), ("sink", topics.RAW),
    ("core", topics.RAW), ("intake", topics.RAW),  # a check-in only comes through the edge
    ("gateway", topics.VERDICTS), ("reviewer", topics.VERDICTS), ("sink", topics.VERDICTS),
    ("compliance", topics.ALERTS),  # a verdict dated 2099, or a silenced alert
    ("gateway", topics.EXCUSES), ("intake", topics.EXCUSES), ("core", topics.EXCUSES),
    ("compliance", topics.EXCUSES),  # DINAS_LUAR granted to oneself
    ("gateway", topics.FACES), ("intake", topics.FACES), ("reviewer", topics.FACES),
    ("core", topics.FACES),  # one's own face template tombstoned (NO_TEMPLATE is REVIEW)
    ("gateway", topics.EMPLOYEES), ("reviewer", topics.EMPLOYEES), ("sink", topics.EMPLOYEES),
    ("gateway", topics.DECISIONS), ("compliance", topics.DECISIONS), ("sink", topics.DECISIONS),
    ("reviewer", topics.MONTHS), ("gateway", topics.USERS), ("reviewer", topics.USERS),
    ("reviewer", topics.DEVICES), ("intake", topics.DEVICES),
])
def test_a_principal_cannot_write_what_is_not_its_own(stack, principal: Principal,  # type: ignore[no-untyped-def]
                                                      topic: topics.Topic) -> None:
    assert _write(_as(stack, principal), topic) == DENIED


@pytest.mark.parametrize(("principal", "topic"), [
    # selfies live on the raw and dead-letter topics: only the intake, and the dashboard for a
    # signed-in reviewer, read the raw one
    ("compliance", topics.RAW), ("compliance", topics.DLQ), ("sink", topics.RAW),
    ("core", topics.RAW), ("gateway", topics.DLQ), ("reviewer", topics.DLQ),
    ("gateway", topics.FACES), ("core", topics.FACES), ("reviewer", topics.FACES),
    ("compliance", topics.VERDICTS), ("compliance", topics.USERS), ("gateway", topics.USERS),
])
def test_a_principal_cannot_read_what_is_not_its_business(stack, principal: Principal,  # type: ignore[no-untyped-def]
                                                          topic: topics.Topic) -> None:
    assert _read(_as(stack, principal), topic, principal) == DENIED


def test_each_principal_can_do_its_own_job(stack) -> None:  # type: ignore[no-untyped-def]
    """The refusals above are not a broker that refuses everything."""
    assert _read(_as(stack, "compliance"), topics.ALERTS, "compliance") is None
    assert _read(_as(stack, "reviewer"), topics.RAW, "reviewer") is None
    assert _read(_as(stack, "intake"), topics.FACES, "intake") is None
    assert _write(_as(stack, "reviewer"), topics.ACCESS_LOG) is None
    assert _write(_as(stack, "gateway"), topics.APPEALS) is None


def test_the_operations_guide_shows_the_acls_there_are() -> None:
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    assert kafka_access.grants_table() in guide, "regenerate it: python -m hadir.kafka_access"
