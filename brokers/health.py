"""/health, /ready and /metrics, the same for every emporium process."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import SecretStr

from brokers.settings import Settings

log = structlog.get_logger()

Check = Callable[[], Awaitable[bool]]

METRICS_REALM = 'Bearer realm="metrics"'


class MetricsPage:
    """The Prometheus text of a registry, made in a worker thread and kept ``max_age_s``.

    Rendering every series of a process (about 1 MB here) takes long enough to stall every request
    the event loop serves; in a thread, the loop goes on meanwhile. Requests that arrive while a
    page is being made wait for that page, and a page younger than ``max_age_s`` is served again,
    so that any number of scrapers cost one rendering per ``max_age_s`` at most.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY, *, max_age_s: float = 2.0) -> None:
        self._registry = registry
        self._max_age_s = max_age_s
        self._page = b""
        self._made_at = -float("inf")
        self._lock = asyncio.Lock()

    async def read(self) -> bytes:
        async with self._lock:
            if time.monotonic() - self._made_at >= self._max_age_s:
                self._page = await asyncio.to_thread(generate_latest, self._registry)
                self._made_at = time.monotonic()
            return self._page


def _may_read_metrics(request: Request, token: SecretStr | None) -> bool:
    if token is None:
        return True
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    # Constant time: the comparison must not tell how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.get_secret_value().encode()
    )


def probe_router(checks: dict[str, Check], settings: Settings) -> APIRouter:
    """Liveness, readiness (every named dependency answers) and Prometheus metrics.

    With EMPORIUM_METRICS_TOKEN set, /metrics answers only a request bearing it (Prometheus:
    ``authorization: {credentials_file: ...}``); without, anyone who reaches the port reads it.
    """
    router = APIRouter(tags=["operations"])
    metrics_token = settings.emporium_metrics_token
    page = MetricsPage(max_age_s=settings.emporium_metrics_max_age_s)

    @router.get("/health", summary="The process is alive")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/ready",
        summary="Every dependency answers",
        responses={503: {"description": "A dependency does not answer (the body names it)"}},
    )
    async def ready() -> JSONResponse:
        results = {}
        for name, check in checks.items():
            try:
                results[name] = await check()
            except Exception as exc:  # a failing probe means "not ready", reported below
                log.warning("readiness.check_failed", check=name, error=repr(exc))
                results[name] = False
        ok = all(results.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": results}, status_code=200 if ok else 503
        )

    @router.get(
        "/metrics",
        summary="Prometheus metrics (a bearer token when EMPORIUM_METRICS_TOKEN is set)",
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Text format"},
            401: {"description": "The metrics token is set and the request does not bear it"},
        },
    )
    async def metrics(request: Request) -> Response:
        if not _may_read_metrics(request, metrics_token):
            return JSONResponse(
                {
                    "type": "urn:emporium:problem:unauthenticated",
                    "title": "Unauthenticated",
                    "status": 401,
                    "detail": "/metrics needs the metrics token: Authorization: Bearer <EMPORIUM_METRICS_TOKEN>",
                },
                status_code=401,
                media_type="application/problem+json",
                headers={"WWW-Authenticate": METRICS_REALM},
            )
        return Response(await page.read(), media_type=CONTENT_TYPE_LATEST)

    return router
