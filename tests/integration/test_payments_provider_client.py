"""The provider client's retries and circuit breaker, against the simulator served on loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable

import pytest
from circuitbreaker import STATE_CLOSED as CLOSED
from circuitbreaker import STATE_HALF_OPEN as HALF_OPEN
from circuitbreaker import STATE_OPEN as OPEN

from actors.payments.domain import Captured, ChargeRequest, Declined, RefundRequest
from actors.payments.provider import PaymentSettings, ProviderClient, ProviderRefused, ProviderUnavailable
from actors.runtime.errors import RuleViolation
from ops.payment_provider import RunningSimulator, served
from tests.helpers import breaker_state, eventually


def order(key: str = "order-1", amount: int = 1_500, customer: str = "c1") -> ChargeRequest:
    return ChargeRequest(idempotency_key=key, amount_cents=amount, currency="EUR", customer_id=customer)


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    async with served() as running:
        yield running


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., ProviderClient]]:
    made: list[ProviderClient] = []

    def make(url: str, **settings) -> ProviderClient:
        made.append(ProviderClient(PaymentSettings(provider_url=url, **settings)))
        return made[-1]

    yield make
    for client in made:
        await client.close()


async def shown(client: ProviderClient) -> str | None:
    """The breaker state the client's metric shows."""
    return await breaker_state(client.settings.provider_name)


async def test_a_capture_and_a_decline_are_answers_taken_at_the_first_attempt(simulator, client_for):
    client = client_for(simulator.url)
    await simulator.control.behave(decline_customers=["c-poor"])

    captured, again = await client.charge(order()), await client.charge(order())
    declined = await client.charge(order("order-2", customer="c-poor"))

    assert isinstance(captured, Captured) and captured == again and captured.attempts == 1
    assert declined == Declined("card_declined", 1)
    assert (await simulator.control.stats()).charges == 1


async def test_errors_are_retried_a_few_times_then_reported_unavailable(simulator, client_for):
    client = client_for(simulator.url, provider_attempts=3, breaker_failures=100)
    await simulator.control.behave(error_rate=1.0)

    with pytest.raises(ProviderUnavailable) as failed:
        await client.charge(order())

    assert failed.value.attempts == 3
    assert "HTTP 503" in str(failed.value)
    assert (await simulator.control.stats()).errors == 3


async def test_a_timed_out_charge_is_retried_with_its_key_so_the_customer_is_charged_once(
    simulator, client_for
):
    client = client_for(simulator.url, provider_timeout_s=0.1, provider_attempts=2)
    await simulator.control.behave(latency_ms=300)

    with pytest.raises(ProviderUnavailable, match="ReadTimeout"):
        await client.charge(order())
    await simulator.control.behave()
    captured = await client.charge(order())

    assert isinstance(captured, Captured)
    assert (await simulator.control.stats()).charges == 1


async def test_an_unreachable_provider_is_unavailable(client_for):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    client = client_for(url, provider_attempts=2)

    with pytest.raises(ProviderUnavailable, match="ConnectError"):
        await client.charge(order())


async def test_the_breaker_opens_stops_calling_then_lets_a_call_through_and_closes(simulator, client_for):
    client = client_for(simulator.url, provider_attempts=3, breaker_failures=3, breaker_reset_s=1.0)
    await simulator.control.behave(error_rate=1.0)
    with pytest.raises(ProviderUnavailable):
        await client.charge(order())
    assert await shown(client) == OPEN
    calls = (await simulator.control.stats()).requests

    with pytest.raises(ProviderUnavailable, match="OPEN") as refused:
        await client.charge(order())
    assert refused.value.attempts == 0
    assert (await simulator.control.stats()).requests == calls

    await simulator.control.behave()
    await eventually(lambda: shown(client), until=lambda state: state == HALF_OPEN, timeout=5)
    assert isinstance(await client.charge(order()), Captured)
    assert await shown(client) == CLOSED


async def test_one_failure_while_half_open_opens_the_breaker_again(simulator, client_for):
    client = client_for(simulator.url, provider_attempts=2, breaker_failures=2, breaker_reset_s=1.0)
    await simulator.control.behave(error_rate=1.0)
    with pytest.raises(ProviderUnavailable):
        await client.charge(order())
    await eventually(lambda: shown(client), until=lambda state: state == HALF_OPEN, timeout=5)

    with pytest.raises(ProviderUnavailable) as failed:
        await client.charge(order())

    assert failed.value.attempts == 1  # the trial request, then the breaker refused the retry
    assert await shown(client) == OPEN


async def test_declines_and_successes_reset_the_count_of_failures(simulator, client_for):
    client = client_for(simulator.url, provider_attempts=1, breaker_failures=2)
    await simulator.control.behave(error_rate=1.0)
    with pytest.raises(ProviderUnavailable):
        await client.charge(order("o1"))
    await simulator.control.behave(decline_customers=["c-poor"])
    assert isinstance(await client.charge(order("o2", customer="c-poor")), Declined)
    await simulator.control.behave(error_rate=1.0)
    with pytest.raises(ProviderUnavailable):
        await client.charge(order("o3"))

    assert await shown(client) == CLOSED


async def test_a_reused_key_and_an_unknown_charge_are_refused_as_broken_rules(simulator, client_for):
    client = client_for(simulator.url)
    await client.charge(order(amount=1_500))

    with pytest.raises(ProviderRefused, match="HTTP 409"):
        await client.charge(order(amount=2_000))
    with pytest.raises(RuleViolation, match="HTTP 404"):
        await client.refund(RefundRequest("refund-order-1", "ch_unknown", 1_500))


async def test_a_refund_returns_the_providers_refund_id_and_is_made_once(simulator, client_for):
    client = client_for(simulator.url)
    captured = await client.charge(order())
    refund = RefundRequest("refund-order-1", captured.charge_id, 1_500)

    first, again = await client.refund(refund), await client.refund(refund)

    assert first == again
    assert (await simulator.control.stats()).refunds == 1


async def test_a_lookup_finds_the_capture_under_a_key_refunded_or_not(simulator, client_for):
    client = client_for(simulator.url)
    captured = await client.charge(order())

    found = await client.lookup("order-1")
    await client.refund(RefundRequest("refund-order-1", captured.charge_id, 1_500))
    found_refunded = await client.lookup("order-1")

    assert found == found_refunded == Captured(captured.charge_id, attempts=1)
    assert (await simulator.control.stats()).charges == 1  # a lookup charges nothing


async def test_a_lookup_finds_nothing_under_an_unknown_key_or_a_decline(simulator, client_for):
    client = client_for(simulator.url)
    await simulator.control.behave(decline_customers=["c-poor"])
    await client.charge(order("order-2", customer="c-poor"))

    assert await client.lookup("order-unknown") is None
    assert await client.lookup("order-2") is None
    assert (await simulator.control.stats()).lookups == 2


async def test_a_lookup_is_retried_then_reported_unavailable_during_an_outage(simulator, client_for):
    client = client_for(simulator.url, provider_attempts=2, breaker_failures=100)
    await client.charge(order())
    await simulator.control.behave(error_rate=1.0)

    with pytest.raises(ProviderUnavailable, match="lookup failed 2 times") as failed:
        await client.lookup("order-1")

    assert failed.value.attempts == 2
    assert (await simulator.control.stats()).errors == 2
