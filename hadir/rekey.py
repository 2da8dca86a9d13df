"""``hadir face rekey``: rotate the face-template sealing key without enrolling anyone again.

On a locally managed stack a new key joins the keyring (``<home>/secrets/template-keys``) as
the current one; a configured key is rotated in the configuration instead (the new one in
HADIR_SECURITY_TEMPLATE_KEY_HEX, the old in HADIR_SECURITY_TEMPLATE_OLD_KEYS_HEX, workers
restarted), and ``--keep-key`` then only re-seals. Every template on hadir.ref.faces not
sealed with the current key is opened with the key its blob names and sealed with the current
one, on the partition it lies on. The intake opens each template with the key its blob names,
reading the keyring again when a blob names a key it does not hold yet, so its templates keep
matching throughout. Safe to run again: templates already under the current key are left."""

from __future__ import annotations

from typing import Any

from hadir import faces, topics
from hadir.config import Settings
from hadir.kafka_records import placements, write
from hadir.serde import AvroCodec, Registry
from processors.templates import TemplateCipher, TemplateError


def rekey(settings: Settings, new_key: bool = True) -> dict[str, Any]:
    """Rotate (unless ``new_key`` is False) and re-seal; what was done."""
    ring = faces.rotate_template_key(settings) if new_key else faces.template_keyring(settings)
    pack_id = faces.verifier(settings).pack_id
    cipher = TemplateCipher(ring, pack_id)
    codec = AvroCodec(topics.FACES, Registry(settings.infra.registry))
    resealed: list[tuple[int, bytes, bytes]] = []
    current = failed = 0
    problems: list[str] = []
    for key, where in placements(settings, topics.FACES).items():
        for partition, found in where.items():
            if found.value is None:
                continue
            record = codec.decode(found.value)
            try:
                blob = cipher.reseal(record["sealed"], key.decode())
            except TemplateError as exc:  # another pack, a key no longer held, damaged
                failed += 1
                problems.append(f"{key.decode()}: {exc}")
                continue
            if blob is None:
                current += 1
                continue
            resealed.append((partition, key, codec.encode({**record, "sealed": blob})))
    write(settings, topics.FACES.name, resealed)
    return {"key_id": ring.current, "keys_on_keyring": len(ring.keys),
            "resealed": len(resealed), "already_current": current, "not_opened": failed,
            "problems": problems[:20]}
