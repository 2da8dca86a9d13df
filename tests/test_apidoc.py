"""docs/api.md is what hadir/gateway/apidoc.py renders from the code, and lists every route the
gateway serves and every path DESIGN.md names. Plain data: the app is built, never started."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Route

from hadir.config import Settings
from hadir.gateway import apidoc
from hadir.gateway.app import create_app
from tests.paths import SHARED


def _routes() -> set[tuple[str, str]]:
    app = create_app(Settings())  # Kafka and ClickHouse are reached only when it starts
    return {(method, r.path) for r in app.routes if isinstance(r, Route)
            for method in r.methods or () if method != "HEAD"}


def test_the_doc_is_what_the_code_renders() -> None:
    assert apidoc.DOC.read_text(encoding="utf-8") == apidoc.render(), (
        "docs/api.md is stale: run `python -m hadir.gateway.apidoc`")


def test_every_route_of_the_gateway_is_documented() -> None:
    routes = _routes()
    assert routes, "no routes found on the gateway app"
    assert routes == {(e.method, e.path) for e in apidoc.ENDPOINTS}
    doc = apidoc.DOC.read_text(encoding="utf-8")
    for method, path in routes:
        assert f"## `{method} {path}`" in doc


def test_every_path_of_the_contract_is_documented() -> None:
    design = SHARED / "DESIGN.md"
    if not design.exists():
        pytest.skip("../shared/DESIGN.md is not here")
    text = design.read_text(encoding="utf-8")
    section = text.split("## The phone edge", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(GET|POST) (/[^`?\s]*)", section))
    assert named, "no paths found in DESIGN.md's phone edge section"
    documented = {(e.method, e.path) for e in apidoc.ENDPOINTS}
    assert named <= documented, named - documented


def test_every_body_field_has_a_meaning() -> None:
    for e in apidoc.ENDPOINTS:
        if e.body is not None:
            apidoc.fields(e.body)  # KeyError names a field added without one
