"""Face templates and how they are kept: an enrolled face is an embedding bound to the model pack
that computed it, stored only sealed (AES-GCM) and bound to its NIP. Embeddings are biometric
data: they are never logged and their reprs are hidden."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


@dataclass(frozen=True, slots=True, eq=False)
class Template:
    """An enrolled face: the renormalised mean of the enrollment embeddings, bound to the pack
    that computed it (an embedding means nothing to another recognizer)."""

    embedding: np.ndarray = field(repr=False)
    pack_id: str
    images: int


class TemplateError(ValueError):
    """A sealed template cannot be opened: another pack, another key, or damaged."""


class UnknownKey(TemplateError):
    """The template names a sealing key this keyring does not hold (rotated since it started:
    the holder may read its keyring again)."""


def key_id(key: bytes) -> str:
    """A sealing key's id: a fingerprint of the key (12 hex digits of a SHA-256 over it), so a
    configured key names itself and two keys never share an id. Says nothing about the key."""
    return hashlib.sha256(b"hadir-template-key\0" + key).hexdigest()[:12]


@dataclass(frozen=True, eq=False)
class Keyring:
    """The template sealing keys by id: ``current`` seals, every key opens what it sealed, so
    keys can be rotated (``hadir face rekey``) without enrolling anyone again."""

    current: str
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ValueError("the current template key is not on the keyring")
        for kid, key in self.keys.items():
            if len(key) not in (16, 24, 32):
                raise ValueError("the template key must be 16, 24 or 32 bytes")
            if kid != key_id(key):
                raise ValueError(f"template key {kid!r} is not that key's id")

    @classmethod
    def of(cls, current: bytes, *older: bytes) -> Keyring:
        """A keyring sealing with ``current`` and opening with it and ``older``."""
        keys = {key_id(k): k for k in (*older, current)}
        return cls(key_id(current), keys)

    def __repr__(self) -> str:
        return f"Keyring(current={self.current!r}, ids={sorted(self.keys)!r}, keys=<hidden>)"


class TemplateCipher:
    """Seals templates with AES-GCM. The blob carries in clear, and authenticates, the pack id
    (to say which pack a refused template belongs to) and the id of the key that sealed it (so
    that keys can be rotated: the blob names the key that opens it), and authenticates the NIP
    it was enrolled for as associated data: a template sealed for another pack or another ASN
    (one colleague's face copied under another's NIP), or altered, is refused. Keys are never
    logged or shown.

    Format: ``HFT3 | u16 len | pack id | u8 len | key id | 12-byte nonce | AES-GCM(u16 images |
    float32 embedding)``, associated data: everything before the nonce, then the NIP.
    """

    MAGIC = b"HFT3"

    def __init__(self, key: bytes | Keyring, pack_id: str) -> None:
        self.keyring = key if isinstance(key, Keyring) else Keyring.of(key)
        self._aeads = {kid: AESGCM(k) for kid, k in self.keyring.keys.items()}
        self.pack_id = pack_id
        pack = pack_id.encode()
        self._pack_header = self.MAGIC + struct.pack(">H", len(pack)) + pack

    def __repr__(self) -> str:
        return (f"TemplateCipher(pack_id={self.pack_id!r}, key={self.keyring.current!r}, "
                "keys=<hidden>)")

    def seal(self, template: Template, nip: str) -> bytes:
        if template.pack_id != self.pack_id:
            raise TemplateError(f"template of pack {template.pack_id!r} cannot be sealed for "
                                f"pack {self.pack_id!r}")
        kid = self.keyring.current.encode()
        header = self._pack_header + struct.pack(">B", len(kid)) + kid
        nonce = os.urandom(12)
        plain = struct.pack(">H", template.images) + template.embedding.astype("<f4").tobytes()
        return header + nonce + self._aeads[self.keyring.current].encrypt(
            nonce, plain, header + nip.encode())

    @classmethod
    def sealed_with(cls, blob: bytes) -> tuple[str, str]:
        """The (pack id, key id) a sealed template names, read without opening it."""
        if not blob.startswith(cls.MAGIC) or len(blob) < len(cls.MAGIC) + 3:
            raise TemplateError("not a sealed face template")
        at = len(cls.MAGIC)
        (length,) = struct.unpack_from(">H", blob, at)
        pack_id = blob[at + 2:at + 2 + length].decode(errors="replace")
        at += 2 + length
        if len(blob) < at + 1:
            raise TemplateError("not a sealed face template")
        (kid_length,) = struct.unpack_from(">B", blob, at)
        kid = blob[at + 1:at + 1 + kid_length].decode(errors="replace")
        return pack_id, kid

    def open(self, blob: bytes, nip: str) -> Template:
        """The template enrolled for ``nip``; :class:`TemplateError` if it is anyone else's."""
        pack_id, kid = self.sealed_with(blob)
        if pack_id != self.pack_id:
            raise TemplateError(f"template was enrolled with model pack {pack_id!r}; this "
                                f"verifier uses {self.pack_id!r}: re-enroll the ASN")
        aead = self._aeads.get(kid)
        if aead is None:
            raise UnknownKey(f"template was sealed with key {kid!r}, which is not on this "
                             f"keyring ({', '.join(sorted(self._aeads))})")
        header_end = len(self._pack_header) + 1 + len(kid.encode())
        nonce, sealed = blob[header_end:header_end + 12], blob[header_end + 12:]
        try:
            plain = aead.decrypt(nonce, sealed, blob[:header_end] + nip.encode())
        except (InvalidTag, ValueError):
            raise TemplateError(f"cannot open face template as {nip}'s: wrong key, another "
                                "ASN's template, or damaged data") from None
        (images,) = struct.unpack_from(">H", plain)
        embedding = np.frombuffer(plain[2:], "<f4").astype(np.float32)
        if not np.isfinite(embedding).all():
            raise TemplateError("face template holds values that are not numbers")
        return Template(embedding, pack_id, images)

    def reseal(self, blob: bytes, nip: str) -> bytes | None:
        """``blob`` sealed again with the current key, or None when it already is."""
        if self.sealed_with(blob)[1] == self.keyring.current:
            return None
        return self.seal(self.open(blob, nip), nip)
