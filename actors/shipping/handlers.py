"""The shipping actor: a shipment per confirmed order, moved on by the carrier.

The carrier is simulated with the runtime's timers: scheduling a shipment sets a timer that sends
``AdvanceShipment(to="dispatched")`` back to this actor one carrier step later, and dispatching sets
the one to delivered. The same command is what a carrier webhook or an operator sends; whichever
arrives second changes nothing (see ``domain``).
"""

from datetime import UTC, datetime

from actors.runtime.actor import Actor, Timer, Work
from actors.runtime.errors import NotFound
from actors.shipping import domain
from actors.shipping.store import ShippingStore
from brokers.contracts.orders import OrderCancellationRequested, OrderConfirmed
from brokers.contracts.shipping import AdvanceShipment, GetShipment, ShipmentView

NAME = "shipping"
# The carrier simulation moves each shipment on after one step.
CARRIER_STEP = Timer("carrier step", lambda settings: settings.emporium_carrier_step_ms)
shipping = Actor(NAME, ShippingStore, timers=(CARRIER_STEP,))


@shipping.handles(OrderConfirmed)
async def schedule_shipment(event: OrderConfirmed, work: Work[ShippingStore]) -> None:
    await _apply(work, domain.schedule(await work.store.find(event.order_id), event, now=datetime.now(UTC)))


@shipping.handles(AdvanceShipment)
async def advance_shipment(command: AdvanceShipment, work: Work[ShippingStore]) -> None:
    # NotFound is transient here: the order.confirmed it follows may not have been handled yet.
    shipment = await work.store.get(command.order_id)
    await _apply(work, domain.advance(shipment, command.to, now=datetime.now(UTC)))


@shipping.handles(OrderCancellationRequested)
async def stop_shipment(event: OrderCancellationRequested, work: Work[ShippingStore]) -> None:
    await _apply(work, domain.stop(await work.store.find(event.order_id), event, now=datetime.now(UTC)))


async def _apply(work: Work[ShippingStore], outcome: domain.Outcome) -> None:
    if outcome.shipment is None:
        return
    await work.store.save(outcome.shipment)
    for event in outcome.events:
        work.emit(event)
    if outcome.next_step is not None:
        step = AdvanceShipment(order_id=outcome.shipment.order_id, to=outcome.next_step)
        work.schedule(step, CARRIER_STEP)


@shipping.answers_to(GetShipment)
async def get_shipment(query: GetShipment, store: ShippingStore) -> ShipmentView:
    shipment = await store.get(query.order_id)
    if not shipment.scheduled:
        raise NotFound(f"order {query.order_id} was cancelled before a shipment was scheduled")
    return shipment.view()
