"""The phone edge's ASGI app: each handler reads like the contract (DESIGN.md, "The phone
edge"): authenticate, parse, act, answer.

State lives in :class:`Edge`: the device directory and the accepted event ids, both followed
from compacted topics (so a revocation by ``hadir device revoke`` reaches every gateway, and a
restarted gateway still answers 200 to a check-in it accepted before), the per-device rate
limits, and the producer. Refusals are :class:`Refused` or :class:`BadBody`, each one JSON shape
``{"errors": [{"field", "message"}]}``; nothing a client sends can make a 5xx other than 503.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import orjson
from clickhouse_driver.errors import Error as ClickHouseError
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hadir import kafka_access, topics
from hadir.config import Settings
from hadir.gateway.bodies import (
    AppealBody,
    BadBody,
    CheckinBody,
    DeviceBody,
    ExcuseRequestBody,
    parse,
    public_key_der,
)
from hadir.gateway.messages import message
from hadir.gateway.publisher import Publisher, Unavailable
from hadir.ratelimit import RateLimiter
from hadir.reports import own_month
from hadir.review import request_record
from hadir.secrets import as_reader
from hadir.serde import AvroCodec, Registry
from processors.attendance import ExcuseKind
from processors.devices import Activation, DeviceKey, Directory, Refused
from processors.review import STANDING_SQL, ExcuseRequest, ReviewError
from sinks.connection import connect
from streams.reference import ReferenceFollower

log = logging.getLogger("hadir.gateway")
T = TypeVar("T")
disable_created_metrics()  # the *_created series only double what a scraper sees

ACCEPTED_KEPT = timedelta(days=8)  # as long as hadir.gateway.accepted keeps them
# Failed registrations per NIP: an activation code cannot be guessed 80 bits at a time.
REGISTRATION_PER_HOUR, REGISTRATION_BURST = 10.0, 10


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def refusal(status: int, message: str, field: str | None = None,
            retry_after: int | None = None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return answer(status, {"errors": [{"field": field, "message": message}]}, headers)


class Metrics:
    """Prometheus text for /metrics: requests by route and status, latency by route, Kafka
    delivery failures, and the process's CPU and memory."""

    def __init__(self, publisher: Callable[[], Publisher | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("hadir_gateway_requests", "HTTP requests answered",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("hadir_gateway_request_seconds", "time to answer",
                                 ["route"], registry=self.registry,
                                 buckets=(.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        ProcessCollector(registry=self.registry)
        self.registry.register(_DeliveryFailures(publisher))
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        child = self._children.get((route, status))
        if child is None:
            child = self._children[(route, status)] = (
                self.requests.labels(route, str(status)), self.latency.labels(route))
        child[0].inc()
        child[1].observe(seconds)


class _DeliveryFailures:
    def __init__(self, publisher: Callable[[], Publisher | None]) -> None:
        self._publisher = publisher

    def collect(self) -> Any:
        p = self._publisher()
        family = CounterMetricFamily("hadir_gateway_kafka_delivery_failures",
                                     "records Kafka did not acknowledge in time or refused")
        family.add_metric([], p.failures if p else 0)
        yield family


class Edge:
    """The gateway's state and its actions."""

    def __init__(self, settings: Settings, import_token: str) -> None:
        self.settings = as_reader(settings)  # ClickHouse as the read-only user
        self.gateway = settings.gateway
        self.import_token = import_token.encode()
        self.directory = Directory()
        self.accepted: dict[str, tuple[str, datetime]] = {}  # event_id -> nip, server_time
        self.in_flight: dict[str, asyncio.Future[datetime]] = {}
        # appeal and request ids already on Kafka (a repeat is 200), from their topics
        self.appeals: dict[str, str] = {}  # appeal_id -> nip
        self.excuse_requests: dict[str, str] = {}  # request_id -> nip
        self.limits = RateLimiter(self.gateway.rate_per_minute, self.gateway.rate_burst)
        self.registrations = RateLimiter(REGISTRATION_PER_HOUR / 60, REGISTRATION_BURST)
        self.max_offline_ms = int(settings.fraud.offline_max_s * 1000)
        self.tz = ZoneInfo(settings.attendance.timezone)
        self.publisher: Publisher | None = None
        self.metrics = Metrics(lambda: self.publisher)
        self.codecs: dict[str, AvroCodec] = {}
        self.follower: ReferenceFollower | None = None
        self._clickhouse = ThreadPoolExecutor(4, thread_name_prefix="clickhouse")
        self._local = threading.local()  # a ClickHouse client per executor thread
        self._healthy: tuple[float, bool] = (0.0, False)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> list[asyncio.Task[None]]:
        registry = Registry(self.settings.infra.registry)
        self.codecs = {t.name: AvroCodec(t, registry) for t in (
            topics.RAW, topics.DEVICES, topics.ACTIVATIONS, topics.ACCEPTED, topics.APPEALS,
            topics.EXCUSE_REQUESTS)}
        self.publisher = Publisher(kafka_access.confluent(self.settings.infra, "gateway"),
                                   self.gateway.kafka_timeout_s)
        self.follower = ReferenceFollower(kafka_access.aiokafka(self.settings.infra, "gateway"),
                                          self.codecs, {
            topics.DEVICES.name: self._on_key, topics.ACTIVATIONS.name: self._on_activation,
            topics.ACCEPTED.name: self._on_accepted,
            topics.APPEALS.name: self._on_appeal,
            topics.EXCUSE_REQUESTS.name: self._on_request})
        tasks = [asyncio.create_task(self.follower.run()), asyncio.create_task(self._forget())]
        # Serve only once every key is known: before, every phone would be told 401.
        ready = asyncio.create_task(self.follower.ready.wait())
        await asyncio.wait([ready, tasks[0]], timeout=120, return_when=asyncio.FIRST_COMPLETED)
        if not self.follower.ready.is_set():
            ready.cancel()
            if tasks[0].done():
                tasks[0].result()  # the follower's own error
            raise RuntimeError("the device keys were not read within 120 s")
        log.info("gateway ready: %d device keys, %d activation codes, %d accepted check-ins",
                 len(self.directory.keys), len(self.directory.activations), len(self.accepted))
        return tasks

    def close(self) -> None:
        if self.publisher:
            self.publisher.close()
        self._clickhouse.shutdown(wait=False)

    def _on_key(self, key: bytes | None, record: dict[str, Any] | None) -> None:
        self.directory.apply_key((key or b"").decode(), DeviceKey(**record) if record else None)

    def _on_activation(self, key: bytes | None, record: dict[str, Any] | None) -> None:
        self.directory.apply_activation((key or b"").decode(),
                                        Activation(**record) if record else None)

    def _on_accepted(self, key: bytes | None, record: dict[str, Any] | None) -> None:
        if record is None:
            self.accepted.pop((key or b"").decode(), None)
        else:
            self.accepted[record["event_id"]] = (record["nip"], record["server_time"])

    def _on_appeal(self, _key: bytes | None, record: dict[str, Any] | None) -> None:
        if record is not None:
            self.appeals[record["appeal_id"]] = record["nip"]

    def _on_request(self, _key: bytes | None, record: dict[str, Any] | None) -> None:
        if record is not None:
            self.excuse_requests[record["request_id"]] = record["nip"]

    async def _forget(self) -> None:
        """Accepted ids older than the topic keeps them: the map stays a week's check-ins."""
        while True:
            await asyncio.sleep(600)
            cutoff = datetime.now(UTC) - ACCEPTED_KEPT
            self.accepted = {e: v for e, v in self.accepted.items() if v[1] >= cutoff}

    # --- helpers ------------------------------------------------------------------------

    async def _publish(self, topic: topics.Topic, key: str, record: dict[str, Any]) -> None:
        assert self.publisher is not None
        try:
            await self.publisher.send(topic.name, key.encode(),
                                      self.codecs[topic.name].encode(record))
        except Unavailable as exc:
            log.warning("Kafka unavailable: %s", exc)
            raise Refused(503, "Server sedang sibuk; presensi tersimpan di ponsel dan akan "
                               "dikirim ulang.", retry_after=self.gateway.retry_after_s) from None

    async def _ask_clickhouse(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the ClickHouse threads; ClickHouse out of reach is a 503 with
        Retry-After (the phone asks again later), never a 500."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._clickhouse, fn, *args)
        except ClickHouseError as exc:
            log.warning("ClickHouse unavailable: %s", exc)
            raise Refused(503, "Server sedang sibuk; coba lagi sebentar.",
                          retry_after=self.gateway.retry_after_s) from None

    async def body(self, request: Request) -> bytes:
        limit = self.gateway.max_body_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise Refused(413, f"Permintaan lebih dari {limit:,} byte.".replace(",", "."))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(413, f"Permintaan lebih dari {limit:,} byte.".replace(",", "."))
            chunks.append(chunk)
        return b"".join(chunks)

    async def authenticate(self, request: Request, body: bytes) -> DeviceKey:
        """The key that signed the request (METHOD, PATH with its query, the body's hash)."""
        path = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
        if request.scope.get("query_string"):
            path += "?" + request.scope["query_string"].decode("latin-1")
        try:
            signature = base64.b64decode(request.headers.get("x-hadir-signature", ""),
                                         validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        return self.directory.authenticate(request.headers.get("x-hadir-key"), signature,
                                           request.method, path, body)

    def server_time(self, request: Request, claimed: datetime | None) -> datetime:
        """The gateway's clock, or the body's server_time with the importer token."""
        token = request.headers.get("x-hadir-import-token")
        if token is None:
            now = datetime.now(UTC)  # to the millisecond, as the record holds it
            return now.replace(microsecond=now.microsecond // 1000 * 1000)
        if not self.import_token or not hmac.compare_digest(token.encode(), self.import_token):
            raise Refused(403, "Token impor tidak sah.")
        if claimed is None:
            raise BadBody([{"field": "server_time", "message": "required with the import "
                                                               "token"}])
        return claimed

    def limit(self, key: DeviceKey, request: Request) -> None:
        if "x-hadir-import-token" in request.headers:
            return  # a replay of history (checked in server_time) is not a phone
        wait = self.limits.take(key.key_id, time.monotonic())
        if wait:
            raise Refused(429, "Terlalu banyak permintaan dari perangkat ini; coba lagi nanti.",
                          retry_after=math.ceil(wait))

    async def healthy(self) -> bool:
        """Whether Kafka answers (asked at most every 2 s)."""
        at, ok = self._healthy
        if time.monotonic() - at > 2.0:
            assert self.publisher is not None
            ok = await asyncio.to_thread(self.publisher.reachable)
            self._healthy = (time.monotonic(), ok)
        return ok

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = connect(self.settings.infra, "reader")
        return client

    def verdict(self, nip: str, event_id: str) -> tuple[str, list[str], str | None] | None:
        """The newest verdict of the NIP's check-in in ClickHouse, and the reviewer's decision
        that stands on it, if any (the NIP is the table's first key: one NIP's rows are read,
        and another NIP's event is never found)."""
        client = self._client()
        rows = client.execute(
            "SELECT argMax(verdict, version), argMax(reasons, version) FROM checkins "
            "WHERE nip = %(nip)s AND event_id = %(e)s HAVING count() > 0",
            {"nip": nip, "e": event_id})
        if not rows:
            return None
        decided = client.execute(f"SELECT {STANDING_SQL} FROM decisions "
                                 "WHERE event_id = %(e)s HAVING count() > 0", {"e": event_id})
        return rows[0][0], list(rows[0][1]), decided[0][0] if decided else None

    # --- handlers -----------------------------------------------------------------------

    async def register(self, request: Request) -> Response:
        b = parse(DeviceBody, await self.body(request))
        der = public_key_der(b.public_key)
        if self.registrations.take(b.nip, time.monotonic()):
            raise Refused(429, "Terlalu banyak percobaan pendaftaran; coba lagi nanti.",
                          retry_after=3600)
        if self.directory.activation_for(b.nip, b.activation_code) is None:
            assert self.follower is not None
            await self.follower.catch_up(5.0)  # a code issued a moment ago
        before = self.directory.activation_for(b.nip, b.activation_code)
        key, used = self.directory.register(
            b.nip, b.activation_code, b.device_id, der, str(uuid.uuid4()),
            datetime.now(UTC), b.platform, b.model, b.app_version)
        self.directory.apply_activation(used.code_hash, used)  # a second use now is refused
        try:
            await self._publish(topics.ACTIVATIONS, used.code_hash, asdict(used))
            await self._publish(topics.DEVICES, key.key_id, asdict(key))
        except Refused:
            self.directory.apply_activation(used.code_hash, before)
            raise
        self.directory.apply_key(key.key_id, key)
        return answer(201, {"key_id": key.key_id, "nip": key.nip, "device_id": key.device_id})

    async def checkin(self, request: Request) -> Response:
        raw = await self.body(request)
        key = await self.authenticate(request, raw)
        self.limit(key, request)
        c = parse(CheckinBody, raw)
        if c.nip != key.nip:
            raise Refused(403, "NIP pada presensi bukan NIP pemilik perangkat ini.", "nip")
        if c.offline_age_ms > self.max_offline_ms:
            raise BadBody([{"field": "offline_age_ms", "message": (
                f"over {self.max_offline_ms // 3_600_000} hours: too old to be judged")}])
        server_time = self.server_time(request, c.server_time)
        known = self.accepted.get(c.event_id)
        if known is None and c.event_id in self.in_flight:  # the same request, twice at once
            await asyncio.shield(self.in_flight[c.event_id])  # its 503 if the first failed
            known = self.accepted.get(c.event_id)
        if known is not None:
            if known[0] != key.nip:
                raise BadBody([{"field": "event_id", "message": "already used"}])
            return answer(200, {"event_id": c.event_id, "server_time": _rfc3339(known[1])})
        done: asyncio.Future[datetime] = asyncio.get_running_loop().create_future()
        self.in_flight[c.event_id] = done
        try:
            await self._publish(topics.RAW, key.nip, {
                "event_id": c.event_id, "nip": key.nip, "device_id": key.device_id,
                "type": c.type, "server_time": server_time, "client_time": c.client_time,
                "lat": c.lat, "lon": c.lon, "accuracy_m": c.accuracy_m,
                "mock_location": c.mock_location, "selfie": c.selfie_jpeg,
                "app_version": c.app_version, "offline_age_ms": c.offline_age_ms})
            # Only after the check-in is in: a repeat is answered 200 from this record, also
            # by a gateway started after this one died. If it fails, the phone's retry
            # publishes the check-in again, which the pipeline drops as already seen.
            await self._publish(topics.ACCEPTED, c.event_id, {
                "event_id": c.event_id, "nip": key.nip, "key_id": key.key_id,
                "server_time": server_time})
        except Refused as exc:
            done.set_exception(exc)
            done.exception()  # retrieved: a failure nobody else awaited is not an error
            raise
        finally:
            del self.in_flight[c.event_id]
        self.accepted[c.event_id] = (key.nip, server_time)
        done.set_result(server_time)
        return answer(202, {"event_id": c.event_id, "server_time": _rfc3339(server_time)})

    async def status(self, request: Request) -> Response:
        key = await self.authenticate(request, await self.body(request))
        try:
            event_id = str(uuid.UUID(request.path_params["event_id"]))
        except ValueError:
            raise Refused(404, "Presensi tidak ditemukan.") from None
        found = await self._ask_clickhouse(self.verdict, key.nip, event_id)
        if found is None:
            mine = self.accepted.get(event_id)
            if mine is None or mine[0] != key.nip:
                raise Refused(404, "Presensi tidak ditemukan.")
            found = ("PENDING", [], None)
        status, reasons, decision = found
        return answer(200, {"event_id": event_id, "status": status, "reasons": reasons,
                            "decision": decision, "message": message(status, reasons,
                                                                      decision)})

    def _owner(self, event_id: str) -> str | None:
        """The NIP of a check-in: from the accepted ids, else from ClickHouse (older ones)."""
        known = self.accepted.get(event_id)
        if known is not None:
            return known[0]
        rows = self._client().execute("SELECT nip FROM checkins WHERE event_id = %(e)s "
                                      "LIMIT 1", {"e": event_id})
        return rows[0][0] if rows else None

    async def _once(self, seen: dict[str, str], key: DeviceKey, item_id: str,
                    topic: topics.Topic, record: dict[str, Any]) -> Response:
        """Publish an appeal or a request once: 202 once on Kafka, 200 for a repeat."""
        if item_id in seen:
            if seen[item_id] != key.nip:
                raise BadBody([{"field": None, "message": "id already used"}])
            return answer(200, {"id": item_id, "status": "received"})
        await self._publish(topic, key.nip, record)
        seen[item_id] = key.nip
        return answer(202, {"id": item_id, "status": "received"})

    async def appeal(self, request: Request) -> Response:
        raw = await self.body(request)
        key = await self.authenticate(request, raw)
        self.limit(key, request)
        a = parse(AppealBody, raw)
        owner = await self._ask_clickhouse(self._owner, a.event_id)
        if owner is None:
            raise Refused(404, "Presensi tidak ditemukan.", "event_id")
        if owner != key.nip:
            raise Refused(403, "Presensi ini bukan milik pemilik perangkat.", "event_id")
        return await self._once(self.appeals, key, a.appeal_id, topics.APPEALS, {
            "appeal_id": a.appeal_id, "event_id": a.event_id, "nip": key.nip, "note": a.note,
            "submitted_at": datetime.now(UTC)})

    async def excuse_request(self, request: Request) -> Response:
        raw = await self.body(request)
        key = await self.authenticate(request, raw)
        self.limit(key, request)
        b = parse(ExcuseRequestBody, raw)
        try:
            r = ExcuseRequest(b.request_id, key.nip, ExcuseKind(b.kind), b.date_from,
                              b.date_to, b.note, datetime.now(UTC))
        except ReviewError as exc:
            raise BadBody([{"field": "date_to", "message": str(exc)}]) from None
        return await self._once(self.excuse_requests, key, b.request_id,
                                topics.EXCUSE_REQUESTS, request_record(r))

    async def me(self, request: Request) -> Response:
        key = await self.authenticate(request, await self.body(request))
        self.limit(key, request)
        text = request.query_params.get("month") or f"{datetime.now(self.tz):%Y-%m}"
        try:
            month = datetime.strptime(text, "%Y-%m").date()
        except ValueError:
            raise BadBody([{"field": "month", "message": "a month like 2026-12"}]) from None
        if not 2000 <= month.year < 2100:
            raise BadBody([{"field": "month", "message": "outside 2000..2100"}])
        out = await self._ask_clickhouse(own_month, self.settings, key.nip, month)
        return answer(200, out)

    async def health(self, _request: Request) -> Response:
        if await self.healthy():
            return answer(200, {"status": "ok"})
        return answer(503, {"status": "kafka unreachable"})

    async def metrics_text(self, _request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Handler = Callable[[Request], Awaitable[Response]]


def _measured(edge: Edge, route: str, handler: Handler) -> Handler:
    async def run(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except Refused as r:
            response = refusal(r.status, r.message, r.field, r.retry_after)
        except BadBody as b:
            response = answer(400, {"errors": b.errors})
        except Exception:  # a bug: logged, and the phone retries later
            log.exception("%s %s failed", request.method, route)
            response = refusal(500, "Kesalahan pada server.")
        edge.metrics.observe(route, response.status_code, time.perf_counter() - started)
        return response
    return run


def create_app(settings: Settings, import_token: str = "") -> Starlette:
    edge = Edge(settings, import_token)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        tasks = await edge.start()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            edge.close()

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, _measured(edge, path, handler), methods=[method])

    async def not_found(request: Request, exc: HTTPException) -> Response:
        edge.metrics.observe("other", exc.status_code, 0.0)
        return refusal(exc.status_code, "Alamat atau metode tidak dikenal.")

    app = Starlette(routes=[
        route("/v1/devices", edge.register, "POST"),
        route("/v1/checkins", edge.checkin, "POST"),
        route("/v1/checkins/{event_id}", edge.status, "GET"),
        route("/v1/appeals", edge.appeal, "POST"),
        route("/v1/excuse-requests", edge.excuse_request, "POST"),
        route("/v1/me", edge.me, "GET"),
        route("/healthz", edge.health, "GET"),
        route("/metrics", edge.metrics_text, "GET"),
    ], exception_handlers={HTTPException: not_found}, lifespan=lifespan)
    app.state.edge = edge
    return app
