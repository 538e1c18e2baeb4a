"""Business metrics observed from emitted events, and the helpers that put trace ids in messages and logs.

The observers are called here directly, as the runtime calls them after a commit; their store is
only read by the confirmation histogram, whose arithmetic ``confirmation_seconds`` is tested alone.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import get_args

import httpx
import pytest
from faststream.rabbit import RabbitExchange
from faststream.rabbit.response import RabbitPublishCommand
from faststream.response.publish_type import PublishType
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from actors.orders import metrics as order_metrics
from actors.orders.handlers import orders
from actors.payments import metrics as payment_metrics
from actors.payments import provider
from actors.payments.handlers import payments
from actors.payments.provider import PaymentSettings, ProviderClient
from actors.runtime.actor import Actor
from actors.runtime.metrics import OUTCOMES, QueryOutcome, load_actor_metrics, start_at_zero
from actors.runtime.outbox import outbox_entry
from actors.runtime.store import Store
from brokers.contracts.orders import (
    CancelReason,
    OrderCancelled,
    OrderDelivered,
    OrderLine,
    OrderPlaced,
    OrderStep,
    OrderView,
)
from brokers.contracts.payments import PaymentCaptured, PaymentFailed, PaymentRefunded
from brokers.envelope import Envelope
from brokers.factory import _BoundedDestinations, _NamedReplies
from brokers.logs import add_trace_ids
from brokers.tracing import continued, current_carrier
from edge.observe import OTHER_METHOD, ObserveRequests
from tests.helpers import samples_at_start
from tests.orders_examples import order_placed

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LINE = OrderLine(sku="SKU-1", quantity=2, unit_price_cents=1250)
# As a host running them does: their observers register on the actors.
load_actor_metrics("orders")
load_actor_metrics("payments")
# A tracer of its own: these tests need recording spans without installing a global provider.
TRACER = TracerProvider().get_tracer("tests")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def envelope_of(event) -> Envelope:
    return Envelope.first(event)


async def observe(actor: Actor, event) -> None:
    """Run every observer the actor registered for the event, as the runtime does after commit."""
    for observer in actor.observers[event.TYPE]:
        await observer(event, envelope_of(event), None)


def placed() -> OrderPlaced:
    return order_placed("o-1", "c-1", [LINE])


def view(*steps: tuple[str, datetime]) -> OrderView:
    return OrderView(
        order_id="o-1",
        customer_id="c-1",
        status=steps[-1][0],
        lines=[LINE],
        total_cents=2500,
        currency="EUR",
        request_digest="d",
        placed_at=T0,
        updated_at=steps[-1][1],
        version=len(steps),
        history=[OrderStep(status=status, at=at) for status, at in steps],
    )


# --- registration --------------------------------------------------------------------------------


def test_the_orders_and_payments_actors_observe_the_events_their_metrics_count():
    assert set(orders.observers) == {"order.placed", "order.confirmed", "order.delivered", "order.cancelled"}
    assert set(payments.observers) == {"payment.captured", "payment.refunded"}


def test_an_actor_without_a_metrics_module_loads_none():
    probe = Actor("no-such-actor", Store)

    load_actor_metrics(probe.name)

    assert probe.observers == {}


def test_observers_of_one_event_are_kept_in_order():
    probe = Actor("probe", Store)
    first, second = object(), object()

    probe.observes(PaymentFailed)(first)
    probe.observes(PaymentFailed)(second)

    assert probe.observers == {"payment.failed": [first, second]}


@pytest.mark.parametrize("module", [order_metrics, payment_metrics, provider], ids=lambda m: m.__name__)
def test_an_actors_metrics_share_one_prefix_named_after_it(module):
    actor = module.__name__.split(".")[1]
    names = [m._name for m in vars(module).values() if isinstance(m, MetricWrapperBase)]

    assert names and [n for n in names if not n.startswith(f"emporium_{actor}_")] == []


# --- orders --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "metric"),
    [
        (placed(), "emporium_orders_placed_total"),
        (OrderDelivered(order_id="o-1", customer_id="c-1"), "emporium_orders_delivered_total"),
    ],
)
async def test_each_order_event_counts_one_order(event, metric):
    # (order.confirmed also reads the order's view: the end-to-end test covers it.)
    before = sample(metric)

    await observe(orders, event)

    assert sample(metric) == before + 1


async def test_a_cancellation_counts_under_its_reason_only():
    before = {
        reason: sample("emporium_orders_cancelled_total", reason=reason) for reason in get_args(CancelReason)
    }

    await observe(orders, OrderCancelled(order_id="o-1", customer_id="c-1", reason="out_of_stock"))

    after = {reason: sample("emporium_orders_cancelled_total", reason=reason) for reason in before}
    assert after == {**before, "out_of_stock": before["out_of_stock"] + 1}


def test_every_cancellation_reason_is_a_series_before_any_cancellation():
    exported = {
        s.labels["reason"] for s in order_metrics.CANCELLED.collect()[0].samples if s.name.endswith("_total")
    }
    assert exported == set(get_args(CancelReason))


def test_confirmation_takes_from_placing_to_the_confirmed_step():
    history = view(
        ("placed", T0),
        ("reserved", T0 + timedelta(seconds=0.5)),
        ("confirmed", T0 + timedelta(seconds=1.75)),
        ("shipped", T0 + timedelta(seconds=9)),
    )

    assert order_metrics.confirmation_seconds(history) == 1.75


def test_an_order_never_confirmed_has_no_confirmation_time():
    cancelled = view(("placed", T0), ("cancelled", T0 + timedelta(seconds=3)))

    assert order_metrics.confirmation_seconds(cancelled) is None


# --- payments ------------------------------------------------------------------------------------


def money() -> tuple[float, float, float]:
    """Captured EUR, captured USD, refunded EUR, in cents."""
    return (
        sample("emporium_payments_captured_cents_total", currency="EUR"),
        sample("emporium_payments_captured_cents_total", currency="USD"),
        sample("emporium_payments_refunded_cents_total", currency="EUR"),
    )


def test_the_money_of_the_default_currency_is_a_series_before_any_capture_or_refund():
    # The module is loaded (as a payments host does) and nothing was captured or refunded yet.
    for metric in ("emporium_payments_captured_cents_total", "emporium_payments_refunded_cents_total"):
        assert samples_at_start("actors.payments.metrics", metric, [{"currency": "EUR"}]) == [0.0]


async def test_a_currency_first_seen_in_a_capture_has_its_refunds_at_zero_too():
    assert REGISTRY.get_sample_value("emporium_payments_refunded_cents_total", {"currency": "CHF"}) is None

    await observe(
        payments,
        PaymentCaptured(
            payment_id="p-3",
            order_id="o-3",
            customer_id="c-1",
            amount_cents=700,
            currency="CHF",
            provider_reference="ref-3",
        ),
    )

    assert REGISTRY.get_sample_value("emporium_payments_refunded_cents_total", {"currency": "CHF"}) == 0.0


async def test_captures_and_refunds_add_their_cents_under_their_currency():
    before = money()

    await observe(
        payments,
        PaymentCaptured(
            payment_id="p-1",
            order_id="o-1",
            customer_id="c-1",
            amount_cents=2500,
            currency="EUR",
            provider_reference="ref-1",
        ),
    )
    await observe(
        payments,
        PaymentCaptured(
            payment_id="p-2",
            order_id="o-2",
            customer_id="c-1",
            amount_cents=999,
            currency="EUR",
            provider_reference="ref-2",
        ),
    )
    await observe(
        payments,
        PaymentRefunded(
            payment_id="p-1", order_id="o-1", customer_id="c-1", amount_cents=2500, currency="EUR"
        ),
    )

    assert money() == (before[0] + 3499, before[1], before[2] + 2500)


def test_the_provider_label_is_the_providers_short_name_never_its_url():
    settings = PaymentSettings(provider_url="https://shop:s3cret@psp.example.com/v2")

    ProviderClient(settings)

    (family,) = provider.BREAKER_STATE.collect()
    labelled = {sample.labels["provider"] for sample in family.samples}
    assert settings.provider_name in labelled
    assert all(re.fullmatch(r"[a-z][a-z0-9-]*", name) for name in labelled), labelled


# --- trace context in outbox entries and logs ----------------------------------------------------


def test_an_outbox_entry_keeps_the_trace_of_the_handler_that_wrote_it():
    event = placed()
    with TRACER.start_as_current_span("handler") as span:
        entry = outbox_entry(event, envelope_of(event))
    trace_id = trace.format_trace_id(span.get_span_context().trace_id)

    with continued(entry["trace"]):
        assert trace.get_current_span().get_span_context().trace_id == span.get_span_context().trace_id
    assert entry["trace"]["traceparent"].split("-")[1] == trace_id


def test_without_a_span_nothing_is_kept_and_nothing_is_continued():
    assert current_carrier() == {}
    with continued({}):
        assert not trace.get_current_span().get_span_context().is_valid


def test_log_lines_name_the_active_span():
    with TRACER.start_as_current_span("handler") as span:
        line = add_trace_ids(None, "info", {"event": "x"})
    context = span.get_span_context()

    assert line == {
        "event": "x",
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
    }
    assert add_trace_ids(None, "info", {"event": "y"}) == {"event": "y"}


# --- edge ----------------------------------------------------------------------------------------


async def test_an_unknown_http_method_is_counted_as_other():
    app = ObserveRequests(Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))]))
    labels = {"route": "unmatched", "status": "404"}
    before = sample("emporium_edge_requests_total", method=OTHER_METHOD, **labels)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        response = await client.request("BREW", "/nowhere")

    assert response.status_code == 404
    assert sample("emporium_edge_requests_total", method=OTHER_METHOD, **labels) == before + 1
    assert sample("emporium_edge_requests_total", method="BREW", **labels) == 0.0


def test_every_reply_address_is_one_destination_in_faststream_metrics():
    def destination(routing_key: str, exchange: str = "") -> str:
        command = RabbitPublishCommand(
            b"{}",
            _publish_type=PublishType.PUBLISH,
            routing_key=routing_key,
            exchange=RabbitExchange(exchange),
        )
        return _BoundedDestinations().get_publish_destination_name_from_cmd(command)

    assert destination("amq.rabbitmq.reply-to.g1h2AA==") == destination("amq.rabbitmq.reply-to.x9==")
    assert destination("amq.rabbitmq.reply-to.g1h2AA==") == "default.amq.rabbitmq.reply-to"
    assert destination("order.placed", "emporium.events") == "emporium.events.order.placed"


def test_a_reply_span_is_named_after_its_query_not_its_reply_address():
    def destination(routing_key: str, exchange: str = "", message_type: str | None = None) -> str:
        command = RabbitPublishCommand(
            b"{}",
            _publish_type=PublishType.PUBLISH,
            routing_key=routing_key,
            exchange=RabbitExchange(exchange),
            message_type=message_type,
        )
        return _NamedReplies().get_publish_destination_name(command)

    # The runtime types each reply after its query (QueryConsumer).
    assert destination("amq.rabbitmq.reply-to.g1h2AA==", message_type="orders.get_order.reply") == (
        "orders.get_order.reply"
    )
    assert destination("amq.rabbitmq.reply-to.g1h2AA==") == "reply"
    assert destination("order.placed", "emporium.events", "order.placed") == "emporium.events.order.placed"


def test_every_outcome_of_an_actors_messages_and_queries_starts_at_zero():
    start_at_zero("zero-test", ["zero.test_command"], ["zero.test_query"])
    for outcome in OUTCOMES:
        labels = {"actor": "zero-test", "type": "zero.test_command", "outcome": outcome}
        assert REGISTRY.get_sample_value("emporium_messages_total", labels) == 0.0
    for outcome in get_args(QueryOutcome):
        labels = {"actor": "zero-test", "type": "zero.test_query", "outcome": outcome}
        assert REGISTRY.get_sample_value("emporium_queries_total", labels) == 0.0
    assert REGISTRY.get_sample_value("emporium_outbox_published_total", {"actor": "zero-test"}) == 0.0


async def _events(request) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        yield "event: snapshot\ndata: {}\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream")


async def test_a_stream_is_timed_by_its_own_metric_and_not_as_a_request():
    app = ObserveRequests(
        Starlette(
            routes=[
                Route("/orders/{order_id}", lambda request: PlainTextResponse("ok")),
                Route("/orders/{order_id}/events", _events),
            ]
        )
    )
    answer = {"method": "GET", "route": "/orders/{order_id}", "status": "200"}
    stream = {"method": "GET", "route": "/orders/{order_id}/events", "status": "200"}
    before = {
        "answers": sample("emporium_edge_request_duration_seconds_count", **answer),
        "streams": sample("emporium_edge_stream_duration_seconds_count", route=stream["route"]),
        "stream requests": sample("emporium_edge_requests_total", **stream),
    }

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        assert (await client.get("/orders/o-1")).status_code == 200
        assert (
            (await client.get("/orders/o-1/events")).headers["content-type"].startswith("text/event-stream")
        )

    assert sample("emporium_edge_request_duration_seconds_count", **answer) == before["answers"] + 1
    assert sample("emporium_edge_request_duration_seconds_count", **stream) == 0.0
    assert (
        sample("emporium_edge_stream_duration_seconds_count", route=stream["route"]) == before["streams"] + 1
    )
    assert sample("emporium_edge_requests_total", **stream) == before["stream requests"] + 1
