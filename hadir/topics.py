"""Every Kafka topic Hadir uses: name, key, value schema, partitions, cleanup policy.

External contract (DESIGN.md): raw check-ins, verdicts, fraud alerts, dead letters. Reference
data travels on compacted topics keyed by its natural key, so a new worker rebuilds its tables
by reading them from the start and an update (a new office polygon, a re-enrolled face) is just
a newer record under the same key. Internal topics carry a check-in between stages.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hadir.config import InfraSettings

if TYPE_CHECKING:  # hadir.kafka_access grants on these topics
    from hadir.kafka_access import Principal


@dataclass(frozen=True)
class Topic:
    name: str
    schema: str  # file name in schemas/ without .avsc
    key: str  # what the record key holds, for people
    compacted: bool = False
    raw: bool = False  # the topic the face stage scales on: gets raw_partitions
    # Each record carries the check-ins of one stage batch for one partition (an array of the
    # schema's records, hadir/serde.py `value_schema`): the next stage then takes one Kafka
    # record per batch and partition instead of one per check-in (faust's cost per record
    # consumed was most of the core worker's CPU). Only between Hadir's own stages.
    batched: bool = False
    # How long records are kept: an event topic's default is 7 days (the appeal window for
    # the selfies on the raw topic); a compacted topic keeps each key's latest value unless
    # this is set, and then forgets keys not written for that long.
    retention_days: int | None = None


RAW = Topic("hadir.checkins.raw", "CheckinSubmitted", "NIP", raw=True)
VERDICTS = Topic("hadir.checkins.verdicts", "CheckinVerdict", "NIP")
ALERTS = Topic("hadir.fraud.alerts", "FraudAlert", "NIP")
DLQ = Topic("hadir.checkins.dlq", "DeadLetter", "none")
EMPLOYEES = Topic("hadir.ref.employees", "Employee", "NIP", compacted=True)
OFFICES = Topic("hadir.ref.offices", "Office", "office_id", compacted=True)
FACES = Topic("hadir.ref.faces", "FaceTemplate", "NIP", compacted=True)
EXCUSES = Topic("hadir.ref.excuses", "Excuse", "nip|date_from|kind", compacted=True)
FACED = Topic("hadir.internal.faced.batches", "CheckinInProgress", "NIP (one partition's)",
              batched=True)
BY_DEVICE = Topic("hadir.internal.bydevice.batches", "CheckinInProgress",
                  "device_id (one partition's)", batched=True)
SELFIES = Topic("hadir.internal.selfies", "SelfieHash", "index entry", compacted=True)
# The phone edge's own state (hadir/gateway): registered keys, activation codes (hashed), and
# which event ids it accepted (kept a day longer than the raw topic keeps the check-ins).
DEVICES = Topic("hadir.ref.devices", "DeviceKey", "key_id", compacted=True)
ACTIVATIONS = Topic("hadir.ref.activations", "ActivationCode", "code_hash", compacted=True)
ACCEPTED = Topic("hadir.gateway.accepted", "AcceptedCheckin", "event_id", compacted=True,
                 retention_days=8)

# What people decide about what Hadir found (DESIGN.md, decision and request topics), and which
# months are closed for pay.
DECISIONS = Topic("hadir.reviews.decisions", "ReviewDecision", "event_id", compacted=True)
APPEALS = Topic("hadir.appeals", "Appeal", "NIP", retention_days=400)
EXCUSE_REQUESTS = Topic("hadir.excuse.requests", "ExcuseRequest", "NIP", retention_days=400)
MONTHS = Topic("hadir.ref.months", "MonthStatus", "YYYY-MM", compacted=True)
# The dashboard's accounts, and who saw personal data through it.
USERS = Topic("hadir.ref.users", "DashboardUser", "username", compacted=True)
ACCESS_LOG = Topic("hadir.audit.access", "AccessLogEntry", "username", retention_days=400)

ALL: tuple[Topic, ...] = (RAW, VERDICTS, ALERTS, DLQ, EMPLOYEES, OFFICES, FACES, EXCUSES, FACED,
                          BY_DEVICE, SELFIES, DEVICES, ACTIVATIONS, ACCEPTED, DECISIONS,
                          APPEALS, EXCUSE_REQUESTS, MONTHS, USERS, ACCESS_LOG)


@dataclass(frozen=True)
class Changelog:
    """A faust table's changelog topic (JSON values, no schema), partitioned like the input
    topic of the stage that owns the table. Created with the other topics: a worker that had
    to create it while joining its consumer group could miss it in the group's metadata and
    stall."""

    app: str
    table: str
    like: Topic

    @property
    def name(self) -> str:
        return f"{self.app}-{self.table}-changelog"  # faust's naming


CORE_APP = "hadir-core"
PERSON_STATE = Changelog(CORE_APP, "person-state", FACED)
DEVICE_STATE = Changelog(CORE_APP, "device-state", BY_DEVICE)
CHANGELOGS: tuple[Changelog, ...] = (PERSON_STATE, DEVICE_STATE)


def partitions(topic: Topic, infra: InfraSettings) -> int:
    if topic.raw or topic in (FACED,):
        return infra.raw_partitions
    return infra.partitions


def _topic_config(t: Topic, days: int | None = None) -> dict[str, str]:
    retention = {"retention.ms": str((days or t.retention_days or 7) * 24 * 3600 * 1000)}
    if not t.compacted:
        return retention
    if t.retention_days:
        return {"cleanup.policy": "compact,delete", "min.cleanable.dirty.ratio": "0.1",
                **retention}
    return {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}


def create_all(infra: InfraSettings, timeout: float = 30.0,
               retention_days: dict[str, int] | None = None) -> list[str]:
    """Create the topics (and the table changelogs) that do not exist yet; returns the names
    created. ``retention_days``: a topic's retention where configuration sets it (the selfie
    topics': privacy.selfies_days)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from hadir import kafka_access

    admin = AdminClient(kafka_access.confluent(infra, "admin"))
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = [
        NewTopic(t.name, num_partitions=partitions(t, infra), replication_factor=1,
                 config=_topic_config(t, (retention_days or {}).get(t.name)))
        for t in ALL if t.name not in existing
    ] + [
        NewTopic(c.name, num_partitions=partitions(c.like, infra), replication_factor=1,
                 config={"cleanup.policy": "compact"})
        for c in CHANGELOGS if c.name not in existing
    ]
    if not new:
        return []
    for future in admin.create_topics(new, operation_timeout=timeout).values():
        try:
            future.result()
        except Exception as exc:  # TOPIC_ALREADY_EXISTS from a concurrent creator is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return [t.topic for t in new]


def consumer_from_now(infra: InfraSettings, topic: Topic, group: str,
                      principal: Principal) -> Any:
    """A confluent-kafka consumer assigned every partition of ``topic`` at its current end:
    it sees only what is published from now on (followers, replay's dead-letter watch, bench)."""
    from confluent_kafka import Consumer, TopicPartition

    from hadir import kafka_access

    consumer = Consumer({**kafka_access.confluent(infra, principal), "group.id": group,
                         "enable.auto.commit": False})
    parts = consumer.list_topics(topic.name, timeout=10).topics[topic.name].partitions
    consumer.assign([TopicPartition(topic.name, p, _log_end(consumer, topic.name, p))
                     for p in parts])
    return consumer


def _log_end(consumer: Any, topic: str, partition: int, timeout_s: float = 30.0) -> int:
    """The partition's end offset. Asked again while the error is one Kafka says passes (a
    partition without a leader for a moment, as just after a broker restarts)."""
    from confluent_kafka import KafkaException, TopicPartition

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return int(consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                      timeout=timeout_s)[1])
        except KafkaException as exc:
            if not exc.args[0].retriable() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_to_end(infra: InfraSettings, topic: Topic, group: str, principal: Principal,
                stall_s: float = 10.0) -> Iterator[Any]:
    """Every record on ``topic`` now, from the first offset to each partition's end as of the
    call (confluent-kafka messages; errors skipped). TimeoutError when a partition stalls."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from hadir import kafka_access

    consumer = Consumer({**kafka_access.confluent(infra, principal), "group.id": group,
                         "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic.name, timeout=10).topics[topic.name].partitions
        ends = {p: _log_end(consumer, topic.name, p) for p in parts}
        left = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic.name, p, OFFSET_BEGINNING) for p in left])
        while left:
            msg = consumer.poll(stall_s)
            if msg is None:
                raise TimeoutError(f"{topic.name}: partitions {sorted(left)} not read to the end")
            if msg.error():
                continue
            yield msg
            if msg.offset() + 1 >= ends[msg.partition()]:
                left.discard(msg.partition())
    finally:
        consumer.close()
