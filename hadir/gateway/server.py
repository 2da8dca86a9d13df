"""``hadir gateway``: the edge on uvicorn (uvloop, httptools), HTTPS when a certificate and key
are configured. One process; more gateways behind a load balancer share the same topics."""

from __future__ import annotations

import uvicorn

from hadir.config import Settings
from hadir.gateway.app import create_app
from hadir.gateway.importer import import_token


def serve(settings: Settings) -> int:
    g = settings.gateway
    config = uvicorn.Config(
        create_app(settings, import_token(settings)), host=g.host, port=g.port, loop="uvloop",
        http="httptools", lifespan="on", access_log=False, server_header=False,
        ssl_certfile=g.tls_cert or None, ssl_keyfile=g.tls_key or None,
        timeout_keep_alive=30, limit_concurrency=10_000)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
