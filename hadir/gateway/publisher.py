"""Records to Kafka from the event loop, each awaited until the broker acknowledged it.

One librdkafka producer, idempotent with acks=all: an acknowledged record is on every in-sync
replica and was written once, whatever retries happened underneath. A record the broker has
not acknowledged within ``timeout_s`` fails (librdkafka's ``message.timeout.ms``), so the caller
answers 503 and the phone keeps its check-in queued; if the broker did write it after all (an
acknowledgement lost in flight), the phone's retry carries the same event_id, which the
pipeline drops as already seen.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError, Producer


class Unavailable(Exception):
    """Kafka did not acknowledge the record in time, or refused it."""


class Publisher:
    def __init__(self, client: dict[str, Any], timeout_s: float) -> None:
        """``client``: the connection settings (hadir/kafka_access.py, as whom)."""
        self.timeout_s = timeout_s
        self.failures = 0  # delivery failures, for /metrics
        self._producer = Producer({
            **client, "enable.idempotence": True, "acks": "all",
            "linger.ms": 2,  # a phone waits for the acknowledgement: batch only what is there
            "message.timeout.ms": int(timeout_s * 1000),
            # murmur2 like the Java client and aiokafka, so keys land where faust expects them
            "partitioner": "murmur2_random", "message.max.bytes": 4_000_000,
            "log.connection.close": False})
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="kafka-acks", daemon=True)
        self._poller.start()

    def _poll(self) -> None:  # delivery callbacks run here
        while self._running:
            self._producer.poll(0.05)

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Returns once the broker acknowledged the record; Unavailable if it did not."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            loop.call_soon_threadsafe(_settle, done, err)

        try:
            self._producer.produce(topic, key=key, value=value, on_delivery=delivered)
        except BufferError:
            self.failures += 1
            raise Unavailable("the producer's queue is full") from None
        except Exception as exc:  # KafkaException: a fatal producer state
            self.failures += 1
            raise Unavailable(str(exc)) from None
        try:
            # librdkafka fails the record at timeout_s; the extra second only guards against
            # a callback that never comes
            await asyncio.wait_for(done, self.timeout_s + 1.0)
        except (TimeoutError, Unavailable):
            self.failures += 1
            raise Unavailable(f"{topic}: no acknowledgement within {self.timeout_s:g} s") from None

    def reachable(self, timeout: float = 2.0) -> bool:
        """Whether a broker answers (blocking: call from a thread)."""
        try:
            self._producer.list_topics(timeout=timeout)
        except Exception:
            return False
        return True

    def close(self) -> None:
        self._producer.flush(self.timeout_s)
        self._running = False
        self._poller.join(timeout=2)


def _settle(done: asyncio.Future[None], err: KafkaError | None) -> None:
    if done.done():
        return
    if err is None:
        done.set_result(None)
    else:
        done.set_exception(Unavailable(err.str()))
