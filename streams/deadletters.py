"""Dead letters: where a record no stage can process goes, instead of stopping its partition.

One writer for every stage and the sink, and one decoding loop for the stages' inputs. The
dead letter keeps the record's bytes (or, when too large, their size and hash) and where it
came from, so `hadir deadletters replay` can send it through again once the cause is fixed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from hadir import topics
from hadir.serde import AvroCodec, Registry, SerdeError
from processors.fraud import FraudPolicy
from streams.records import dead_letter, invalid_input, readable

log = logging.getLogger("hadir.deadletters")

T = TypeVar("T")


class Sender(Protocol):
    """Where outputs go: a stage's :class:`streams.outbox.Outbox`, or the sink's producer."""

    def add(self, topic: str, key: bytes | None, value: bytes) -> None: ...


class Undecodable(ValueError):
    """A stage's input record that cannot be processed; ``record``: as far as it was read."""

    def __init__(self, reason: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.record = record


class DeadLetters:
    """The one dead-letter writer of every stage. A check-in whose event id and NIP can be
    read also gets its verdict, REJECTED with INVALID_INPUT, and the alert: the ASN sees why
    on the phone and can appeal, instead of a silent TK day."""

    def __init__(self, registry: Registry, stage: str, policy: FraudPolicy | None) -> None:
        """``policy`` None: no verdicts (the sink, whose input is Hadir's own output)."""
        self.codec = AvroCodec(topics.DLQ, registry)
        self.verdicts = AvroCodec(topics.VERDICTS, registry)
        self.alerts = AvroCodec(topics.ALERTS, registry)
        self.stage = stage
        self.policy = policy

    def add(self, outbox: Sender, event: Any, error: str,
            record: dict[str, Any] | None = None) -> None:
        """The record of ``event``, which failed; ``record``: the check-in as far as it
        could be decoded."""
        m = event.message
        self.write(outbox, m.topic, m.partition, m.offset, m.key, m.value, error, record)

    def add_checkin(self, outbox: Sender, event: Any, codec: AvroCodec, n: int,
                    error: str) -> None:
        """Check-in ``n`` of a batched record, which failed alone: the dead letter holds that
        check-in as the stage received it (not the whole batch, whose other check-ins have
        their verdicts) and names where it entered Hadir, its raw-topic position; the batch
        record's own position is added to the error."""
        m = event.message
        where = f"{m.topic}[{m.partition}]@{m.offset}"
        try:
            original = codec.decode(m.value)["checkins"][n]  # before the step changed it
            value = codec.join([codec.encode_item(original)])
            source = _RAW_POSITION.fullmatch(original.get("source_offset") or "")
        except (SerdeError, KeyError, IndexError):
            self.add(outbox, event, error)
            return
        if source is None:
            self.write(outbox, m.topic, m.partition, m.offset, m.key, value, error, original)
            return
        self.write(outbox, source[1], int(source[2]), int(source[3]), m.key, value,
                  f"{error} (in {where})", original)

    def write(self, outbox: Sender, topic: str, partition: int, offset: int,
              key: bytes | None, value: bytes | None, error: str,
              record: dict[str, Any] | None = None) -> None:
        """The dead letter of the record at ``topic[partition]@offset``."""
        log.warning("dead letter %s[%d]@%d: %s", topic, partition, offset, error)
        letter = dead_letter(topic, partition, offset, key, value, error, self.stage,
                             readable(record))
        outbox.add(topics.DLQ.name, None, self.codec.encode(letter))
        if self.policy is None:
            return
        decided = invalid_input(record, error, self.policy, datetime.now(UTC))
        if decided is not None:
            verdict, alert = decided
            outbox.add(topics.VERDICTS.name, verdict["nip"].encode(),
                       self.verdicts.encode(verdict))
            outbox.add(topics.ALERTS.name, alert["nip"].encode(), self.alerts.encode(alert))


# A check-in's source_offset as the intake wrote it: topic[partition]@offset.
_RAW_POSITION = re.compile(r"(.+)\[(\d+)\]@(\d+)")


def decoded(events: list[Any], decode: Callable[[bytes], T], dlq: DeadLetters,
            outbox: Sender) -> list[tuple[Any, T]]:
    """Each event with what ``decode`` made of its value, in order; an event ``decode`` refuses
    (:class:`Undecodable`, or a record that is not Avro of its schema) becomes a dead letter."""
    out = []
    for event in events:
        try:
            out.append((event, decode(event.value)))
        except Undecodable as exc:
            dlq.add(outbox, event, str(exc), exc.record)
        except (SerdeError, KeyError) as exc:
            dlq.add(outbox, event, f"{type(exc).__name__}: {exc}")
    return out
