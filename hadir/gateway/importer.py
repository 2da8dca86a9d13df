"""The importer token: with it, a signed check-in keeps the server_time its body claims, so
``hadir replay`` can send a past month through the edge as its phones would have."""

from __future__ import annotations

from hadir.config import Settings
from hadir.secrets import local_secret


def import_token(settings: Settings) -> str:
    """The configured token; on a locally managed stack, made once in
    ``<home>/secrets/import-token`` for ``hadir replay``; else none (off)."""
    if settings.gateway.import_token or not settings.infra.managed:
        return settings.gateway.import_token
    return local_secret(settings.infra, "import-token")
