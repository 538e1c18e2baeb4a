"""Traces: one OpenTelemetry trace follows an order from the edge request through every actor it reaches.

Tracing is off unless a process turns it on: ``configure_tracing`` does when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, exporting by OTLP
over HTTP; tests install a span processor of their own with ``install``. Off, the brokers carry no
telemetry middleware and the edge no instrumentation, and the runtime's own spans are OpenTelemetry's
no-ops.

On, the W3C ``traceparent`` travels in the AMQP headers: FastStream's telemetry middleware injects it
into every message a broker publishes and extracts it from every message a subscriber consumes; the
outbox keeps the context of the handler that emitted an entry (``current_carrier``), so a message the
sweeper republishes later still continues its trace (``continued``).

Each actor and the edge is a service of its own (``service.name`` emporium-<actor>, emporium-edge),
whichever deployment shape runs it: one tracer provider per service, all recording through the one
span processor, so the monolith's trace shows which actor did what as the pods' traces do. The
provider of the service named like the process (``configure_tracing``'s name: a pod's actor, the edge
alone) is the process's own, which ``OTEL_SERVICE_NAME`` renames.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware
from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler

# W3C trace context only, whatever OTEL_PROPAGATORS says: it is what FastStream's middleware speaks.
_W3C = TraceContextTextMapPropagator()
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# The service whose work runs in this context (``serving``); None: the process's own.
_SERVING: ContextVar[str | None] = ContextVar("emporium_serving", default=None)


def configure_tracing(service_name: str) -> bool:
    """Export this process's spans by OTLP when an endpoint is configured; whether it is.

    ``OTEL_SERVICE_NAME`` overrides ``service_name``; the exporter reads the other standard
    ``OTEL_EXPORTER_OTLP_*`` variables (headers, timeout) itself.
    """
    if not any(os.environ.get(name) for name in _ENDPOINT_VARIABLES):
        return False
    # Imported here: a process that does not export never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    install(BatchSpanProcessor(OTLPSpanExporter()), service_name=service_name)
    return True


class _Services:
    """The tracer providers of the services recording in this process, one per service name."""

    def __init__(self, processor: SpanProcessor, sampler: Sampler | None, process_service: str) -> None:
        self._processor, self._sampler = processor, sampler
        # Only the process's provider shuts the shared processor down (flushing it) at exit.
        name = os.environ.get("OTEL_SERVICE_NAME") or process_service
        self.process = self._provider(name, shutdown_on_exit=True)
        self._providers = {process_service: self.process}

    def provider(self, service: str) -> TracerProvider:
        if service not in self._providers:
            self._providers[service] = self._provider(service, shutdown_on_exit=False)
        return self._providers[service]

    def _provider(self, service: str, *, shutdown_on_exit: bool) -> TracerProvider:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider(
            sampler=self._sampler,
            resource=Resource.create({SERVICE_NAME: service}),
            shutdown_on_exit=shutdown_on_exit,
        )
        provider.add_span_processor(self._processor)
        return provider


_services: _Services | None = None


def install(processor: SpanProcessor, *, service_name: str, sampler: Sampler | None = None) -> None:
    """Record this process's spans through ``processor`` (sampled by ``sampler``, else as the
    ``OTEL_TRACES_SAMPLER`` variables say), the process being the service ``service_name``.
    OpenTelemetry lets a process install its tracer provider once."""
    global _services
    if enabled():
        raise RuntimeError("this process records its spans already")
    _services = _Services(processor, sampler, service_name)
    trace.set_tracer_provider(_services.process)


def enabled() -> bool:
    """Whether this process records spans (a provider was installed; brokers and apps made from now on
    are instrumented)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def actor_service(actor: str) -> str:
    """The service an actor's spans belong to, in whichever process it runs."""
    return f"emporium-{actor}"


def provider_for(service: str | None) -> trace.TracerProvider:
    """The tracer provider of ``service`` (None: the process's own); OpenTelemetry's global one while
    nothing was installed."""
    if _services is None:
        return trace.get_tracer_provider()
    return _services.process if service is None else _services.provider(service)


@contextmanager
def serving(service: str) -> Iterator[None]:
    """Spans started in the block by emporium's code (``TRACER``) and by the brokers' publishes
    (``SERVED``) belong to ``service``."""
    token = _SERVING.set(service)
    try:
        yield
    finally:
        _SERVING.reset(token)


class _ServedTracer(trace.Tracer):
    """Starts each span with the tracer of the service being served where it starts (``serving``)."""

    def __init__(self, *scope: Any) -> None:
        self._scope = scope
        self._tracers: dict[str | None, trace.Tracer] = {}

    def _tracer(self) -> trace.Tracer:
        service = _SERVING.get()
        tracer = self._tracers.get(service)
        if tracer is None:
            tracer = provider_for(service).get_tracer(*self._scope)
            # A tracer from before the install would stay in the process's service (or a no-op).
            if _services is not None:
                self._tracers[service] = tracer
        return tracer

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._tracer().start_span(*args, **kwargs)

    # As OpenTelemetry's ProxyTracer delegates it: the type its base declares is private to OpenTelemetry.
    def start_as_current_span(  # type: ignore[override]
        self, *args: Any, **kwargs: Any
    ) -> AbstractContextManager[trace.Span]:
        return self._tracer().start_as_current_span(*args, **kwargs)


class _ServedTracerProvider(trace.TracerProvider):
    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        return _ServedTracer(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)


# What a broker publishes is traced in the service being served: one broker connection publishes
# for every actor of a process.
SERVED = _ServedTracerProvider()
# The spans emporium's own code starts (one per message an actor handles).
TRACER = SERVED.get_tracer("emporium")


def subscriber_middlewares(service: str) -> list[Any]:
    """FastStream's telemetry for the subscribers of ``service`` when tracing is on: the span of each
    message they consume continues the trace it carried in, as a span of ``service``."""
    return [RabbitTelemetryMiddleware(tracer_provider=provider_for(service))] if enabled() else []


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
