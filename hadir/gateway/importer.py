"""The importer token: with it, a signed check-in keeps the server_time its body claims, so
``hadir replay`` can send a past month through the edge as its phones would have."""

from __future__ import annotations

import os
import secrets

from hadir.config import Settings


def import_token(settings: Settings) -> str:
    """The importer token: the configured one; on a locally managed stack, made once in
    ``<home>/secrets/import-token`` (mode 0600) for ``hadir replay``; else none (off)."""
    if settings.gateway.import_token or not settings.infra.managed:
        return settings.gateway.import_token
    path = settings.infra.home_path / "secrets" / "import-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        draft = path.with_name(f".import-token.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, path)  # whole or not at all; a concurrent first writer wins
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()
