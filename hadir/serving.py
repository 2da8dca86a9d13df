"""Hadir's HTTP servers (the phone edge, the dashboard) on uvicorn: uvloop and httptools, HTTPS
when a certificate and key are given, no access log (requests carry personal data) and no
server header. One process each; more of them go behind a load balancer."""

from __future__ import annotations

from typing import Any


def serve(app: Any, host: str, port: int, tls_cert: str = "", tls_key: str = "") -> int:
    """Run ``app`` until stopped; 1 if it never started (its startup failed)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
        access_log=False, server_header=False, ssl_certfile=tls_cert or None,
        ssl_keyfile=tls_key or None, timeout_keep_alive=30, limit_concurrency=10_000))
    server.run()
    return 0 if server.started else 1
