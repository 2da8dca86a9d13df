"""Phones and their keys, as plain data: one-time activation codes, registered device keys and
the signature every request of a phone carries (DESIGN.md, "The phone edge").

A phone registers once per app install with an activation code that HR issued for its ASN
(``hadir device issue``). From then on its P-256 key, held in Android Keystore or the Secure
Enclave, signs every request; the key fixes the NIP and the device_id, so a phone can neither
check in someone else nor pick a fresh device_id to dodge SHARED_DEVICE.

No I/O and no clock of its own: :class:`Directory` is the state the gateway follows from the
compacted topics (hadir.ref.activations, hadir.ref.devices) and asks; the gateway publishes
what :meth:`Directory.register` returns and answers with the status a :class:`Refused` names.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread on paper
CODE_GROUPS = 4  # XXXX-XXXX-XXXX-XXXX: 80 bits, read out or typed once
_ECDSA = ec.ECDSA(hashes.SHA256())


class Refused(Exception):
    """A request the edge refuses: the HTTP status, the field at fault (or None), the message
    the phone shows (Bahasa Indonesia) and, for 429 and 503, the seconds to wait."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.retry_after = retry_after


def new_code() -> str:
    """A fresh activation code, grouped for reading aloud."""
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(4 * CODE_GROUPS))
    return "-".join(chars[i:i + 4] for i in range(0, len(chars), 4))


def code_hash(nip: str, code: str) -> str:
    """What is stored of a code: bound to its NIP, so a code is no use for anyone else. Typing
    is forgiven (case, dashes, spaces)."""
    plain = "".join(c for c in code.upper() if c not in "- ")
    return hashlib.sha256(f"{nip}:{plain}".encode()).hexdigest()


@dataclass(frozen=True)
class Activation:
    code_hash: str
    nip: str
    issued_at: datetime
    expires_at: datetime
    used_by_key: str | None = None


@dataclass(frozen=True)
class DeviceKey:
    key_id: str
    nip: str
    device_id: str
    public_key: bytes  # DER SubjectPublicKeyInfo
    registered_at: datetime
    platform: str = ""
    model: str = ""
    app_version: str = ""
    revoked_at: datetime | None = None


def load_public_key(der: bytes) -> ec.EllipticCurvePublicKey:
    """The phone's key, which must be an EC key on P-256 (what Keystore and the Secure
    Enclave hold). ValueError otherwise."""
    try:
        key = load_der_public_key(der)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a DER SubjectPublicKeyInfo: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("not an EC P-256 public key")
    return key


def signing_bytes(method: str, path: str, body: bytes) -> bytes:
    """What a phone signs: ``METHOD \\n PATH \\n hex(sha256(body))`` (PATH with its query)."""
    return f"{method}\n{path}\n{hashlib.sha256(body).hexdigest()}".encode()


def sign(private_key: ec.EllipticCurvePrivateKey, method: str, path: str, body: bytes) -> bytes:
    """A phone's signature (DER ECDSA P-256 SHA-256): for replays, benchmarks and tests."""
    return private_key.sign(signing_bytes(method, path, body), _ECDSA)


class Directory:
    """Activation codes and device keys as the gateway knows them, and the rules for using
    them. The ``apply_*`` methods take the records of the compacted topics (None deletes)."""

    def __init__(self) -> None:
        self.activations: dict[str, Activation] = {}
        self.keys: dict[str, DeviceKey] = {}
        self._verifiers: dict[str, ec.EllipticCurvePublicKey] = {}

    def apply_activation(self, hash_: str, activation: Activation | None) -> None:
        if activation is None:
            self.activations.pop(hash_, None)
        else:
            self.activations[hash_] = activation

    def apply_key(self, key_id: str, key: DeviceKey | None) -> None:
        self._verifiers.pop(key_id, None)
        if key is None:
            self.keys.pop(key_id, None)
        else:
            self.keys[key_id] = key

    def activation_for(self, nip: str, code: str) -> Activation | None:
        return self.activations.get(code_hash(nip, code))

    def register(self, nip: str, code: str, device_id: str, public_key: bytes, key_id: str,
                 now: datetime, platform: str = "", model: str = "",
                 app_version: str = "") -> tuple[DeviceKey, Activation]:
        """The new key and the code marked used, for the caller to publish (and apply): 403
        for a wrong, used or expired code, 400 for a key that is not P-256."""
        activation = self.activation_for(nip, code)
        if activation is None or activation.nip != nip:
            raise Refused(403, "Kode aktivasi salah.", "activation_code")
        if activation.used_by_key is not None:
            raise Refused(403, "Kode aktivasi sudah dipakai.", "activation_code")
        if now >= activation.expires_at:
            raise Refused(403, "Kode aktivasi sudah kedaluwarsa; minta kode baru ke BKPSDM.",
                          "activation_code")
        try:
            load_public_key(public_key)
        except ValueError as exc:
            raise Refused(400, f"public_key: {exc}", "public_key") from None
        key = DeviceKey(key_id, nip, device_id, public_key, now, platform, model, app_version)
        return key, replace(activation, used_by_key=key_id)

    def authenticate(self, key_id: str | None, signature: bytes | None, method: str, path: str,
                     body: bytes) -> DeviceKey:
        """The key that signed this request: 401 unknown key or bad signature, 403 revoked."""
        key = self.keys.get(key_id or "")
        if key is None:
            raise Refused(401, "Perangkat belum terdaftar.")
        if key.revoked_at is not None:
            raise Refused(403, "Perangkat ini sudah dicabut; daftarkan ulang ke BKPSDM.")
        if not signature:
            raise Refused(401, "Tanda tangan permintaan tidak ada.")
        verifier = self._verifiers.get(key_id or "")
        if verifier is None:
            verifier = self._verifiers[key.key_id] = load_public_key(key.public_key)
        try:
            verifier.verify(signature, signing_bytes(method, path, body), _ECDSA)
        except InvalidSignature:
            raise Refused(401, "Tanda tangan permintaan tidak sah.") from None
        return key
