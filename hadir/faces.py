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
from hadir.config import ConfigError, Settings
from processors.face import FaceVerifier
from processors.templates import Keyring, Template, TemplateCipher


def verifier(settings: Settings, threads: int | None = None) -> FaceVerifier:
    """The configured model pack, converted and cached under the state folder on first use;
    ``threads`` (else ``face.threads``, else all cores) CPU threads."""
    return FaceVerifier(settings.face, cache_dir=settings.infra.models_path,
                        threads=threads or settings.face.threads or None)


def template_key(settings: Settings) -> bytes:
    """The AES key that seals face templates now: the keyring's current key. Never logged."""
    ring = template_keyring(settings)
    return ring.keys[ring.current]


KEYRING_FILE = "template-keys"  # in <home>/secrets: one key a line (hex), the last one current


def template_keyring(settings: Settings) -> Keyring:
    """Every template key, by id, and the current one: HADIR_SECURITY_TEMPLATE_KEY_HEX (with
    HADIR_SECURITY_TEMPLATE_OLD_KEYS_HEX) when configured; else the local stack's keyring in
    ``<home>/secrets/template-keys`` once a key has been rotated (`hadir face rekey`); else
    the one key generated once into ``<home>/secrets/template.key`` (mode 0600)."""
    security = settings.security
    if security.template_key_hex:  # checked when the settings were read
        return Keyring.of(bytes.fromhex(security.template_key_hex),
                          *(bytes.fromhex(k) for k in security.template_old_keys_hex))
    ring = settings.infra.home_path / "secrets" / KEYRING_FILE
    if ring.exists():
        keys = [bytes.fromhex(line) for line in ring.read_text().split() if line]
        return Keyring.of(keys[-1], *keys[:-1])
    return Keyring.of(_first_template_key(settings))


def rotate_template_key(settings: Settings) -> Keyring:
    """A new current key on the local stack's keyring, the older ones kept to open what they
    sealed; returns the new keyring. A configured key is rotated by configuration instead."""
    if settings.security.template_key_hex:
        raise ConfigError("the template key is configured (HADIR_SECURITY_TEMPLATE_KEY_HEX): "
                          "rotate it there (the old one into HADIR_SECURITY_TEMPLATE_OLD_KEYS_HEX"
                          "), restart the workers, then run `hadir face rekey --keep-key`")
    old = template_keyring(settings)
    keys = [*(k for kid, k in old.keys.items() if kid != old.current), old.keys[old.current],
            secrets.token_bytes(32)]
    path = settings.infra.home_path / "secrets" / KEYRING_FILE
    # Written whole under another name (0600), then renamed into place: a worker reading the
    # keyring meanwhile sees the old one or the new one, never half of one.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{KEYRING_FILE}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{k.hex()}\n" for k in keys))
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    return template_keyring(settings)


def _first_template_key(settings: Settings) -> bytes:
    """The key a local stack generates for itself the first time one is needed."""
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
    # murmur2 like kafka_io.publish and replay: one NIP's templates on one partition, so the
    # newest is the one the intake keeps
    producer = Producer({**kafka_access.confluent(settings.infra, "admin"),
                         "partitioner": "murmur2_random"})
    producer.produce(topics.FACES.name, key=nip.encode(),
                     value=codec.encode(template_record(nip, template, v.cipher(
                         template_key(settings)))))
    if producer.flush(30):
        raise TimeoutError("the face template was not acknowledged by Kafka within 30 s")
    return {"nip": nip, "photos": len(images), "pack": template.pack_id}
