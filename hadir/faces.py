"""Face glue shared by the CLI, replay and the intake workers: the verifier built from the
settings, the template key, enrollment onto the compacted hadir.ref.faces topic."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hadir import kafka_access, topics
from hadir.config import Settings
from processors.face import FaceVerifier
from processors.templates import Template, TemplateCipher


def verifier(settings: Settings, threads: int | None = None) -> FaceVerifier:
    """The configured model pack, converted and cached under the state folder on first use;
    ``threads`` (else ``face.threads``, else all cores) CPU threads."""
    return FaceVerifier(settings.face, cache_dir=settings.infra.models_path,
                        threads=threads or settings.face.threads or None)


def template_key(settings: Settings) -> bytes:
    """The AES key that seals face templates: HADIR_SECURITY_TEMPLATE_KEY_HEX, or one generated
    once into the state folder (mode 0600). Never logged."""
    if settings.security.template_key_hex:  # checked when the settings were read
        return bytes.fromhex(settings.security.template_key_hex)
    path = settings.infra.home_path / "secrets" / "template.key"
    if not path.exists():
        # Written whole under another name, then linked into place: workers starting together
        # never read a half-written key, and the first link wins.
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".template.key.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
        finally:
            os.unlink(temp)
    return bytes.fromhex(path.read_text().strip())


def template_record(nip: str, template: Template, cipher: TemplateCipher) -> dict[str, Any]:
    return {"nip": nip, "pack": template.pack_id, "sealed": cipher.seal(template, nip),
            "enrolled_at": datetime.now(UTC)}


def compare(settings: Settings, a: Path, b: Path) -> dict[str, Any]:
    v = verifier(settings)
    result = v.compare(a.read_bytes(), b.read_bytes())
    return {"similarity": None if result.similarity is None else round(result.similarity, 4),
            "match": result.match, "threshold": v.threshold, "faces_a": result.faces_a,
            "faces_b": result.faces_b}


def enroll(settings: Settings, nip: str, images: list[Path]) -> dict[str, Any]:
    """Enroll one ASN from photos and publish the sealed template (takes effect at once)."""
    from confluent_kafka import Producer

    from hadir.infra import stack
    from hadir.serde import AvroCodec, Registry

    v = verifier(settings)
    template = v.enroll([p.read_bytes() for p in images])
    stack.up(settings, progress=False)
    codec = AvroCodec(topics.FACES, Registry(settings.infra.registry))
    producer = Producer(kafka_access.confluent(settings.infra, "admin"))
    producer.produce(topics.FACES.name, key=nip.encode(),
                     value=codec.encode(template_record(nip, template, v.cipher(
                         template_key(settings)))))
    if producer.flush(30):
        raise TimeoutError("the face template was not acknowledged by Kafka within 30 s")
    return {"nip": nip, "photos": len(images), "pack": template.pack_id}
