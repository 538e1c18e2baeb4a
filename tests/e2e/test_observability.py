"""Metrics and traces of one order, end to end: the real edge, every actor, RabbitMQ and MongoDB.

Every command and event is delivered twice (the saga tests' Duplicator) while the order goes through,
so the business counters are seen to move once per order, not once per delivery. Spans are recorded
in memory through a span processor this module installs for the process, as the monolith (every actor
and the edge in one process: ``emporium run``); it records only while one of these tests runs
(OpenTelemetry lets a process install a provider once, so it is switched, not removed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler, SamplingResult
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from actors.runtime.outbox import outbox_entries
from brokers import envelope, tracing
from brokers.settings import Settings
from ops.payment_provider import served
from tests.e2e.orders_support import place, stocked_sku, wait_for_order
from tests.e2e.support import User
from tests.e2e.test_saga import Duplicator
from tests.helpers import eventually


class Switch(Sampler):
    """Samples everything while on, nothing while off."""

    def __init__(self) -> None:
        self.on = False

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return (ALWAYS_ON if self.on else ALWAYS_OFF).should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return f"Switch({'on' if self.on else 'off'})"


SWITCH = Switch()
EXPORTER = InMemorySpanExporter()


@pytest.fixture(autouse=True)
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """Spans recorded in memory during the test. Autouse, so it comes before the fixtures that make
    the brokers and the edge: they are instrumented only if tracing is on when they are made."""
    if not tracing.enabled():
        tracing.install(SimpleSpanProcessor(EXPORTER), service_name="emporium", sampler=SWITCH)
    if (
        not isinstance(trace.get_tracer_provider(), TracerProvider)
        or trace.get_tracer_provider().sampler is not SWITCH
    ):
        pytest.skip("another tracer provider was installed in this process before this module's")
    EXPORTER.clear()
    SWITCH.on = True
    yield EXPORTER
    SWITCH.on = False
    EXPORTER.clear()


@pytest.fixture
async def shop(start_host, serve_edge) -> AsyncIterator[httpx.AsyncClient]:
    """Every actor and an edge, paying at a simulated provider; the carrier moves parcels quickly."""
    async with served() as provider:
        overrides = {"emporium_payment_provider_url": provider.url, "emporium_carrier_step_ms": 200}
        await start_host(**overrides)
        yield await serve_edge(**overrides)


BUSINESS = {
    "placed": ("emporium_orders_placed_total", {}),
    "confirmed": ("emporium_orders_confirmed_total", {}),
    "delivered": ("emporium_orders_delivered_total", {}),
    "cancelled": ("emporium_orders_cancelled_total", {"reason": "out_of_stock"}),
    "confirmations": ("emporium_orders_confirmation_seconds_count", {}),
    "captured_cents": ("emporium_payments_captured_cents_total", {"currency": "EUR"}),
    "refunded_cents": ("emporium_payments_refunded_cents_total", {"currency": "EUR"}),
    "order.placed published": (
        "emporium_events_published_total",
        {"actor": "orders", "type": "order.placed"},
    ),
}


def business() -> dict[str, float]:
    return {
        name: REGISTRY.get_sample_value(metric, labels) or 0.0 for name, (metric, labels) in BUSINESS.items()
    }


def skipped_duplicates(actor: str, type_: str) -> float:
    labels = {"actor": actor, "type": type_, "outcome": "duplicate"}
    return REGISTRY.get_sample_value("emporium_messages_total", labels) or 0.0


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


async def test_one_order_delivered_twice_over_counts_once(
    shop: httpx.AsyncClient, settings: Settings, admin: User, ann: User
):
    sku = await stocked_sku(shop, admin, quantity=3)
    before = business()
    seconds_before = REGISTRY.get_sample_value("emporium_orders_confirmation_seconds_sum") or 0.0
    last_duplicates = skipped_duplicates("orders", "shipment.delivered")

    async with Duplicator(settings.rabbitmq_url) as duplicator:
        response = await place(shop, ann, [{"sku": sku, "quantity": 2}])
        assert response.status_code == 202, response.text
        order = await wait_for_order(
            shop, ann, response.json()["order_id"], until=lambda o: o["status"] == "delivered"
        )
        # The second copy of the last message that moves the order has been skipped: every copy is in.
        await eventually(
            lambda: _async(skipped_duplicates("orders", "shipment.delivered")),
            until=lambda now: now > last_duplicates,
            what="the copy of shipment.delivered to be skipped by orders",
        )
    assert duplicator.copies > 10

    after = await eventually(
        lambda: _async(business()),
        until=lambda now: moved(before, now)["delivered"] == 1,
        what="delivered counted",
    )
    assert moved(before, after) == {
        "placed": 1,
        "confirmed": 1,
        "delivered": 1,
        "cancelled": 0,
        "confirmations": 1,
        "captured_cents": order["total_cents"],
        "refunded_cents": 0,
        "order.placed published": 1,
    }
    # Placed -> confirmed, by the order's own history.
    history = {step["status"]: step["at"] for step in order["history"]}
    took = (
        datetime.fromisoformat(history["confirmed"]) - datetime.fromisoformat(order["placed_at"])
    ).total_seconds()
    seconds = REGISTRY.get_sample_value("emporium_orders_confirmation_seconds_sum") - seconds_before
    assert seconds == pytest.approx(took, abs=0.002)


async def test_one_order_is_one_trace_from_the_edge_through_the_actors(
    shop: httpx.AsyncClient,
    recorded_spans: InMemorySpanExporter,
    settings: Settings,
    mongo: AsyncMongoClient,
    admin: User,
    ann: User,
):
    order_id, found = await _confirmed_order_spans(
        shop, admin, ann, recorded_spans, {"orders confirm": _handled("orders", "payment.captured")}
    )

    trace_ids = {name: span.context.trace_id for name, span in found.items()}
    assert len(set(trace_ids.values())) == 1, trace_ids
    # Each actor's span descends from the edge's request, not from a trace of its own.
    assert found["orders"].parent is not None and found["edge"].parent is None
    # The outbox keeps the trace with each entry, for a republish after a crash to continue it.
    [entry] = await outbox_entries(
        mongo[settings.database_name("orders")],
        routing_key="order.placed",
        **{"envelope.correlation_id": order_id},
    )
    assert entry["trace"]["traceparent"].split("-")[1] == trace.format_trace_id(
        found["edge"].context.trace_id
    )


async def test_each_actor_and_the_edge_trace_as_services_of_their_own_and_replies_by_their_query(
    shop: httpx.AsyncClient, recorded_spans: InMemorySpanExporter, admin: User, ann: User
):
    # Following the order asks the orders actor for it (orders.get_order) until it is confirmed.
    order_id, found = await _confirmed_order_spans(shop, admin, ann, recorded_spans)
    spans = recorded_spans.get_finished_spans()
    order_trace = [span for span in spans if span.context.trace_id == found["edge"].context.trace_id]
    by_id = {span.context.span_id: span for span in order_trace}

    assert _service(found["edge"]) == "emporium-edge"
    for actor in ("orders", "inventory", "payments"):
        assert _service(found[actor]) == f"emporium-{actor}", found[actor].name
        # The consume span FastStream starts for the message is the actor's too.
        consumed = by_id[found[actor].parent.span_id]
        assert consumed.kind is trace.SpanKind.CONSUMER, consumed.name
        assert _service(consumed) == f"emporium-{actor}", consumed.name
    # Nothing of the order is left to the process's own name; a span started under another of this
    # process (a handler's under its consume span, a publish under its handler) is of the same service
    # (a consume span continues a message published by another service).
    assert "emporium" not in {_service(span) for span in order_trace}
    strays = [
        (span.name, _service(span), _service(by_id[span.parent.span_id]))
        for span in order_trace
        if span.kind is not trace.SpanKind.CONSUMER
        and span.parent is not None
        and span.parent.span_id in by_id
        and _service(span) != _service(by_id[span.parent.span_id])
    ]
    assert strays == []
    # Among them what the outbox relay publishes, outside any handler (payment.captured here).
    assert any(
        span.kind is trace.SpanKind.PRODUCER and _service(span) == "emporium-payments" for span in order_trace
    )

    # Replies are named after their query, never after the asker's reply-to address.
    assert [span.name for span in spans if "amq.rabbitmq.reply-to" in span.name] == []
    replies = [
        span
        for span in spans
        if str((span.attributes or {}).get("messaging.rabbitmq.destination.routing_key")).startswith(
            "amq.rabbitmq.reply-to."
        )
    ]
    queries = {type_ for type_, contract in envelope.REGISTRY.items() if contract.KIND is envelope.Kind.QUERY}
    assert {span.name.rsplit(".reply ", 1)[0] for span in replies} <= queries
    order_replies = [span for span in replies if span.name == "orders.get_order.reply publish"]
    assert order_replies, sorted({span.name for span in replies})
    assert {_service(span) for span in order_replies} == {"emporium-orders"}


def _placing(span: ReadableSpan) -> bool:
    """The edge's span of POST /orders."""
    attributes = span.attributes or {}
    return (
        span.kind is trace.SpanKind.SERVER
        and attributes.get("http.route") == "/orders"
        and attributes.get("http.request.method", attributes.get("http.method")) == "POST"
    )


def _service(span: ReadableSpan) -> object:
    return span.resource.attributes.get(SERVICE_NAME)


def _handled(actor: str, type_: str):
    def matches(span: ReadableSpan) -> bool:
        attributes = span.attributes or {}
        return (
            attributes.get("emporium.actor") == actor
            and attributes.get("emporium.message.type") == type_
            and attributes.get("emporium.outcome") == "applied"
        )

    return matches


def _find(spans: Sequence[ReadableSpan], wanted: dict[str, Any], order_id: str) -> dict[str, ReadableSpan]:
    """The first span of each kind wanted; actors' spans only of this order (its correlation id)."""
    found = {}
    for name, matches in wanted.items():
        for span in spans:
            ours = (
                name == "edge" or (span.attributes or {}).get("messaging.message.conversation_id") == order_id
            )
            if ours and matches(span):
                found[name] = span
                break
    return found


async def _async(value: Any) -> Any:
    return value


async def _confirmed_order_spans(
    shop: httpx.AsyncClient,
    admin: User,
    ann: User,
    recorded_spans: InMemorySpanExporter,
    more: dict[str, Any] | None = None,
) -> tuple[str, dict[str, ReadableSpan]]:
    """Place an order and follow it until it is confirmed: its id, and its spans at the edge, orders,
    inventory and payments (and the ``more`` asked for), by name."""
    sku = await stocked_sku(shop, admin, quantity=3)
    response = await place(shop, ann, [{"sku": sku, "quantity": 1}])
    assert response.status_code == 202, response.text
    order_id = response.json()["order_id"]
    await wait_for_order(
        shop, ann, order_id, until=lambda o: o["status"] in {"confirmed", "shipped", "delivered"}
    )
    wanted = {
        "edge": _placing,
        "orders": _handled("orders", "orders.place_order"),
        "inventory": _handled("inventory", "order.placed"),
        "payments": _handled("payments", "stock.reserved"),
        **(more or {}),
    }
    found = await eventually(
        lambda: _async(_find(recorded_spans.get_finished_spans(), wanted, order_id)),
        until=lambda spans: len(spans) == len(wanted),
        what="the spans of the order at the edge, orders, inventory and payments",
    )
    return order_id, found
