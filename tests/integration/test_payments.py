"""The payments actor on the real RabbitMQ and MongoDB, charging the simulator served over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage
from circuitbreaker import STATE_CLOSED, STATE_OPEN
from prometheus_client import REGISTRY

from actors.runtime.host import ActorHost
from brokers.contracts.common import Line
from brokers.contracts.inventory import StockReserved
from brokers.contracts.orders import OrderCancelled, OrderLine, OrderPlaced
from brokers.contracts.payments import (
    GetPayment,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    PaymentView,
)
from brokers.rpc import QueryFailed
from ops.payment_provider import RunningSimulator, served
from tests.helpers import Tap, breaker_state, eventually, send
from tests.integration.support import outcome_count, requester

# The provider's name in this module's breaker tests: no other test's client shows under it.
PROVIDER = "breaker-test"


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    async with served() as running:
        yield running


@pytest.fixture
def start_payments(start_host, simulator, monkeypatch) -> Callable[..., Awaitable[ActorHost]]:
    """Start payments against the simulator; knobs are PaymentSettings fields (set in the environment)."""

    async def start(*, retry_delays_ms: tuple[int, ...] | None = None, **knobs) -> ActorHost:
        for name, value in knobs.items():
            monkeypatch.setenv(f"EMPORIUM_PAYMENT_{name.upper()}", str(value))
        overrides = {"emporium_payment_provider_url": simulator.url}
        if retry_delays_ms:
            overrides["emporium_retry_delays_ms"] = retry_delays_ms
        return await start_host("payments", **overrides)

    return start


def placed(order_id: str, customer_id: str = "c1", quantity: int = 3) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer_id=customer_id,
        currency="EUR",
        total_cents=quantity * 1_400,
        lines=[OrderLine(sku="MUG", quantity=quantity, unit_price_cents=1_400)],
    )


def reserved(order_id: str) -> StockReserved:
    return StockReserved(order_id=order_id, lines=[Line(sku="MUG", quantity=3)])


def cancelled(order_id: str) -> OrderCancelled:
    return OrderCancelled(order_id=order_id, customer_id="c1", reason="customer")


async def payment_of(settings, order_id: str) -> PaymentView:
    async with requester(settings) as asker:
        return await asker.ask(GetPayment(order_id=order_id), PaymentView)


def body(message: AbstractIncomingMessage, contract):
    return contract.parse(message.body)


async def applied(count: float) -> None:
    await eventually(lambda: outcome_count("payments", "applied"), until=lambda n: n >= count, what="applied")


async def place(broker, order: OrderPlaced) -> None:
    """Send order.placed and wait until payments has it (the events of an order are handled concurrently)."""
    before = await outcome_count("payments", "applied")
    await send(broker, order, correlation_id=order.order_id)
    await applied(before + 1)


async def test_a_reserved_order_is_charged_its_total_once_though_stock_reserved_comes_twice(
    settings, broker, simulator, start_payments
):
    await start_payments()
    await place(broker, placed("o-1"))
    before = await outcome_count("payments", "applied")
    async with Tap(settings.rabbitmq_url) as tap:
        # The same event twice under two message ids: the inbox cannot tell them apart, payments must.
        await send(broker, reserved("o-1"), correlation_id="o-1")
        await send(broker, reserved("o-1"), correlation_id="o-1")
        (message,) = await tap.wait_for("payment.captured")
        await applied(before + 2)

    captured = body(message, PaymentCaptured)
    assert (captured.order_id, captured.customer_id, captured.amount_cents, captured.currency) == (
        "o-1",
        "c1",
        4_200,
        "EUR",
    )
    assert message.correlation_id == "o-1"
    assert len(tap.of_type("payment.captured")) == 1
    assert (await simulator.control.stats()).charges == 1
    view = await payment_of(settings, "o-1")
    assert (view.status, view.amount_cents) == ("captured", 4_200)
    assert view.provider_reference == captured.provider_reference


async def test_a_decline_fails_the_payment_at_once_without_retrying(
    settings, broker, simulator, start_payments
):
    await simulator.control.behave(decline_customers=["c-poor"])
    await start_payments()
    await place(broker, placed("o-2", customer_id="c-poor"))
    retried = await outcome_count("payments", "retried")
    async with Tap(settings.rabbitmq_url) as tap:
        await send(broker, reserved("o-2"), correlation_id="o-2")
        (message,) = await tap.wait_for("payment.failed")

    failed = body(message, PaymentFailed)
    assert (failed.reason, failed.detail) == ("declined", "card_declined")
    stats = await simulator.control.stats()
    assert (stats.requests, stats.declines, stats.charges) == (1, 1, 0)
    assert await outcome_count("payments", "retried") == retried
    view = await payment_of(settings, "o-2")
    assert (view.status, view.failure) == ("failed", "declined: card_declined")


async def test_provider_errors_are_retried_until_it_recovers_and_the_order_is_charged_once(
    settings, broker, simulator, start_payments
):
    await start_payments(breaker_failures=100)
    await simulator.control.behave(error_rate=1.0)
    await place(broker, placed("o-3"))
    retried = await outcome_count("payments", "retried")
    async with Tap(settings.rabbitmq_url) as tap:
        await send(broker, reserved("o-3"), correlation_id="o-3")
        await eventually(
            lambda: outcome_count("payments", "retried"), until=lambda n: n >= retried + 1, what="a retry"
        )
        await simulator.control.behave()
        await tap.wait_for("payment.captured")

    stats = await simulator.control.stats()
    assert stats.errors >= 3  # at least one handling's quick attempts all failed
    assert stats.charges == 1
    assert (await payment_of(settings, "o-3")).status == "captured"


async def test_the_breaker_opens_spares_the_provider_while_open_and_the_payment_completes_after(
    settings, broker, simulator, start_payments
):
    await start_payments(
        retry_delays_ms=(200, 400, 800, 1_600, 3_200, 6_400),
        provider_attempts=3,
        breaker_failures=3,
        breaker_reset_s=2.5,
        provider_name=PROVIDER,
    )
    await simulator.control.behave(error_rate=1.0)
    await place(broker, placed("o-4"))
    async with Tap(settings.rabbitmq_url) as tap:
        await send(broker, reserved("o-4"), correlation_id="o-4")
        await eventually(
            lambda: breaker_state(PROVIDER), until=lambda state: state == STATE_OPEN, what="open"
        )
        calls_when_opened = (await simulator.control.stats()).requests
        retried = await outcome_count("payments", "retried")
        # Two more retries (0.2 s and 0.6 s after it opened, well within its 2.5 s): at least one
        # handled entirely while it was open.
        await eventually(
            lambda: outcome_count("payments", "retried"), until=lambda n: n >= retried + 2, what="2 retries"
        )
        assert await breaker_state(PROVIDER) == STATE_OPEN
        assert (await simulator.control.stats()).requests == calls_when_opened
        assert tap.of_type("payment.failed") == []

        await simulator.control.behave()
        await tap.wait_for("payment.captured")

    assert await breaker_state(PROVIDER) == STATE_CLOSED
    assert (await simulator.control.stats()).charges == 1


async def test_a_provider_down_through_every_retry_fails_the_payment_as_unavailable(
    settings, broker, simulator, start_payments
):
    await start_payments(breaker_failures=100)
    await simulator.control.behave(error_rate=1.0)
    await place(broker, placed("o-5"))
    async with Tap(settings.rabbitmq_url) as tap:
        await send(broker, reserved("o-5"), correlation_id="o-5")
        (message,) = await tap.wait_for("payment.failed")

    assert body(message, PaymentFailed).reason == "unavailable"
    assert "HTTP 503" in body(message, PaymentFailed).detail
    assert (await simulator.control.stats()).charges == 0
    assert (await payment_of(settings, "o-5")).failure.startswith("unavailable:")


def _payments_transactions(below_s: str) -> tuple[float, float]:
    """How many payments transactions committed in all, and how many of them in under ``below_s``."""
    labels = {"actor": "payments"}
    total = REGISTRY.get_sample_value("emporium_transaction_duration_seconds_count", labels) or 0.0
    quick = REGISTRY.get_sample_value(
        "emporium_transaction_duration_seconds_bucket", {**labels, "le": below_s}
    )
    return total, quick or 0.0


async def test_a_slow_provider_is_waited_on_outside_every_transaction(
    settings, broker, simulator, start_payments
):
    # The provider answers each call after 2.5 s: a transaction that waited on it would last that long.
    await start_payments(provider_timeout_s=10)
    await simulator.control.behave(latency_ms=2_500)
    total_before, quick_before = _payments_transactions("2.5")
    await place(broker, placed("o-slow"))
    async with Tap(settings.rabbitmq_url) as tap:
        await send(broker, reserved("o-slow"), correlation_id="o-slow")
        await tap.wait_for("payment.captured")
        await send(broker, cancelled("o-slow"), correlation_id="o-slow")
        await tap.wait_for("payment.refunded")

    total, quick = _payments_transactions("2.5")
    assert total - total_before >= 3  # placed, reserved (charged), cancelled (refunded)
    assert quick - quick_before == total - total_before, "a transaction lasted as long as a provider call"
    stats = await simulator.control.stats()
    assert (stats.charges, stats.refunds) == (1, 1)


async def test_a_cancel_after_the_capture_refunds_it_once(settings, broker, simulator, start_payments):
    await start_payments()
    await place(broker, placed("o-6"))
    before = await outcome_count("payments", "applied")
    async with Tap(settings.rabbitmq_url) as tap:
        await send(broker, reserved("o-6"), correlation_id="o-6")
        await tap.wait_for("payment.captured")
        await send(broker, cancelled("o-6"), correlation_id="o-6")
        await send(broker, cancelled("o-6"), correlation_id="o-6")
        (message,) = await tap.wait_for("payment.refunded")
        await applied(before + 3)

    refunded = body(message, PaymentRefunded)
    assert (refunded.order_id, refunded.amount_cents) == ("o-6", 4_200)
    assert len(tap.of_type("payment.refunded")) == 1
    stats = await simulator.control.stats()
    assert (stats.charges, stats.refunds, stats.refunded_cents) == (1, 1, 4_200)
    assert (await payment_of(settings, "o-6")).status == "refunded"


async def test_a_reservation_that_comes_after_the_cancel_charges_nothing(
    settings, broker, simulator, start_payments
):
    await start_payments()
    await place(broker, placed("o-7"))
    before = await outcome_count("payments", "applied")
    async with Tap(settings.rabbitmq_url) as tap:
        await send(broker, cancelled("o-7"), correlation_id="o-7")
        await applied(before + 1)
        await send(broker, reserved("o-7"), correlation_id="o-7")
        await applied(before + 2)

    assert [m.type for m in tap.messages if m.type.startswith("payment.")] == []
    assert await simulator.control.ledger("o-7") == []
    with pytest.raises(QueryFailed, match="cancelled before any payment"):
        await payment_of(settings, "o-7")


async def capture_behind_payments_back(simulator: RunningSimulator, order: OrderPlaced) -> str:
    """Charge the provider under the order's key as payments would, without payments hearing the
    answer (a request that timed out, a handling that failed after it): the provider's charge id."""
    request = {
        "idempotency_key": order.order_id,
        "amount_cents": order.total_cents,
        "currency": order.currency,
        "customer_id": order.customer_id,
    }
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        response = await http.post("/charges", json=request)
    response.raise_for_status()
    return response.json()["charge_id"]


async def refunded_once(simulator: RunningSimulator, order_id: str, charge_id: str) -> None:
    (charge,) = await simulator.control.ledger(order_id)
    assert (charge.charge_id, charge.status, charge.refunded_cents) == (charge_id, "refunded", 4_200)
    assert len(charge.refunds) == 1
    assert (await simulator.control.stats()).charges == 1  # the capture made behind payments' back


async def test_a_capture_whose_answer_was_lost_is_found_after_the_cancel_and_refunded(
    settings, broker, simulator, start_payments
):
    await start_payments()
    await place(broker, placed("o-11"))
    charge_id = await capture_behind_payments_back(simulator, placed("o-11"))
    before = await outcome_count("payments", "applied")
    async with Tap(settings.rabbitmq_url) as tap:
        await send(broker, cancelled("o-11"), correlation_id="o-11")
        await applied(before + 1)
        # The reservation whose charge lost its answer, handled again after the cancel.
        await send(broker, reserved("o-11"), correlation_id="o-11")
        await tap.wait_for("payment.refunded")

    payment_events = [m.type for m in tap.messages if m.type.startswith("payment.")]
    assert payment_events == ["payment.captured", "payment.refunded"]
    await refunded_once(simulator, "o-11", charge_id)
    stats = await simulator.control.stats()
    # After the cancel payments only looked the charge up and refunded it: it asked for no charge.
    assert (stats.requests, stats.lookups, stats.refunds) == (3, 1, 1)
    assert (await payment_of(settings, "o-11")).status == "refunded"


async def test_a_capture_that_landed_after_the_payment_failed_as_unavailable_is_found_on_cancel(
    settings, broker, simulator, start_payments
):
    await start_payments(breaker_failures=100)
    await simulator.control.behave(error_rate=1.0)
    await place(broker, placed("o-12"))
    async with Tap(settings.rabbitmq_url) as tap:
        await send(broker, reserved("o-12"), correlation_id="o-12")
        await tap.wait_for("payment.failed")
        await simulator.control.behave()
        charge_id = await capture_behind_payments_back(simulator, placed("o-12"))
        await send(broker, cancelled("o-12"), correlation_id="o-12")
        await tap.wait_for("payment.refunded")

    payment_events = [m.type for m in tap.messages if m.type.startswith("payment.")]
    assert payment_events == ["payment.failed", "payment.captured", "payment.refunded"]
    await refunded_once(simulator, "o-12", charge_id)
    assert (await payment_of(settings, "o-12")).status == "refunded"


async def test_stock_reserved_before_its_order_is_remembered_and_charged_when_the_order_comes(
    settings, broker, simulator, start_payments
):
    await start_payments()
    before = await outcome_count("payments", "applied")
    retried = await outcome_count("payments", "retried")
    async with Tap(settings.rabbitmq_url) as tap:
        await send(broker, reserved("o-8"), correlation_id="o-8")
        await applied(before + 1)
        assert (await simulator.control.stats()).requests == 0
        await send(broker, placed("o-8"), correlation_id="o-8")
        (message,) = await tap.wait_for("payment.captured")

    assert body(message, PaymentCaptured).amount_cents == 4_200
    assert await outcome_count("payments", "retried") == retried


async def test_an_order_placed_and_reserved_at_the_same_moment_is_charged_once(
    settings, broker, simulator, start_payments
):
    await start_payments()
    before = await outcome_count("payments", "applied")
    async with Tap(settings.rabbitmq_url) as tap:
        for n in range(5):
            await send(broker, placed(f"o-10-{n}"), correlation_id=f"o-10-{n}")
            await send(broker, reserved(f"o-10-{n}"), correlation_id=f"o-10-{n}")
        captures = await tap.wait_for("payment.captured", count=5)
        await applied(before + 10)

    assert sorted(body(m, PaymentCaptured).order_id for m in captures) == [f"o-10-{n}" for n in range(5)]
    assert len(tap.of_type("payment.captured")) == 5
    assert (await simulator.control.stats()).charges == 5


async def test_a_placed_order_has_a_pending_payment_and_an_unknown_one_none(settings, broker, start_payments):
    await start_payments()
    await place(broker, placed("o-9"))

    pending = await payment_of(settings, "o-9")

    assert (pending.status, pending.amount_cents, pending.attempts) == ("pending", 4_200, 0)
    with pytest.raises(QueryFailed) as unknown:
        await payment_of(settings, "o-unknown")
    assert unknown.value.problem.status == 404
