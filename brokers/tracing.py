"""Traces: one OpenTelemetry trace follows an order from the edge request through every actor it reaches.

Tracing is off unless a process turns it on: ``configure_tracing`` does when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, exporting by OTLP
over HTTP; tests install a provider of their own with ``install``. Off, the brokers carry no telemetry
middleware and the edge no instrumentation, and the runtime's own spans are OpenTelemetry's no-ops.

On, the W3C ``traceparent`` travels in the AMQP headers: FastStream's telemetry middleware injects it
into every message a broker publishes and extracts it from every message a subscriber consumes; the
outbox keeps the context of the handler that emitted an entry (``current_carrier``), so a message the
sweeper republishes later still continues its trace (``continued``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware
from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

# The spans emporium's own code starts (one per message an actor handles).
TRACER = trace.get_tracer("emporium")
# W3C trace context only, whatever OTEL_PROPAGATORS says: it is what FastStream's middleware speaks.
_W3C = TraceContextTextMapPropagator()
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def configure_tracing(service_name: str) -> bool:
    """Export this process's spans by OTLP when an endpoint is configured; whether it is.

    ``OTEL_SERVICE_NAME`` overrides ``service_name``; the exporter reads the other standard
    ``OTEL_EXPORTER_OTLP_*`` variables (headers, timeout) itself.
    """
    if not any(os.environ.get(name) for name in _ENDPOINT_VARIABLES):
        return False
    # Imported here: a process that does not export never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)
    return True


def install(provider: trace.TracerProvider) -> None:
    """Make ``provider`` this process's tracer provider (OpenTelemetry allows this once per process)."""
    trace.set_tracer_provider(provider)


def enabled() -> bool:
    """Whether this process records spans (a provider was installed; brokers and apps made from now on
    are instrumented)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def broker_middlewares() -> list[Any]:
    """FastStream's telemetry middleware when tracing is on: it puts ``traceparent`` in what a broker
    publishes and continues the trace of what it consumes."""
    return [RabbitTelemetryMiddleware()] if enabled() else []


def current_carrier() -> dict[str, str]:
    """The current trace context as W3C headers (empty without an active span): to be kept with work
    that is carried on later."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


@contextmanager
def continued(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Run the block in the trace context ``carrier`` holds (as it is, when it holds none)."""
    if not carrier:
        yield
        return
    token = context.attach(_W3C.extract(dict(carrier)))
    try:
        yield
    finally:
        context.detach(token)
