"""``hadir gateway``: the edge served (``hadir/serving.py``)."""

from __future__ import annotations

from hadir.config import Settings
from hadir.gateway.app import create_app
from hadir.gateway.importer import import_token
from hadir.serving import serve as serve_app


def serve(settings: Settings) -> int:
    g = settings.gateway
    return serve_app(create_app(settings, import_token(settings)), g.host, g.port, g.tls_cert,
                     g.tls_key)
