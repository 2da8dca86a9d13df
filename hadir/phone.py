"""A phone as the gateway sees one: a P-256 key, its registration body, and signed requests.
``hadir replay``, ``hadir bench`` and the tests send check-ins through the edge with it, as the
app does; it builds requests and leaves sending them to the caller's HTTP client."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hadir.config import Settings
from processors.devices import sign


def gateway_url(settings: Settings) -> str:
    g = settings.gateway
    return f"{'https' if g.tls_cert else 'http'}://{g.host}:{g.port}"


@dataclass
class Phone:
    nip: str
    device_id: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    key_id: str = ""  # set once registered

    def registration(self, code: str) -> bytes:
        """The body of ``POST /v1/devices``."""
        der = self.key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return orjson.dumps({"nip": self.nip, "activation_code": code,
                             "device_id": self.device_id,
                             "public_key": base64.b64encode(der).decode(),
                             "platform": "android", "model": "hadir-sim", "app_version": "1.0"})

    def headers(self, method: str, path: str, body: bytes = b"",
                import_token: str = "") -> dict[str, str]:
        """The signature headers of a request (and the importer token, if given)."""
        out = {"X-Hadir-Key": self.key_id, "Content-Type": "application/json",
               "X-Hadir-Signature": base64.b64encode(sign(self.key, method, path, body)).decode()}
        if import_token:
            out["X-Hadir-Import-Token"] = import_token
        return out


def checkin_body(event_id: str, nip: str, kind: str, client_time: datetime | None, lat: float,
                 lon: float, accuracy_m: float | None, mock_location: bool, app_version: str,
                 selfie: bytes | None, offline_age_ms: int = 0,
                 server_time: datetime | None = None) -> bytes:
    """The body of ``POST /v1/checkins`` (``server_time`` only for an import)."""
    body: dict[str, Any] = {
        "event_id": event_id, "nip": nip, "type": kind,
        "client_time": client_time.isoformat() if client_time else None, "lat": lat,
        "lon": lon, "accuracy_m": accuracy_m, "mock_location": mock_location,
        "app_version": app_version,
        "selfie_jpeg": base64.b64encode(selfie).decode() if selfie is not None else None,
        "offline_age_ms": offline_age_ms}
    if server_time is not None:
        body["server_time"] = server_time.isoformat()
    return orjson.dumps(body)
