"""Face templates and how they are kept: an enrolled face is an embedding bound to the model pack
that computed it, stored only sealed (AES-GCM) and bound to its NIP. Embeddings are biometric
data: they are never logged and their reprs are hidden."""

from __future__ import annotations

import os
import struct
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


class TemplateCipher:
    """Seals templates with AES-GCM. The blob carries the pack id in clear (to say which pack a
    refused template belongs to) and authenticates it, and the NIP it was enrolled for, as
    associated data: a template sealed for another pack or another ASN (one colleague's face
    copied under another's NIP), or altered, is refused. The key is never logged or shown."""

    MAGIC = b"HFT2"

    def __init__(self, key: bytes, pack_id: str) -> None:
        if len(key) not in (16, 24, 32):
            raise ValueError("the template key must be 16, 24 or 32 bytes")
        self._aead = AESGCM(key)
        self.pack_id = pack_id
        pack = pack_id.encode()
        self._header = self.MAGIC + struct.pack(">H", len(pack)) + pack

    def __repr__(self) -> str:
        return f"TemplateCipher(pack_id={self.pack_id!r}, key=<hidden>)"

    def seal(self, template: Template, nip: str) -> bytes:
        if template.pack_id != self.pack_id:
            raise TemplateError(f"template of pack {template.pack_id!r} cannot be sealed for "
                                f"pack {self.pack_id!r}")
        nonce = os.urandom(12)
        plain = struct.pack(">H", template.images) + template.embedding.astype("<f4").tobytes()
        return self._header + nonce + self._aead.encrypt(nonce, plain,
                                                         self._header + nip.encode())

    def open(self, blob: bytes, nip: str) -> Template:
        """The template enrolled for ``nip``; :class:`TemplateError` if it is anyone else's."""
        if not blob.startswith(self.MAGIC) or len(blob) < len(self.MAGIC) + 2:
            raise TemplateError("not a sealed face template")
        (length,) = struct.unpack_from(">H", blob, len(self.MAGIC))
        header_end = len(self.MAGIC) + 2 + length
        pack_id = blob[len(self.MAGIC) + 2:header_end].decode(errors="replace")
        if pack_id != self.pack_id:
            raise TemplateError(f"template was enrolled with model pack {pack_id!r}; this "
                                f"verifier uses {self.pack_id!r}: re-enroll the ASN")
        nonce, sealed = blob[header_end:header_end + 12], blob[header_end + 12:]
        try:
            plain = self._aead.decrypt(nonce, sealed, blob[:header_end] + nip.encode())
        except (InvalidTag, ValueError):
            raise TemplateError(f"cannot open face template as {nip}'s: wrong key, another "
                                "ASN's template, or damaged data") from None
        (images,) = struct.unpack_from(">H", plain)
        embedding = np.frombuffer(plain[2:], "<f4").astype(np.float32)
        if not np.isfinite(embedding).all():
            raise TemplateError("face template holds values that are not numbers")
        return Template(embedding, pack_id, images)
