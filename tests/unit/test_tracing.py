"""Each actor and the edge trace as services of their own, in one process or one each.

The providers are made here without installing them (OpenTelemetry lets a process install one only):
``brokers.tracing`` is pointed at them for a test at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from brokers import tracing


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


def services(exporter: InMemorySpanExporter, process: str) -> tracing._Services:
    return tracing._Services(SimpleSpanProcessor(exporter), ALWAYS_ON, process)


def recorded(exporter: InMemorySpanExporter) -> dict[str, object]:
    return {span.name: span.resource.attributes.get(SERVICE_NAME) for span in exporter.get_finished_spans()}


def test_the_monolith_records_each_service_under_its_own_name_through_one_processor(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monolith = services(exporter, "emporium")
    for service in ("emporium", tracing.actor_service("orders"), "emporium-edge"):
        with monolith.provider(service).get_tracer("tests").start_as_current_span(f"span of {service}"):
            pass

    assert recorded(exporter) == {
        "span of emporium": "emporium",
        "span of emporium-orders": "emporium-orders",
        "span of emporium-edge": "emporium-edge",
    }
    assert monolith.provider("emporium") is monolith.process
    assert monolith.provider("emporium-orders") is monolith.provider("emporium-orders")


def test_otel_service_name_renames_the_process_and_its_own_service_only(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop-orders")
    # `emporium actor orders`: the actor is the process's service.
    pod = services(exporter, tracing.actor_service("orders"))

    assert pod.provider(tracing.actor_service("orders")) is pod.process
    assert pod.process.resource.attributes[SERVICE_NAME] == "shop-orders"
    assert pod.provider("emporium-edge").resource.attributes[SERVICE_NAME] == "emporium-edge"


def test_spans_started_while_serving_a_service_are_that_services(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setattr(tracing, "_services", services(exporter, "emporium"))
    # What FastStream's publishing telemetry is given (a tracer of its own: TRACER keeps what it made).
    tracer = tracing.SERVED.get_tracer("tests")

    with tracing.serving(tracing.actor_service("payments")):
        with tracer.start_as_current_span("charge"):
            tracer.start_span("publish").end()
    tracer.start_span("outside").end()

    assert recorded(exporter) == {
        "charge": "emporium-payments",
        "publish": "emporium-payments",
        "outside": "emporium",
    }
