"""Request ids, request metrics and request traces, for every HTTP request the edge serves.

Each request gets an id: it is returned in ``X-Request-ID``, bound to every log line written while
serving it, and used as the correlation id of the messages it sends, so one id follows a request
from the edge through every actor. Metrics are labelled by route template (``/products/{product_id}``),
never by raw path, and by method only among the standard ones, so their number of series stays bounded.
A response streamed as Server-Sent Events lasts as long as its follower watches (seconds to minutes):
its duration says nothing about how fast the edge answers, so it is timed by a metric of its own.
With tracing on (``brokers.tracing``), each request is a server span, the parent of the commands it sends,
and the edge's service (emporium-edge) in the monolith as well, where the actors are services of their own.
"""

from __future__ import annotations

import time

import structlog
from fastapi import FastAPI
from opentelemetry import trace
from prometheus_client import Counter, Histogram
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from brokers import tracing
from brokers.envelope import new_id
from edge.link import APP_NAME

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_STATE = "request_id"
UNMATCHED_ROUTE = "unmatched"
# Any token is a valid HTTP method to some servers: only these become label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
# Probes and scrapes are not worth a trace each.
_UNTRACED_PATHS = "/health$,/ready$,/metrics$"

REQUESTS = Counter(
    "emporium_edge_requests_total", "HTTP requests served by the edge", ["method", "route", "status"]
)
REQUEST_SECONDS = Histogram(
    "emporium_edge_request_duration_seconds",
    "Time to serve an HTTP request at the edge",
    ["method", "route", "status"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STREAM_SECONDS = Histogram(
    "emporium_edge_stream_duration_seconds",
    "How long a Server-Sent Events stream of the edge stayed open",
    ["route"],
    # A saga takes seconds to minutes; a follower may watch much longer.
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
)
# Known by its answer's content type rather than by its route: a stream route that refuses (401,
# 404) answers at once, and that answer's time belongs with the others.
_STREAM_CONTENT_TYPE = "text/event-stream"


def request_id_of(request: Request) -> str:
    """The id ObserveRequests gave this request (one made up on the spot outside it, as in a bare app)."""
    return request.scope.setdefault("state", {}).setdefault(_REQUEST_ID_STATE, new_id())


async def request_id(request: Request) -> str:
    """``request_id_of`` as a dependency (async: FastAPI runs a plain function in its thread pool)."""
    return request_id_of(request)


def trace_requests(app: FastAPI) -> None:
    """A server span per request, named by route template, when this process records traces."""
    if not tracing.enabled():
        return
    # Imported here: an edge that does not trace never loads the instrumentation.
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # The spans of each ASGI send/receive (every SSE chunk) would bury the request's own.
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracing.provider_for(APP_NAME),
        excluded_urls=_UNTRACED_PATHS,
        exclude_spans=["receive", "send"],
    )


class ObserveRequests:
    """ASGI middleware: request id, request log context, request count and latency."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id()
        scope.setdefault("state", {})[_REQUEST_ID_STATE] = request_id
        trace.get_current_span().set_attribute("emporium.request_id", request_id)
        # An exception that escapes the app is answered 500 by the outermost middleware.
        status, streamed = 500, False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status, streamed
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                streamed = headers.get("content-type", "").startswith(_STREAM_CONTENT_TYPE)
                headers.append(REQUEST_ID_HEADER, request_id)
            await send(message)

        started = time.perf_counter()
        try:
            # The commands the request publishes are traced as the edge's too.
            with structlog.contextvars.bound_contextvars(request_id=request_id), tracing.serving(APP_NAME):
                await self.app(scope, receive, send_with_request_id)
        finally:
            # The router records the matched route in the scope it was given.
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            method = scope["method"] if scope["method"] in _METHODS else OTHER_METHOD
            labels = (method, route, str(status))
            REQUESTS.labels(*labels).inc()
            seconds = time.perf_counter() - started
            if streamed:
                STREAM_SECONDS.labels(route).observe(seconds)
            else:
                REQUEST_SECONDS.labels(*labels).observe(seconds)
