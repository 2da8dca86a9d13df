"""The dashboard's ASGI app: sign-in, the pages of each role, the decisions and approvals they
make (events on Kafka, as the CLI publishes them), downloads and the live alert feed.

Every page and download checks on the server what the signed-in user may see
(``processors/accounts.py``): an office head gets their own office's data by whatever URL, and
a 403 for any other. Forms carry a CSRF token; sign-in attempts are limited per name and
address; every selfie shown and every export made is logged on ``hadir.audit.access``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from hadir import kafka_access, reports, review, topics
from hadir.config import Settings
from hadir.dashboard import data, maps
from hadir.gateway.publisher import Publisher, Unavailable
from hadir.ratelimit import RateLimiter
from hadir.secrets import as_reader, local_secret
from hadir.serde import AvroCodec, Registry
from hadir.serving import serve as serve_app
from processors.accounts import (
    Denied,
    Page,
    Role,
    Session,
    User,
    csrf_token,
    csrf_valid,
    open_session,
    password_matches,
    session_cookie,
)
from processors.review import DecisionKind, ReviewError
from streams.reference import ReferenceFollower

log = logging.getLogger("hadir.dashboard")
HERE = Path(__file__).resolve().parent
COOKIE = "hadir_sesi"
LOGINS_PER_MINUTE, LOGIN_BURST = 5.0, 5
# The discipline page judges a whole year: computed at most every ten minutes (TK days change
# once a day), with the time it was computed on the page.
DISCIPLINE_CACHE_S = 600.0
AUDIT_TIMEOUT_S = 5.0  # an access-log entry Kafka has not acknowledged by then: 503
KEPT_MAX = 256  # results kept for the TPP and queue pages (per month, office and filter)
NAV = [(Page.TODAY, "Hari ini"), (Page.ALERTS, "Peringatan"), (Page.REVIEW, "Antrian tinjauan"),
       (Page.REQUESTS, "Permohonan"), (Page.MAP, "Peta"), (Page.TPP, "TPP"),
       (Page.DISCIPLINE, "Disiplin")]


class SignIn(Exception):
    """No valid session: to the sign-in page."""


class Dashboard:
    def __init__(self, settings: Settings) -> None:
        self.settings = as_reader(settings)  # ClickHouse as the read-only user
        self.key = local_secret(settings.infra, "dashboard.key",
                                settings.dashboard.secret_hex).encode()
        self.session_s = settings.dashboard.session_minutes * 60
        self.secure = bool(settings.dashboard.tls_cert)
        self.tz = ZoneInfo(settings.attendance.timezone)
        self.users: dict[str, User] = {}
        self.logins = RateLimiter(LOGINS_PER_MINUTE, LOGIN_BURST)
        self.feeds: set[asyncio.Queue[dict[str, Any]]] = set()
        self.publisher: Publisher | None = None  # the access log's, started with the app
        self._discipline: dict[tuple[int, str | None], tuple[float, list[Any]]] = {}
        self._kept: dict[tuple[Any, ...], tuple[tuple[Any, ...], Any]] = {}
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(["html"]))

    # --- state followed from Kafka ------------------------------------------------------

    def _on_user(self, key: bytes | None, record: dict[str, Any] | None) -> None:
        name = (key or b"").decode()
        if record is None:
            self.users.pop(name, None)
            return
        self.users[name] = User(record["username"], Role(record["role"]), record["office_id"],
                                record["password_hash"], record["disabled"])

    async def follow(self) -> list[asyncio.Task[None]]:
        registry = Registry(self.settings.infra.registry)
        self.access_codec = AvroCodec(topics.ACCESS_LOG, registry)
        self.publisher = Publisher(kafka_access.confluent(self.settings.infra, "reviewer"),
                                   AUDIT_TIMEOUT_S)
        users = ReferenceFollower(kafka_access.aiokafka(self.settings.infra, "reviewer"),
                                  {topics.USERS.name: AvroCodec(topics.USERS, registry)},
                                  {topics.USERS.name: self._on_user})
        tasks = [asyncio.create_task(users.run()), asyncio.create_task(self._alerts(registry))]
        await asyncio.wait_for(users.ready.wait(), 120)
        return tasks

    async def _alerts(self, registry: Registry) -> None:
        """Every alert published from now on, to each open feed (the alert page's stream)."""
        from aiokafka import AIOKafkaConsumer

        codec = AvroCodec(topics.ALERTS, registry)
        consumer = AIOKafkaConsumer(topics.ALERTS.name, group_id=None,
                                    auto_offset_reset="latest", enable_auto_commit=False,
                                    **kafka_access.aiokafka(self.settings.infra, "reviewer"))
        await consumer.start()
        try:
            async for msg in consumer:
                alert = codec.decode(msg.value)
                for feed in list(self.feeds):
                    if feed.qsize() < 1000:  # a browser that stopped reading loses its feed
                        feed.put_nowait(alert)
        finally:
            await consumer.stop()

    # --- sessions -----------------------------------------------------------------------

    def signed_in(self, request: Request) -> tuple[User, Session]:
        session = open_session(self.key, request.cookies.get(COOKIE), time.time())
        user = self.users.get(session.username) if session else None
        if session is None or user is None or user.disabled:
            raise SignIn()
        return user, session

    def render(self, request: Request, name: str, user: User | None, session: Session | None,
               status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(
            user=user, csrf=csrf_token(self.key, session) if session else "",
            nav=[(p.value, label) for p, label in NAV if user and user.may_see(p)],
            path=request.url.path, **context)
        return HTMLResponse(html, status, headers={
            "Cache-Control": "no-store", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                       "style-src 'self'; script-src 'self'"})

    async def kept(self, key: tuple[Any, ...], version: Callable[[], tuple[Any, ...]],
                   compute: Callable[[], Any]) -> Any:
        """``compute()``'s result for ``key``, computed again only when ``version()`` (a
        cheap query of what the result is made of) has changed since."""
        now = await run_in_threadpool(version)
        seen, value = self._kept.get(key, (None, None))
        if seen != now:
            value = await run_in_threadpool(compute)
            self._kept[key] = (now, value)
            if len(self._kept) > KEPT_MAX:
                self._kept.pop(next(iter(self._kept)))
        return value

    async def month_lines(self, month: date, office: str | None) -> list[reports.TppResult]:
        last = (month + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        return await self.kept(
            ("tpp", month, office), lambda: data.month_version(self.settings, month, last),
            lambda: reports.tpp(self.settings, month, office, False))

    async def audit(self, user: User, action: str, subject: str, nip: str = "",
                    office: str = "") -> None:
        """Log who sees personal data, before they see it: Denied (503) if Kafka cannot
        acknowledge the entry, so nothing is shown that is not logged."""
        assert self.publisher is not None
        try:
            await self.publisher.send(topics.ACCESS_LOG.name, user.username.encode(),
                                      self.access_codec.encode({
                                          "entry_id": str(uuid.uuid4()), "at": datetime.now(UTC),
                                          "username": user.username, "role": user.role.value,
                                          "action": action, "subject": subject, "nip": nip,
                                          "office_id": office}))
        except Unavailable:
            raise Denied("Akses tidak dapat dicatat saat ini; coba lagi sebentar lagi.",
                         503) from None

    def day(self, request: Request) -> date:
        text = request.query_params.get("tanggal")
        if not text:
            return datetime.now(self.tz).date()
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise Denied("Tanggal tidak dikenal.") from None

    def month(self, request: Request) -> date:
        text = request.query_params.get("bulan") or f"{datetime.now(self.tz):%Y-%m}"
        try:
            return datetime.strptime(text, "%Y-%m").date()
        except ValueError:
            raise Denied("Bulan tidak dikenal.") from None

    # --- sign-in ------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", None, None)

    async def login(self, request: Request) -> Response:
        form = await request.form()
        name, password = str(form.get("username", ""))[:64], str(form.get("password", ""))
        client = request.client.host if request.client else "-"
        if self.logins.take(f"{name}|{client}", time.monotonic()):
            return self.render(request, "login.html", None, None, 429,
                               error="Terlalu banyak percobaan masuk; coba lagi sebentar lagi.")
        user = self.users.get(name)
        if user is None or user.disabled or not await run_in_threadpool(
                password_matches, password, user.password_hash):
            return self.render(request, "login.html", None, None, 401,
                               error="Nama pengguna atau kata sandi salah.")
        response = RedirectResponse("/hari-ini", 303)
        response.set_cookie(COOKIE, session_cookie(self.key, name, time.time(), self.session_s),
                            max_age=int(self.session_s), httponly=True, samesite="strict",
                            secure=self.secure)
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE)
        return response

    # --- pages --------------------------------------------------------------------------

    async def today(self, request: Request, user: User, session: Session) -> Response:
        day = self.day(request)
        office = user.office_scope(request.query_params.get("kantor"))
        found = await run_in_threadpool(data.today, self.settings, day, office)
        return self.render(request, "today.html", user, session, day=day, office=office,
                           is_today=day == datetime.now(self.tz).date(), **found)

    async def person(self, request: Request, user: User) -> dict[str, Any]:
        """The ASN the path names, if the user may see their office."""
        person = await run_in_threadpool(data.employee, self.settings,
                                         request.path_params["nip"])
        if person is None:
            raise Denied("Pegawai tidak ditemukan.")
        user.office_scope(person["office_id"])
        return person

    async def asn(self, request: Request, user: User, session: Session) -> Response:
        person = await self.person(request, user)
        day = self.day(request)
        found = await run_in_threadpool(data.checkins_of, self.settings, person["nip"], day)
        return self.render(request, "asn.html", user, session, person=person, day=day,
                           checkins=found)

    async def alerts(self, request: Request, user: User, session: Session) -> Response:
        rule = request.query_params.get("aturan") or None
        office = user.office_scope(request.query_params.get("kantor"))
        found = await run_in_threadpool(data.alerts, self.settings, rule, office)
        return self.render(request, "alerts.html", user, session, alerts=found, rule=rule,
                           office=office)

    async def alert_stream(self, request: Request, user: User, session: Session) -> Response:
        rule = request.query_params.get("aturan") or None
        office = user.office_scope(request.query_params.get("kantor"))
        feed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.feeds.add(feed)

        async def events() -> AsyncIterator[str]:
            try:
                yield ": siap\n\n"
                while True:
                    try:
                        alert = await asyncio.wait_for(feed.get(), 15)
                    except TimeoutError:
                        yield ": tetap tersambung\n\n"
                        continue
                    if (rule and alert["rule"] != rule) or (
                            office and alert["office_id"] != office):
                        continue
                    yield f"data: {json.dumps(alert, default=str)}\n\n"
            finally:
                self.feeds.discard(feed)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    async def queue(self, request: Request, user: User, session: Session) -> Response:
        office = user.office_scope(request.query_params.get("kantor"))
        rule = request.query_params.get("aturan") or None
        found = await self.kept(("queue", office, rule),
                                lambda: data.queue_version(self.settings),
                                lambda: review.queue(self.settings, office, rule))
        return self.render(request, "queue.html", user, session, queue=found, office=office,
                           rule=rule)

    async def item(self, request: Request, user: User, session: Session) -> Response:
        event_id = request.path_params["event_id"]
        found = await run_in_threadpool(data.checkin, self.settings, event_id)
        if found is None:
            raise Denied("Presensi tidak ditemukan.")
        user.office_scope(found["office_id"] or None)
        history = await run_in_threadpool(review.history, self.settings, event_id)
        alerts = await run_in_threadpool(data.rows, self.settings,
                                         "SELECT rule, evidence FROM v_alerts "
                                         "WHERE event_id = %(e)s", {"e": event_id})
        office = next((o for o in await run_in_threadpool(data.offices, self.settings)
                       if o["office_id"] == found["office_id"]), None)
        picture = maps.render(
            [maps.office_shape(office["geometry"], office["name"])] if office else [], [],
            [(found["lat"], found["lon"], found["accuracy_m"] or 0.0, found["verdict"])])
        return self.render(request, "item.html", user, session, c=found, history=history,
                           alerts=[(a["rule"], json.loads(a["evidence"])) for a in alerts],
                           picture=picture, message=request.query_params.get("pesan"))

    async def decide(self, request: Request, user: User, session: Session) -> Response:
        event_id = request.path_params["event_id"]
        form = await request.form()
        if not csrf_valid(self.key, session, str(form.get("csrf", ""))):
            raise Denied("Formulir kedaluwarsa; muat ulang halaman.")
        kind = {"CLEAR": DecisionKind.CLEAR, "CONFIRM": DecisionKind.CONFIRM}.get(
            str(form.get("keputusan", "")))
        if kind is None:
            raise Denied("Keputusan tidak dikenal.")
        found = await run_in_threadpool(data.checkin, self.settings, event_id)
        if found is None:
            raise Denied("Presensi tidak ditemukan.")
        user.office_scope(found["office_id"] or None)
        try:
            await run_in_threadpool(review.decide, self.settings, event_id, kind, user.username,
                                    str(form.get("catatan", ""))[:500])
        except ReviewError as exc:
            return RedirectResponse(f"/tinjauan/{event_id}?pesan={exc}", 303)
        return RedirectResponse(f"/tinjauan/{event_id}", 303)

    async def selfie(self, request: Request, user: User, session: Session) -> Response:
        if not user.sees_selfies:
            raise Denied("Swafoto hanya untuk peninjau.")
        event_id = request.path_params["event_id"]
        found = await run_in_threadpool(data.checkin, self.settings, event_id)
        if found is None:
            raise Denied("Presensi tidak ditemukan.")
        image = await run_in_threadpool(data.selfie, self.settings, found["source_offset"],
                                        event_id)
        if image is None:
            return PlainTextResponse("Swafoto sudah tidak disimpan.", 404)
        await self.audit(user, "VIEW_SELFIE", event_id, found["nip"], found["office_id"])
        kind = "image/png" if image.startswith(b"\x89PNG") else "image/jpeg"
        return Response(image, media_type=kind, headers={"Cache-Control": "no-store"})

    async def requests(self, request: Request, user: User, session: Session) -> Response:
        office = user.office_scope(request.query_params.get("kantor"))
        found = await run_in_threadpool(review.requests, self.settings, "PENDING", office)
        return self.render(request, "requests.html", user, session, requests=found,
                           message=request.query_params.get("pesan"))

    async def decide_request(self, request: Request, user: User, session: Session) -> Response:
        request_id = request.path_params["request_id"]
        form = await request.form()
        if not csrf_valid(self.key, session, str(form.get("csrf", ""))):
            raise Denied("Formulir kedaluwarsa; muat ulang halaman.")
        try:
            pending = await run_in_threadpool(review.request, self.settings, request_id)
        except ReviewError:
            raise Denied("Permohonan tidak ditemukan.") from None
        person = await run_in_threadpool(data.employee, self.settings, pending.nip)
        if person is None:
            raise Denied("Pegawai tidak ditemukan.")
        user.office_scope(person["office_id"])
        try:
            await run_in_threadpool(review.decide_excuse, self.settings, request_id,
                                    form.get("keputusan") == "APPROVE", user.username)
        except ReviewError as exc:
            return RedirectResponse(f"/permohonan?pesan={exc}", 303)
        return RedirectResponse("/permohonan?pesan=Keputusan tersimpan.", 303)

    async def map(self, request: Request, user: User, session: Session) -> Response:
        day = self.day(request)
        office = user.office_scope(request.query_params.get("kantor"))
        shapes = [maps.office_shape(o["geometry"], o["name"])
                  for o in await run_in_threadpool(data.offices, self.settings)
                  if office is None or o["office_id"] == office]
        found = await run_in_threadpool(data.cells, self.settings, day, office)
        return self.render(request, "map.html", user, session, day=day,
                           picture=maps.render(shapes, found), cells=len(found))

    async def tpp(self, request: Request, user: User, session: Session) -> Response:
        month = self.month(request)
        office = user.office_scope(request.query_params.get("kantor"))
        lines = await self.month_lines(month, office)
        closed = month_closed(lines)
        by_office: dict[str, dict[str, int]] = {}
        for r in lines:
            o = by_office.setdefault(r.line.office_id, {"asn": 0, "base": 0, "cut": 0})
            o["asn"] += 1
            o["base"] += r.line.tpp_base_idr
            o["cut"] += r.line.tpp_cut_idr
        return self.render(request, "tpp.html", user, session, month=month, office=office,
                           lines=[r.line for r in lines], offices=by_office, closed=closed)

    async def tpp_person(self, request: Request, user: User, session: Session) -> Response:
        person = await self.person(request, user)
        month = self.month(request)
        lines = await run_in_threadpool(reports.tpp, self.settings, month, None, False, None,
                                        person["nip"])
        days = [] if not lines or lines[0].attendance is None else lines[0].days
        return self.render(request, "tpp_person.html", user, session, person=person,
                           month=month, line=lines[0].line if lines else None, days=days,
                           closed=month_closed(lines))

    async def export(self, request: Request, user: User, session: Session) -> Response:
        kind = request.path_params["kind"]
        if kind not in ("csv", "xlsx"):
            raise Denied("Format unduhan tidak dikenal.")
        month = self.month(request)
        office = user.office_scope(request.query_params.get("kantor"))
        rows = [r.as_row() for r in await self.month_lines(month, office)]
        name = f"tpp-{month:%Y-%m}{'-' + office if office else ''}.{kind}"
        await self.audit(user, f"EXPORT_{kind.upper()}", name, "", office or "")
        headers = {"Content-Disposition": f'attachment; filename="{name}"',
                   "Cache-Control": "no-store"}
        if kind == "csv":
            out = io.StringIO()
            writer = csv.DictWriter(out, reports.TPP_COLUMNS)
            writer.writeheader()
            writer.writerows({k: json.dumps(v) if isinstance(v, list) else v
                              for k, v in r.items()} for r in rows)
            return Response(out.getvalue(), media_type="text/csv", headers=headers)
        return Response(xlsx(rows), headers=headers, media_type=(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"))

    async def discipline(self, request: Request, user: User, session: Session) -> Response:
        year_text = request.query_params.get("tahun") or f"{datetime.now(self.tz):%Y}"
        if not year_text.isdigit() or not 2000 <= int(year_text) < 2100:
            raise Denied("Tahun tidak dikenal.")
        office = user.office_scope(request.query_params.get("kantor"))
        key = (int(year_text), office)
        at, found = self._discipline.get(key, (0.0, []))
        if time.monotonic() - at > DISCIPLINE_CACHE_S:  # a year of days: seconds to judge
            found = await run_in_threadpool(reports.discipline, self.settings, key[0], office)
            self._discipline[key] = (time.monotonic(), found)
        return self.render(request, "discipline.html", user, session, year=key[0],
                           lines=found, computed=datetime.now(self.tz) - timedelta(
                               seconds=time.monotonic() - self._discipline[key][0]))


def month_closed(lines: list[reports.TppResult]) -> bool:
    return bool(lines) and lines[0].attendance is None


def xlsx(rows: list[dict[str, Any]]) -> bytes:
    import xlsxwriter

    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    sheet = book.add_worksheet("TPP")
    for col, name in enumerate(reports.TPP_COLUMNS):
        sheet.write(0, col, name)
    for n, row in enumerate(rows, 1):
        for col, name in enumerate(reports.TPP_COLUMNS):
            value = row[name]
            sheet.write(n, col, json.dumps(value) if isinstance(value, list) else value)
    book.close()
    return out.getvalue()


Handler = Callable[[Request, User, Session], Awaitable[Response]]


def create_app(settings: Settings) -> Starlette:
    board = Dashboard(settings)

    def guarded(page: Page | None, handler: Handler) -> Callable[[Request],
                                                                Awaitable[Response]]:
        async def run(request: Request) -> Response:
            started = time.perf_counter()
            try:
                user, session = board.signed_in(request)
                if page is not None and not user.may_see(page):
                    raise Denied("Halaman ini bukan untuk peran Anda.")
                response = await handler(request, user, session)
            except SignIn:
                response = RedirectResponse("/login", 303)
            except Denied as exc:
                response = board.render(request, "denied.html", None, None, exc.status,
                                        reason=str(exc))
            # the server's own time, for `hadir bench --only dashboard` and browsers' tools
            response.headers["Server-Timing"] = \
                f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
            return response
        return run

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        tasks = await board.follow()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if board.publisher is not None:
                board.publisher.close()

    async def health(_request: Request) -> Response:
        return PlainTextResponse("ok")

    async def home(_request: Request) -> Response:
        return RedirectResponse("/hari-ini", 303)

    d = board
    app = Starlette(routes=[
        Route("/login", d.login_form, methods=["GET"]),
        Route("/login", d.login, methods=["POST"]),
        Route("/logout", d.logout, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/", home, methods=["GET"]),
        Route("/hari-ini", guarded(Page.TODAY, d.today)),
        Route("/asn/{nip}", guarded(Page.TODAY, d.asn)),
        Route("/peringatan", guarded(Page.ALERTS, d.alerts)),
        Route("/peringatan/stream", guarded(Page.ALERTS, d.alert_stream)),
        Route("/tinjauan", guarded(Page.REVIEW, d.queue)),
        Route("/tinjauan/{event_id}", guarded(Page.REVIEW, d.item), methods=["GET"]),
        Route("/tinjauan/{event_id}", guarded(Page.REVIEW, d.decide), methods=["POST"]),
        Route("/swafoto/{event_id}", guarded(Page.REVIEW, d.selfie)),
        Route("/permohonan", guarded(Page.REQUESTS, d.requests), methods=["GET"]),
        Route("/permohonan/{request_id}", guarded(Page.REQUESTS, d.decide_request),
              methods=["POST"]),
        Route("/peta", guarded(Page.MAP, d.map)),
        Route("/tpp", guarded(Page.TPP, d.tpp)),
        Route("/tpp/unduh.{kind:str}", guarded(Page.TPP, d.export)),
        Route("/tpp/{nip}", guarded(Page.TPP, d.tpp_person)),
        Route("/disiplin", guarded(Page.DISCIPLINE, d.discipline)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ], lifespan=lifespan)
    return app


def serve(settings: Settings) -> int:
    d = settings.dashboard
    return serve_app(create_app(settings), d.host, d.port, d.tls_cert, d.tls_key)
