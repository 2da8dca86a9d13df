"""The phone edge against the real gateway (started by ``hadir run``'s own code), broker,
registry and ClickHouse: every status code of the contract, every refusal, the offline path,
a broker that stops mid-request and a gateway killed right after it answered 202."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from hadir import devices, topics, workers
from hadir.config import ConfigError, Settings
from hadir.gateway.importer import import_token
from hadir.infra.clickhouse import ClickHouseServer
from hadir.infra.kafka import KafkaBroker
from hadir.infra.process import wait_until
from hadir.phone import Phone, checkin_body, gateway_url
from tests.paths import FACES
from tests.pipeline_helpers import KOBA, Pipeline, jpeg, new_nip

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def pipe(stack) -> Iterator[Pipeline]:  # type: ignore[no-untyped-def]
    p = Pipeline(stack)
    workers.start(stack, intake=1)
    assert wait_until(lambda: _healthy(stack), 120), "the gateway did not start"
    yield p
    p.close()


def _healthy(settings: Settings) -> bool:
    try:
        return requests.get(gateway_url(settings) + "/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _phone(pipe: Pipeline, nip: str | None = None, device: str | None = None) -> Phone:
    """A registered phone of a new (or the given) ASN."""
    nip = nip or pipe.employee(photo=None)
    phone = Phone(nip, device or f"android-{uuid.uuid4().hex[:8]}")
    code = devices.issue_codes(pipe.settings, [nip])[0]["code"]
    r = requests.post(gateway_url(pipe.settings) + "/v1/devices", data=phone.registration(code),
                      timeout=10)
    assert r.status_code == 201, r.text
    assert r.json()["nip"] == nip and r.json()["device_id"] == phone.device_id
    phone.key_id = r.json()["key_id"]
    return phone


def _body(phone: Phone, **change: Any) -> bytes:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "event_id": str(uuid.uuid4()), "nip": phone.nip, "kind": "IN", "client_time": now,
        "lat": KOBA[0], "lon": KOBA[1], "accuracy_m": 8.0, "mock_location": False,
        "app_version": "1.4.0", "selfie": None}
    fields.update(change)
    return checkin_body(**fields)


def _send(pipe: Pipeline, phone: Phone, body: bytes, path: str = "/v1/checkins",
          method: str = "POST", token: str = "", **headers: str) -> requests.Response:
    signed = {**phone.headers(method, path, body, token), **headers}
    return requests.request(method, gateway_url(pipe.settings) + path, data=body,
                            headers=signed, timeout=30)


def _errors(r: requests.Response) -> set[str | None]:
    return {e["field"] for e in r.json()["errors"]}


def _on_raw(pipe: Pipeline, nip: str, event_id: str) -> list[dict[str, Any]]:
    return [r for r in pipe.on_topic(topics.RAW, nip) if r["event_id"] == event_id]


def test_a_check_in_is_accepted_once_with_the_gateways_time_and_the_keys_device(
        pipe: Pipeline) -> None:
    phone = _phone(pipe)
    body = _body(phone, selfie=jpeg(FACES / "img1.jpg"))
    before = datetime.now(UTC)
    r = _send(pipe, phone, body)
    assert r.status_code == 202, r.text
    event_id = json.loads(body)["event_id"]
    assert r.json()["event_id"] == event_id
    server_time = datetime.fromisoformat(r.json()["server_time"])
    assert before - timedelta(seconds=1) <= server_time <= datetime.now(UTC)
    again = _send(pipe, phone, body)  # the same request captured and sent again
    assert again.status_code == 200 and again.json() == r.json()
    [record] = _on_raw(pipe, phone.nip, event_id)
    assert record["device_id"] == phone.device_id and record["server_time"] == server_time
    assert record["selfie"] == jpeg(FACES / "img1.jpg")


def test_the_body_never_chooses_the_device_nor_the_time(pipe: Pipeline) -> None:
    phone = _phone(pipe)
    claimed = datetime(2026, 1, 5, tzinfo=UTC)
    body = json.loads(_body(phone))
    body.update(device_id="someone-elses-phone", server_time=claimed.isoformat())
    raw = json.dumps(body).encode()
    assert _send(pipe, phone, raw).status_code == 202
    [record] = _on_raw(pipe, phone.nip, body["event_id"])
    assert record["device_id"] == phone.device_id and record["server_time"] != claimed


def test_the_importer_token_keeps_a_historical_server_time(pipe: Pipeline) -> None:
    phone = _phone(pipe)
    at = datetime(2026, 10, 5, 0, 20, tzinfo=UTC)
    body = _body(phone, server_time=at, client_time=at)
    assert _send(pipe, phone, body, token="not-the-token" * 3).status_code == 403
    r = _send(pipe, phone, body, token=import_token(pipe.settings))
    assert r.status_code == 202 and datetime.fromisoformat(r.json()["server_time"]) == at
    missing = _send(pipe, phone, _body(phone), token=import_token(pipe.settings))
    assert missing.status_code == 400 and _errors(missing) == {"server_time"}


def test_refusals(pipe: Pipeline) -> None:
    phone, other = _phone(pipe), _phone(pipe)
    url = gateway_url(pipe.settings)
    body = _body(phone)
    unknown = Phone(phone.nip, "x", key_id=str(uuid.uuid4()))
    assert _send(pipe, unknown, body).status_code == 401
    forged = {**phone.headers("POST", "/v1/checkins", body),
              "X-Hadir-Signature": other.headers("POST", "/v1/checkins", body)[
                  "X-Hadir-Signature"]}
    r = requests.post(url + "/v1/checkins", data=body, headers=forged, timeout=10)
    assert r.status_code == 401 and r.json()["errors"][0]["message"]
    no_signature = {"X-Hadir-Key": phone.key_id}
    assert requests.post(url + "/v1/checkins", data=body, headers=no_signature,
                         timeout=10).status_code == 401
    # another NIP's check-in signed with this phone's own key
    theirs = _send(pipe, phone, _body(phone, nip=other.nip))
    assert theirs.status_code == 403 and _errors(theirs) == {"nip"}
    bad = _send(pipe, phone, _body(phone, lat=123.0, kind="LUNCH"))
    assert bad.status_code == 400 and _errors(bad) == {"lat", "type"}
    assert _send(pipe, phone, b"{not json").status_code == 400
    too_old = _send(pipe, phone, _body(phone, offline_age_ms=72 * 3600 * 1000 + 1))
    assert too_old.status_code == 400 and _errors(too_old) == {"offline_age_ms"}
    event_id = json.loads(body)["event_id"]
    assert _send(pipe, phone, body).status_code == 202
    reused = _send(pipe, other, _body(other, event_id=event_id))  # another NIP's event id
    assert reused.status_code == 400 and _errors(reused) == {"event_id"}
    assert _on_raw(pipe, other.nip, event_id) == []


def test_oversize_bodies_are_413_before_they_are_read(pipe: Pipeline) -> None:
    phone = _phone(pipe)
    big = b'{"pad": "' + b"x" * pipe.settings.gateway.max_body_bytes + b'"}'
    assert _send(pipe, phone, big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(3):
            yield b"x" * (pipe.settings.gateway.max_body_bytes // 2)

    r = requests.post(gateway_url(pipe.settings) + "/v1/checkins", data=chunks(),
                      headers={"X-Hadir-Key": phone.key_id}, timeout=30)
    assert r.status_code == 413


def test_a_device_over_its_rate_is_told_when_to_come_back(pipe: Pipeline) -> None:
    phone = _phone(pipe)
    statuses = [_send(pipe, phone, _body(phone)).status_code
                for _ in range(pipe.settings.gateway.rate_burst)]
    assert statuses == [202] * pipe.settings.gateway.rate_burst
    r = _send(pipe, phone, _body(phone))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


def test_a_revoked_key_is_refused_at_once(pipe: Pipeline) -> None:
    phone = _phone(pipe)
    assert _send(pipe, phone, _body(phone)).status_code == 202
    assert devices.revoke(pipe.settings, nip=phone.nip) == [phone.key_id]
    assert wait_until(lambda: _send(pipe, phone, _body(phone)).status_code == 403, 5, 0.05)
    assert devices.revoke(pipe.settings, nip=phone.nip) == []  # already ended


def test_activation_codes_are_one_time_and_for_employees_only(pipe: Pipeline) -> None:
    nip = pipe.employee(photo=None)
    code = devices.issue_codes(pipe.settings, [nip])[0]["code"]
    url = gateway_url(pipe.settings) + "/v1/devices"
    phone = Phone(nip, "android-1")
    assert requests.post(url, data=phone.registration("WRONG-CODE"), timeout=10
                         ).status_code == 403
    assert requests.post(url, data=phone.registration(code), timeout=10).status_code == 201
    used = requests.post(url, data=Phone(nip, "android-2").registration(code), timeout=10)
    assert used.status_code == 403 and _errors(used) == {"activation_code"}
    bad_key = json.loads(phone.registration(code)) | {"public_key": "AAAA"}
    r = requests.post(url, data=json.dumps(bad_key), timeout=10)
    assert r.status_code in (400, 403)
    with pytest.raises(ConfigError, match="not on the employees"):
        devices.issue_codes(pipe.settings, [new_nip()])


def test_the_phone_sees_its_verdict_and_nobody_elses(pipe: Pipeline) -> None:
    phone, other = _phone(pipe), _phone(pipe)
    body = _body(phone)  # no selfie: NO_SELFIE, rejected
    event_id = json.loads(body)["event_id"]
    assert _send(pipe, phone, body).status_code == 202
    path = f"/v1/checkins/{event_id}"
    first = _send(pipe, phone, b"", path, "GET")
    assert first.status_code == 200 and first.json()["status"] in ("PENDING", "REJECTED")
    assert pipe.verdicts([event_id])
    final = _send(pipe, phone, b"", path, "GET").json()
    assert final["status"] == "REJECTED" and "NO_SELFIE" in final["reasons"]
    assert "Swafoto wajib" in final["message"] and "banding" in final["message"]
    assert _send(pipe, other, b"", path, "GET").status_code == 404
    assert _send(pipe, phone, b"", f"/v1/checkins/{uuid.uuid4()}", "GET").status_code == 404
    assert _send(pipe, phone, b"", "/v1/checkins/not-an-id", "GET").status_code == 404


def test_an_offline_check_in_counts_when_it_was_captured(pipe: Pipeline) -> None:
    """Captured at the office without signal, sent 100 minutes later: judged at its capture
    time (no clock skew); sent after three hours it is OFFLINE_DELAYED."""
    phone = _phone(pipe)
    captured = datetime.now(UTC) - timedelta(minutes=100)
    on_time = _body(phone, client_time=captured, offline_age_ms=100 * 60 * 1000)
    late = _body(phone, client_time=datetime.now(UTC) - timedelta(hours=3),
                 offline_age_ms=3 * 3600 * 1000)
    ids = [json.loads(b)["event_id"] for b in (on_time, late)]
    for b in (on_time, late):
        assert _send(pipe, phone, b).status_code == 202
    found = pipe.verdicts(ids)
    assert set(found[ids[0]]["reasons"]) == {"NO_SELFIE"}
    assert found[ids[0]]["offline_age_ms"] == 100 * 60 * 1000
    assert set(found[ids[1]]["reasons"]) == {"NO_SELFIE", "OFFLINE_DELAYED"}


def test_health_and_metrics(pipe: Pipeline) -> None:
    url = gateway_url(pipe.settings)
    assert requests.get(url + "/healthz", timeout=5).json() == {"status": "ok"}
    text = requests.get(url + "/metrics", timeout=5).text
    assert 'hadir_gateway_requests_total{route="/v1/checkins",status="202"}' in text
    assert 'hadir_gateway_request_seconds_bucket{le="0.1",route="/v1/checkins"}' in text
    assert "hadir_gateway_kafka_delivery_failures_total" in text
    assert requests.get(url + "/nowhere", timeout=5).status_code == 404
    assert requests.delete(url + "/v1/checkins", timeout=5).status_code == 405


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def _field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, _json)


@pytest.fixture(scope="module")
def any_phone(pipe: Pipeline) -> Phone:
    return _phone(pipe)


@hsettings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_body_makes_a_server_error(pipe: Pipeline, any_phone: Phone,
                                      data: st.DataObject) -> None:
    """Signed bodies of every shape (the importer token lifts the rate limit) are answered
    with a status of the contract, never a 5xx."""
    phone = any_phone
    fields = {
        "event_id": _field(st.uuids().map(str)), "nip": _field(st.just(phone.nip)),
        "type": _field(st.sampled_from(["IN", "OUT"])),
        "client_time": _field(st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)),
        "server_time": _field(st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)),
        "lat": _field(st.floats(-90, 90)), "lon": _field(st.floats(-180, 180)),
        "accuracy_m": _field(st.floats(0, 500)), "mock_location": _field(st.booleans()),
        "app_version": _field(st.text(max_size=70)),
        "selfie_jpeg": _field(st.binary(max_size=64).map(
            lambda b: base64.b64encode(b"\xff\xd8\xff" + b).decode())),
        "offline_age_ms": _field(st.integers(-10, 10**13)),
    }
    body = data.draw(st.fixed_dictionaries({}, optional=fields))
    raw = json.dumps(body).encode() if data.draw(st.booleans()) else data.draw(st.binary())
    r = _send(pipe, phone, raw, token=import_token(pipe.settings))
    assert r.status_code in (200, 202, 400, 403), (r.status_code, r.text)
    assert "errors" in r.json() or r.status_code in (200, 202)


@pytest.mark.faults
def test_kafka_stopped_mid_request_is_503_and_nothing_is_published(
        pipe: Pipeline, stack) -> None:  # type: ignore[no-untyped-def]
    phone = _phone(pipe)
    body = _body(phone)
    event_id = json.loads(body)["event_id"]
    broker = KafkaBroker(stack.infra)
    broker.down()
    try:
        started = time.monotonic()
        r = _send(pipe, phone, body)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert time.monotonic() - started < pipe.settings.gateway.kafka_timeout_s + 3
        assert wait_until(lambda: not _healthy(stack), 10)
    finally:
        broker.up()
    workers.start(stack, intake=1)  # any worker that gave up on the broker
    assert wait_until(lambda: _healthy(stack), 60)
    assert _on_raw(pipe, phone.nip, event_id) == []
    assert _send(pipe, phone, body).status_code == 202  # the phone's retry
    assert len(_on_raw(pipe, phone.nip, event_id)) == 1


@pytest.mark.faults
def test_a_202_survives_the_gateway_killed_right_after_it(pipe: Pipeline, stack) -> None:  # type: ignore[no-untyped-def]
    phone = _phone(pipe)
    body = _body(phone)
    event_id = json.loads(body)["event_id"]
    assert _send(pipe, phone, body).status_code == 202
    gateway = next(p for p in workers.running(stack) if p.name == "gateway-0")
    pid = gateway.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: gateway.pid() is None, 10)
    assert len(_on_raw(pipe, phone.nip, event_id)) == 1
    workers.start(stack, intake=1)
    assert wait_until(lambda: _healthy(stack), 60)
    again = _send(pipe, phone, body)  # the phone never saw the answer and sends it again
    assert again.status_code == 200
    assert len(_on_raw(pipe, phone.nip, event_id)) == 1


@pytest.mark.faults
def test_clickhouse_out_of_reach_is_503_not_500(pipe: Pipeline, stack) -> None:  # type: ignore[no-untyped-def]
    """A check-in's status, the phone's month and an appeal read ClickHouse: while it is down
    the phone is told to ask again later (503, Retry-After), never a 500."""
    phone = _phone(pipe)
    event_id = str(uuid.uuid4())
    appeal = json.dumps({"appeal_id": str(uuid.uuid4()), "event_id": event_id}).encode()
    server = ClickHouseServer(stack.infra)
    server.down()
    try:
        for path, method, body in ((f"/v1/checkins/{event_id}", "GET", b""),
                                   ("/v1/me", "GET", b""), ("/v1/appeals", "POST", appeal)):
            r = _send(pipe, phone, body, path, method)
            assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, (path, r.text)
            assert r.json()["errors"][0]["message"]
    finally:
        server.up()
    assert _send(pipe, phone, b"", f"/v1/checkins/{event_id}", "GET").status_code == 404
