"""processors/devices.py and the edge's pure parts with plain data: activation codes, device
keys, signatures, rate limits, the phone's messages, the body models."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hadir.gateway.bodies import BadBody, CheckinBody, parse
from hadir.gateway.messages import REASON, message
from hadir.ratelimit import RateLimiter
from processors.devices import (
    Activation,
    Directory,
    Refused,
    code_hash,
    load_public_key,
    new_code,
    sign,
)
from processors.events import Reason

NIP = "198001012005011001"
NOW = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


def spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def directory_with_code(code: str, nip: str = NIP) -> Directory:
    d = Directory()
    a = Activation(code_hash(nip, code), nip, NOW, NOW + timedelta(hours=72))
    d.apply_activation(a.code_hash, a)
    return d


def test_codes_are_random_readable_and_stored_bound_to_their_nip() -> None:
    code = new_code()
    assert len(code) == 19 and code.count("-") == 3 and code != new_code()
    assert not set(code) & set("01OI")
    assert code_hash(NIP, code) == code_hash(NIP, code.lower().replace("-", " "))
    assert code_hash(NIP, code) != code_hash("198001012005011002", code)


def test_a_code_registers_one_key_once_before_it_expires() -> None:
    code, phone = new_code(), ec.generate_private_key(ec.SECP256R1())
    d = directory_with_code(code)
    key, used = d.register(NIP, code, "android-1", spki(phone), "k1", NOW)
    assert (key.nip, key.device_id, used.used_by_key) == (NIP, "android-1", "k1")
    d.apply_activation(used.code_hash, used)
    with pytest.raises(Refused, match="sudah dipakai") as used_twice:
        d.register(NIP, code, "android-2", spki(phone), "k2", NOW)
    assert used_twice.value.status == 403
    with pytest.raises(Refused, match="kedaluwarsa"):
        directory_with_code(code).register(NIP, code, "a", spki(phone), "k",
                                           NOW + timedelta(hours=72))
    with pytest.raises(Refused, match="salah") as wrong:
        directory_with_code(code).register(NIP, new_code(), "a", spki(phone), "k", NOW)
    assert (wrong.value.status, wrong.value.field) == (403, "activation_code")
    with pytest.raises(Refused, match="salah"):  # another ASN's code
        directory_with_code(code, "198001012005011002").register(NIP, code, "a", spki(phone),
                                                                 "k", NOW)


def test_only_p256_keys_are_taken() -> None:
    code = new_code()
    other_curve = ec.generate_private_key(ec.SECP384R1())
    for der in (spki(other_curve), b"not a key"):
        with pytest.raises(Refused) as bad:
            directory_with_code(code).register(NIP, code, "a", der, "k", NOW)
        assert (bad.value.status, bad.value.field) == (400, "public_key")
    with pytest.raises(ValueError, match="P-256"):
        load_public_key(spki(other_curve))


def test_a_request_is_authenticated_by_its_keys_signature_only() -> None:
    code, phone = new_code(), ec.generate_private_key(ec.SECP256R1())
    d = directory_with_code(code)
    key, _ = d.register(NIP, code, "android-1", spki(phone), "k1", NOW)
    d.apply_key(key.key_id, key)
    body = b'{"x": 1}'
    good = sign(phone, "POST", "/v1/checkins", body)
    assert d.authenticate("k1", good, "POST", "/v1/checkins", body) == key
    thief = ec.generate_private_key(ec.SECP256R1())
    for key_id, signature, path, sent in (
            ("k1", sign(thief, "POST", "/v1/checkins", body), "/v1/checkins", body),
            ("k1", good, "/v1/checkins", b'{"x": 2}'),  # another body
            ("k1", good, "/v1/appeals", body),  # another path
            ("k1", b"\x30\x02junk", "/v1/checkins", body), ("k1", b"", "/v1/checkins", body),
            ("nobody", good, "/v1/checkins", body), (None, good, "/v1/checkins", body)):
        with pytest.raises(Refused) as refused:
            d.authenticate(key_id, signature, "POST", path, sent)
        assert refused.value.status == 401
    d.apply_key("k1", replace(key, revoked_at=NOW))
    with pytest.raises(Refused, match="dicabut") as revoked:
        d.authenticate("k1", good, "POST", "/v1/checkins", body)
    assert revoked.value.status == 403


def test_a_device_gets_its_burst_then_its_rate() -> None:
    limits = RateLimiter(per_minute=6, burst=3)
    assert [limits.take("k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limits.take("k", 0.0) == pytest.approx(10.0)  # one token every 10 s
    assert limits.take("other", 0.0) == 0.0
    assert limits.take("k", 10.0) == 0.0
    assert limits.take("k", 10.0) > 0


def test_every_reason_has_a_message_for_the_phone() -> None:
    assert set(REASON) == set(Reason)
    text = message("REJECTED", ["FACE_MISMATCH"])
    assert text.startswith("Presensi ditolak.") and "banding" in text
    assert message("ACCEPTED", []) == "Presensi diterima."


CHECKIN = {"event_id": "0b9d4f7e-8f51-4d84-9a43-93c5b3bb1c0e", "nip": NIP, "type": "IN",
           "client_time": "2026-12-01T07:20:00+07:00", "lat": -2.486, "lon": 106.41,
           "accuracy_m": 8.5, "mock_location": False, "app_version": "1.4.0",
           "selfie_jpeg": base64.b64encode(b"\xff\xd8\xff\xe0 jpeg").decode(),
           "offline_age_ms": 0}


def test_a_check_in_body_is_parsed_with_its_selfie_decoded() -> None:
    c = parse(CheckinBody, json.dumps(CHECKIN).encode())
    assert c.selfie_jpeg == b"\xff\xd8\xff\xe0 jpeg"
    assert c.client_time == datetime(2026, 12, 1, 0, 20, tzinfo=UTC)


@pytest.mark.parametrize(("change", "field"), [
    ({"event_id": "not-a-uuid"}, "event_id"), ({"nip": "12345"}, "nip"),
    ({"type": "LUNCH"}, "type"), ({"lat": 91}, "lat"), ({"lon": -180.5}, "lon"),
    ({"accuracy_m": -1}, "accuracy_m"), ({"client_time": "2026-12-01 07:20"}, "client_time"),
    ({"client_time": "2026-12-01T07:20:00"}, "client_time"),  # no offset
    ({"client_time": "2999-01-01T00:00:00Z"}, "client_time"),
    ({"mock_location": "false"}, "mock_location"), ({"app_version": "x" * 65}, "app_version"),
    ({"selfie_jpeg": "%%%"}, "selfie_jpeg"),
    ({"selfie_jpeg": base64.b64encode(b"GIF89a").decode()}, "selfie_jpeg"),
    ({"offline_age_ms": -5}, "offline_age_ms"), ({"offline_age_ms": 1.5}, "offline_age_ms"),
])
def test_every_bad_field_is_named(change: dict[str, object], field: str) -> None:
    with pytest.raises(BadBody) as bad:
        parse(CheckinBody, json.dumps({**CHECKIN, **change}).encode())
    assert [e["field"] for e in bad.value.errors] == [field]


def test_all_bad_fields_at_once_and_non_objects() -> None:
    with pytest.raises(BadBody) as bad:
        parse(CheckinBody, json.dumps({**CHECKIN, "lat": "x", "nip": 1}).encode())
    assert {e["field"] for e in bad.value.errors} == {"lat", "nip"}
    for body in (b"[]", b"nul", b"\xff", b'"text"'):
        with pytest.raises(BadBody) as bad:
            parse(CheckinBody, body)
        assert bad.value.errors == [{"field": None, "message": "the body must be a JSON object"}]
    with pytest.raises(BadBody):  # NaN is not JSON and not a coordinate
        parse(CheckinBody, json.dumps({**CHECKIN, "lat": float("nan")}).encode())
