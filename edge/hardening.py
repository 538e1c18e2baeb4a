"""HTTP hardening of the edge: bounded JSON bodies, security headers on every response, opt-in CORS.

All of it is pure ASGI middleware: Starlette's BaseHTTPMiddleware would buffer nothing but wraps
every response in a stream of its own, which is what Server-Sent Events must not go through.
Refusals are problems (``application/problem+json``) carrying the request id that ObserveRequests,
the outermost middleware, put in the scope before these run.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from brokers.settings import Settings
from edge.docs import DOCS_PATH
from edge.guard import IDEMPOTENCY_HEADER
from edge.headers import API_CSP, CSP, PAGE_CSP, SECURITY_HEADERS
from edge.observe import REQUEST_ID_HEADER, ObserveRequests
from edge.pages import SAGA_PAGE
from edge.problems import problem_response

BODY_TOO_LARGE = "urn:emporium:problem:body-too-large"
UNSUPPORTED_MEDIA_TYPE = "urn:emporium:problem:unsupported-media-type"

JSON = "application/json"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

# Swagger UI as edge.docs serves it: script, styles and favicon from the edge's own origin, the OpenAPI
# document and "try it out" requests too, and one inline script, allowed by its hash (added per
# response). Swagger UI sets style attributes, hence 'unsafe-inline' for styles only.
_DOCS_CSP = (
    "default-src 'none'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)

CORS_METHODS = ("GET", "POST", "PUT", "PATCH")
CORS_REQUEST_HEADERS = ("Authorization", "Content-Type", IDEMPOTENCY_HEADER)
CORS_EXPOSED_HEADERS = (REQUEST_ID_HEADER, "Location", "Retry-After")


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str, type_: str) -> None:
    response = problem_response(Request(scope), status, detail, type_=type_)
    await response(scope, receive, send)


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    # A malformed length is left to the byte count (the server refuses it before us anyway).
    return int(value) if value is not None and value.isdigit() else None


def _carries_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    # Without either header an HTTP/1.1 request has no body.
    return "transfer-encoding" in headers or (length is not None and length.strip("0") != "")


class BodySizeLimit:
    """413 for a body over ``max_bytes``: declared by Content-Length, or counted while it arrives.

    A body of unknown length is read whole (up to the limit) before the app runs, so the app either
    gets all of it or never starts: it cannot act on a body cut short.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(Headers(scope=scope))
        if declared is None:
            body = await self._read_within_limit(receive)
            if body is None:
                await self._refuse(scope, receive, send)
                return
            receive = _replaying(body, receive)
        elif declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _read_within_limit(self, receive: Receive) -> Message | None:
        """The whole body as one message (or the disconnect that cut it), None past the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is larger than {self.max_bytes} bytes"
        await _refuse(scope, receive, send, 413, detail, BODY_TOO_LARGE)


def _replaying(first: Message, receive: Receive) -> Receive:
    """``first``, then whatever ``receive`` brings (a disconnect, which streaming responses wait for)."""
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


class JsonBodiesOnly:
    """415 for a POST, PUT or PATCH body that is not declared ``application/json``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _BODY_METHODS:
            headers = Headers(scope=scope)
            declared = headers.get("content-type", "")
            media_type = declared.partition(";")[0].strip().lower()
            if _carries_body(headers) and media_type != JSON:
                detail = f"a request body must be {JSON}, not {declared or 'of no declared type'}"
                await _refuse(scope, receive, send, 415, detail, UNSUPPORTED_MEDIA_TYPE)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """The headers of ``SECURITY_HEADERS`` and a Content-Security-Policy on every response.

    A header the response set itself is kept. The docs pages get a policy that lets Swagger UI run,
    the edge's own pages one that lets them load their script and styles from the edge.
    """

    def __init__(self, app: ASGIApp, *, docs_paths: frozenset[str], page_paths: frozenset[str]) -> None:
        self.app = app
        self.docs_paths = docs_paths
        self.page_paths = page_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.docs_paths:
            await self.app(scope, receive, _DocsPage(send))
            return

        csp = PAGE_CSP if scope["path"] in self.page_paths else API_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_missing(message, csp)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _add_missing(start: Message, csp: str) -> None:
    headers = MutableHeaders(scope=start)
    for name, value in {**SECURITY_HEADERS, CSP: csp}.items():
        headers.setdefault(name, value)


class _DocsPage:
    """Holds a docs page back until its body is known, to allow exactly its inline scripts."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._start: Message | None = None
        self._chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start = message
            return
        if message["type"] != "http.response.body" or self._start is None:
            await self._send(message)
            return
        self._chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self._chunks)
        _add_missing(self._start, _DOCS_CSP.format(hashes=_script_hashes(body)))
        await self._send(self._start)
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


def _script_hashes(html: bytes) -> str:
    return "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )


def install_hardening(app: FastAPI, settings: Settings) -> None:
    """Add the hardening middlewares; call it before adding ObserveRequests, which must stay outermost.

    Outermost first: SecurityHeaders (so every answer below gets them), CORS when origins are set
    (so refusals below carry CORS headers a browser needs to read them), BodySizeLimit, JsonBodiesOnly.
    """
    if any(middleware.cls is ObserveRequests for middleware in app.user_middleware):
        raise RuntimeError("install_hardening must run before ObserveRequests is added (it stays outermost)")
    # add_middleware wraps what is there: innermost first.
    app.add_middleware(JsonBodiesOnly)
    app.add_middleware(BodySizeLimit, max_bytes=settings.emporium_max_body_bytes)
    if settings.emporium_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.emporium_cors_origins),
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            # Callers authenticate with a bearer token, never cookies: no credentialed requests.
            allow_credentials=False,
        )
    app.add_middleware(SecurityHeaders, docs_paths=frozenset({DOCS_PATH}), page_paths=frozenset({SAGA_PAGE}))
