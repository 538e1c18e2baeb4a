"""Shipping on the real servers: the carrier simulation walks a confirmed order's shipment through
dispatched and delivered on the runtime's timers; carrier reports are idempotent; cancelled orders
are never dispatched."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
from aio_pika.abc import AbstractIncomingMessage

from actors.runtime.outbox import applied_messages
from brokers.contracts.orders import OrderCancellationRequested, OrderConfirmed, OrderLine
from brokers.contracts.shipping import AdvanceShipment, GetShipment, ShipmentView
from brokers.envelope import Message
from brokers.factory import publish
from brokers.rpc import QueryFailed
from tests.helpers import Tap, eventually, send
from tests.integration.support import requester

STEP_MS = 200
ADVANCE = AdvanceShipment.TYPE


def confirmed(order_id: str) -> OrderConfirmed:
    return OrderConfirmed(
        order_id=order_id,
        customer_id="c-1",
        lines=[OrderLine(sku="LAMP-1", quantity=2, unit_price_cents=1_250)],
        total_cents=2_500,
        currency="EUR",
    )


async def tell(broker, message: Message, order_id: str):
    return await send(broker, message, correlation_id=order_id)


def handled(mongo, settings, type_: str):
    """How many distinct messages of a type shipping has applied (its inbox, committed with each one)."""

    async def count() -> int:
        return len(await applied_messages(mongo[settings.database_name("shipping")], type=type_))

    return count


def distinct(tap: Tap) -> list[AbstractIncomingMessage]:
    """What the tap saw, each message once, in order.

    The outbox may publish an event twice (its sweeper and the fast path racing on a slow machine):
    the same message id, which consumers skip, so it is one event.
    """
    return list({m.message_id: m for m in tap.messages}.values())


def shipment_events(tap: Tap) -> list[str]:
    """The types of the shipment events seen (the tap also sees what the test publishes)."""
    return [m.type for m in distinct(tap) if m.type.startswith("shipment.")]


def bodies(tap: Tap, type_: str) -> list[dict]:
    return [json.loads(m.body) for m in distinct(tap) if m.type == type_]


async def test_a_confirmed_order_is_scheduled_dispatched_and_delivered_once_each(
    start_host, broker, mongo, settings
):
    await start_host("shipping", emporium_carrier_step_ms=STEP_MS)
    async with Tap(settings.rabbitmq_url) as tap, requester(settings) as asker:
        envelope = await tell(broker, confirmed("o-1"), "o-1")
        await publish(broker, confirmed("o-1"), envelope)  # the same message delivered again
        await tell(broker, confirmed("o-1"), "o-1")  # the same event published again under another id

        await tap.wait_for("shipment.delivered")
        # Both carrier timers (to dispatched, to delivered) have been handled: nothing is pending.
        await eventually(handled(mongo, settings, ADVANCE), until=lambda n: n == 2, what="both carrier steps")
        await eventually(
            handled(mongo, settings, OrderConfirmed.TYPE), until=lambda n: n == 2, what="both copies"
        )
        view = await asker.ask(GetShipment(order_id="o-1"), ShipmentView)

    assert shipment_events(tap) == ["shipment.scheduled", "shipment.dispatched", "shipment.delivered"]
    assert {m.correlation_id for m in tap.messages} == {"o-1"}  # carried from cause to effect
    (scheduled,) = bodies(tap, "shipment.scheduled")
    assert scheduled["customer_id"] == "c-1"
    assert (view.shipment_id, view.carrier, view.tracking_number) == (
        scheduled["shipment_id"],
        scheduled["carrier"],
        scheduled["tracking_number"],
    )
    assert view.status == "delivered" and view.cancelled_at is None
    assert [step.status for step in view.history] == ["scheduled", "dispatched", "delivered"]
    # Each step waited for the carrier.
    assert all(
        (later.at - earlier.at).total_seconds() >= STEP_MS / 1000 for earlier, later in pairwise(view.history)
    )


async def test_carrier_reports_and_the_simulation_together_dispatch_and_deliver_once(
    start_host, broker, mongo, settings
):
    await start_host("shipping", emporium_carrier_step_ms=STEP_MS)
    async with Tap(settings.rabbitmq_url) as tap, requester(settings) as asker:
        await tell(broker, confirmed("o-2"), "o-2")
        await tap.wait_for("shipment.scheduled")
        # The webhook reports dispatch while the simulation's own step is pending, then delivery.
        await tell(broker, AdvanceShipment(order_id="o-2", to="dispatched"), "o-2")
        await eventually(
            lambda: asker.ask(GetShipment(order_id="o-2"), ShipmentView),
            until=lambda view: view.status == "dispatched",
            what="the reported dispatch",
        )
        await tell(broker, AdvanceShipment(order_id="o-2", to="delivered"), "o-2")
        await tell(broker, AdvanceShipment(order_id="o-2", to="delivered"), "o-2")  # reported twice
        # Three reports and the simulation's two steps, whichever came first.
        await eventually(handled(mongo, settings, ADVANCE), until=lambda n: n == 5, what="reports and steps")
        view = await asker.ask(GetShipment(order_id="o-2"), ShipmentView)

    assert shipment_events(tap) == ["shipment.scheduled", "shipment.dispatched", "shipment.delivered"]
    assert [step.status for step in view.history] == ["scheduled", "dispatched", "delivered"]


async def test_delivery_reported_before_dispatch_dispatches_then_delivers(
    start_host, broker, mongo, settings
):
    await start_host("shipping", emporium_carrier_step_ms=STEP_MS)
    async with Tap(settings.rabbitmq_url) as tap:
        await tell(broker, confirmed("o-3"), "o-3")
        await tap.wait_for("shipment.scheduled")
        await tell(broker, AdvanceShipment(order_id="o-3", to="delivered"), "o-3")
        await tap.wait_for("shipment.delivered")
        # The report and the simulation's step to dispatched (which then changes nothing).
        await eventually(handled(mongo, settings, ADVANCE), until=lambda n: n == 2, what="report and step")

    assert shipment_events(tap) == ["shipment.scheduled", "shipment.dispatched", "shipment.delivered"]


def cancel_request(order_id: str) -> OrderCancellationRequested:
    return OrderCancellationRequested(order_id=order_id, customer_id="c-1")


async def test_an_order_cancelled_before_dispatch_is_stopped_and_never_dispatched(
    start_host, broker, mongo, settings
):
    # A carrier step long enough that the cancel is surely handled before the dispatch timer fires.
    await start_host("shipping", emporium_carrier_step_ms=10 * STEP_MS)
    async with Tap(settings.rabbitmq_url) as tap, requester(settings) as asker:
        await tell(broker, confirmed("o-4"), "o-4")
        await tap.wait_for("shipment.scheduled")
        await tell(broker, cancel_request("o-4"), "o-4")
        await eventually(
            lambda: asker.ask(GetShipment(order_id="o-4"), ShipmentView),
            until=lambda view: view.cancelled_at is not None,
            what="the shipment stopped",
        )
        await eventually(handled(mongo, settings, ADVANCE), until=lambda n: n == 1, what="the carrier's step")
        view = await asker.ask(GetShipment(order_id="o-4"), ShipmentView)

    assert shipment_events(tap) == ["shipment.scheduled", "shipment.stopped"]
    assert view.status == "scheduled"
    (stopped,) = bodies(tap, "shipment.stopped")
    assert stopped == {"order_id": "o-4", "shipment_id": view.shipment_id}


async def test_an_order_cancelled_before_its_confirmation_arrives_gets_no_shipment(
    start_host, broker, mongo, settings
):
    await start_host("shipping", emporium_carrier_step_ms=STEP_MS)
    async with Tap(settings.rabbitmq_url) as tap, requester(settings) as asker:
        await tell(broker, cancel_request("o-5"), "o-5")
        await eventually(
            handled(mongo, settings, OrderCancellationRequested.TYPE), until=lambda n: n == 1, what="cancel"
        )
        await tell(broker, confirmed("o-5"), "o-5")
        await eventually(
            handled(mongo, settings, OrderConfirmed.TYPE), until=lambda n: n == 1, what="confirm"
        )
        with pytest.raises(QueryFailed) as missing:
            await asker.ask(GetShipment(order_id="o-5"), ShipmentView)

    assert missing.value.problem.status == 404
    assert shipment_events(tap) == ["shipment.stopped"]


async def test_a_cancel_after_dispatch_is_too_late_and_the_parcel_goes_on(
    start_host, broker, mongo, settings
):
    await start_host("shipping", emporium_carrier_step_ms=STEP_MS)
    async with Tap(settings.rabbitmq_url) as tap:
        await tell(broker, confirmed("o-6"), "o-6")
        await tap.wait_for("shipment.dispatched")
        await tell(broker, cancel_request("o-6"), "o-6")
        await eventually(
            handled(mongo, settings, OrderCancellationRequested.TYPE), until=lambda n: n == 1, what="cancel"
        )
        await tap.wait_for("shipment.delivered")

    assert shipment_events(tap) == ["shipment.scheduled", "shipment.dispatched", "shipment.delivered"]
