"""HTTP hardening: bounded JSON bodies, security headers on every answer, CORS only where configured."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from brokers.settings import Settings
from edge.docs import install_docs
from edge.hardening import (
    API_CSP,
    BODY_TOO_LARGE,
    CSP,
    SECURITY_HEADERS,
    UNSUPPORTED_MEDIA_TYPE,
    install_hardening,
)
from edge.observe import ObserveRequests
from edge.problems import PROBLEM_JSON, install_problem_handlers

MAX_BODY = 100
SHOP = "https://shop.example"
JSON_BODY = {"Content-Type": "application/json"}


class Item(BaseModel):
    name: str
    quantity: int = Field(ge=1)


def _app(**overrides: object) -> tuple[FastAPI, list[Item]]:
    """A small edge-like app, wired as the edge is; returns it and the bodies its route received."""
    received: list[Item] = []
    app = FastAPI(docs_url=None)
    install_problem_handlers(app)
    install_docs(app)
    install_hardening(app, Settings(emporium_max_body_bytes=MAX_BODY, **overrides))
    app.add_middleware(ObserveRequests)

    @app.post("/items")
    async def create(item: Item) -> Item:
        received.append(item)
        return item

    @app.post("/items/{name}/archive")
    async def archive(name: str) -> dict[str, str]:
        return {"archived": name}

    @app.get("/cacheable")
    async def cacheable(response: Response) -> dict[str, str]:
        response.headers["Cache-Control"] = "max-age=60"
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        return {"kept": "yes"}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: one\n\n"
            yield b"data: two\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return app, received


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://edge")


@pytest.fixture
def served() -> tuple[FastAPI, list[Item]]:
    return _app()


@pytest.fixture
async def client(served: tuple[FastAPI, list[Item]]) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(served[0]) as client:
        yield client


def _problem(response: httpx.Response, status: int, type_: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == type_
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def _assert_hardened(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
    assert response.headers[CSP] == API_CSP


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# --- body size -------------------------------------------------------------------------------


async def test_a_declared_length_over_the_limit_is_refused_unread(client, served):
    response = await client.post("/items", content=b" " * (MAX_BODY + 1), headers=JSON_BODY)
    body = _problem(response, 413, BODY_TOO_LARGE)
    assert f"larger than {MAX_BODY} bytes" in body["detail"]
    _assert_hardened(response)
    assert served[1] == []


async def test_a_chunked_body_growing_past_the_limit_is_refused_before_the_app_sees_it(client, served):
    # Valid JSON up to the limit: a truncated read would hand the route a plausible item.
    start = b'{"name": "ok", "quantity": 1}'
    padding = b" " * MAX_BODY
    response = await client.post("/items", content=_chunks(start, padding, b"}"), headers=JSON_BODY)
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    _problem(response, 413, BODY_TOO_LARGE)
    assert served[1] == []


async def test_a_chunked_body_within_the_limit_reaches_the_app_whole(client, served):
    chunks = _chunks(b'{"name": "lamp",', b' "quantity": 2}')
    response = await client.post("/items", content=chunks, headers=JSON_BODY)
    assert response.status_code == 200, response.text
    assert served[1] == [Item(name="lamp", quantity=2)]


# --- media type -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        ("text/plain", "text/plain"),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
        ("application/problem+json", "application/problem+json"),
        (None, "of no declared type"),
    ],
)
async def test_a_body_that_is_not_declared_json_is_refused(client, served, content_type, named):
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/items", content=b'{"name": "lamp", "quantity": 2}', headers=headers)
    body = _problem(response, 415, UNSUPPORTED_MEDIA_TYPE)
    assert "must be application/json" in body["detail"]
    assert named in body["detail"]
    assert served[1] == []


async def test_json_with_a_charset_is_accepted(client, served):
    response = await client.post(
        "/items",
        content=b'{"name": "lamp", "quantity": 2}',
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert served[1] == [Item(name="lamp", quantity=2)]


async def test_a_post_without_a_body_needs_no_content_type(client):
    response = await client.post("/items/lamp/archive")
    assert response.request.headers["content-length"] == "0"
    assert response.status_code == 200
    assert response.json() == {"archived": "lamp"}


# --- security headers -------------------------------------------------------------------------


async def test_every_answer_carries_the_security_headers(client):
    ok = await client.post("/items/lamp/archive")
    missing = await client.get("/nowhere")
    invalid = await client.post("/items", json={"name": "lamp", "quantity": 0})
    too_large = await client.post("/items", json={"name": "x" * MAX_BODY, "quantity": 1})
    streamed = await client.get("/stream")
    assert [r.status_code for r in (ok, missing, invalid, too_large, streamed)] == [200, 404, 422, 413, 200]
    for response in (ok, missing, invalid, too_large, streamed):
        _assert_hardened(response)
    assert streamed.text == "data: one\n\ndata: two\n\n"


async def test_headers_a_route_set_itself_are_kept(client):
    response = await client.get("/cacheable")
    assert response.headers["cache-control"] == "max-age=60"
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_the_docs_page_loads_swagger_ui_from_the_edge_itself_and_nothing_else(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    policy = dict(
        (directive.split()[0], directive.split()[1:]) for directive in response.headers[CSP].split("; ")
    )
    assert policy["default-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    html = response.text
    # Nothing from another origin (a CDN): the page works offline and the policy allows no host.
    for directive in policy.values():
        assert not any(source.startswith(("http:", "https:")) or "." in source for source in directive)
    assets = re.findall(r'<script src="([^"]+)"', html) + re.findall(r'<link[^>]*href="([^"]+)"', html)
    assert len(assets) == 3  # the script, the styles, the favicon
    for asset in assets:
        assert asset.startswith("/docs/assets/")
        served = await client.get(asset)
        assert served.status_code == 200 and served.content, asset
    assert "'self'" in policy["script-src"] and "'self'" in policy["style-src"]
    inline = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in policy["script-src"]
    assert "'unsafe-inline'" not in policy["script-src"]
    assert policy["connect-src"] == ["'self'"]


# --- CORS -------------------------------------------------------------------------------------


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }


async def test_cors_is_off_unless_origins_are_configured(client):
    preflight = await client.options("/items", headers=_preflight(SHOP))
    simple = await client.get("/cacheable", headers={"Origin": SHOP})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers


async def test_cors_allows_exactly_the_configured_origins():
    app, _ = _app(emporium_cors_origins=(SHOP,))
    async with _client(app) as client:
        allowed = await client.options("/items", headers=_preflight(SHOP))
        refused = await client.options("/items", headers=_preflight("https://evil.example"))
        simple = await client.get("/cacheable", headers={"Origin": SHOP})
        stranger = await client.get("/cacheable", headers={"Origin": "https://evil.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == SHOP
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-allow-origin" not in refused.headers
    assert simple.headers["access-control-allow-origin"] == SHOP
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in stranger.headers
    _assert_hardened(allowed)


@pytest.mark.parametrize("origin", ["*", "https://shop.example/", "shop.example", "ftp://shop.example"])
def test_a_cors_origin_must_be_a_plain_web_origin(origin):
    with pytest.raises(ValidationError, match="not a web origin"):
        Settings(emporium_cors_origins=(origin,))


def test_hardening_goes_inside_observe_requests():
    app = FastAPI()
    app.add_middleware(ObserveRequests)
    with pytest.raises(RuntimeError, match="before ObserveRequests"):
        install_hardening(app, Settings())
