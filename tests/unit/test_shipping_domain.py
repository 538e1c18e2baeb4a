from datetime import UTC, datetime, timedelta

from actors.shipping import domain
from actors.shipping.domain import CARRIERS, Status
from brokers.contracts.orders import OrderCancellationRequested, OrderConfirmed, OrderLine
from brokers.contracts.shipping import (
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentScheduled,
    ShipmentStopped,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1, T2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)


def confirmed(order_id: str = "o1") -> OrderConfirmed:
    return OrderConfirmed(
        order_id=order_id,
        customer_id="c1",
        lines=[OrderLine(sku="A", quantity=1, unit_price_cents=500)],
        total_cents=500,
        currency="EUR",
    )


def scheduled(order_id: str = "o1") -> domain.Shipment:
    outcome = domain.schedule(None, confirmed(order_id), now=T0)
    assert outcome.shipment is not None
    return outcome.shipment


def test_scheduling_names_carrier_and_tracking_number_the_same_way_every_time():
    first, again = domain.schedule(None, confirmed(), now=T0), domain.schedule(None, confirmed(), now=T1)
    assert first.shipment is not None and again.shipment is not None
    assert (first.shipment.shipment_id, first.shipment.carrier, first.shipment.tracking_number) == (
        again.shipment.shipment_id,
        again.shipment.carrier,
        again.shipment.tracking_number,
    )
    assert first.shipment.carrier in CARRIERS
    assert first.shipment.tracking_number[:2] == first.shipment.carrier[:2].upper()
    assert len(first.shipment.tracking_number) == 14 and first.shipment.tracking_number[2:].isdigit()


def test_orders_are_spread_over_every_carrier_with_distinct_ids():
    shipments = [scheduled(f"order-{n}") for n in range(60)]
    assert {s.carrier for s in shipments} == set(CARRIERS)
    assert len({s.shipment_id for s in shipments}) == len({s.tracking_number for s in shipments}) == 60


def test_scheduling_announces_the_shipment_and_asks_the_carrier_to_dispatch():
    outcome = domain.schedule(None, confirmed(), now=T0)
    shipment = outcome.shipment
    assert shipment is not None and shipment.status is Status.SCHEDULED and shipment.version == 1
    assert outcome.events == (
        ShipmentScheduled(
            shipment_id=shipment.shipment_id,
            order_id="o1",
            customer_id="c1",
            carrier=shipment.carrier,
            tracking_number=shipment.tracking_number,
        ),
    )
    assert outcome.next_step == "dispatched"


def test_dispatch_then_delivery_each_announced_once():
    dispatched = domain.advance(scheduled(), "dispatched", now=T1)
    assert dispatched.shipment is not None and dispatched.shipment.status is Status.DISPATCHED
    assert [type(e) for e in dispatched.events] == [
        ShipmentDispatched
    ] and dispatched.next_step == "delivered"

    delivered = domain.advance(dispatched.shipment, "delivered", now=T2)
    assert delivered.shipment is not None and delivered.shipment.status is Status.DELIVERED
    assert delivered.events == (ShipmentDelivered(shipment_id=delivered.shipment.shipment_id, order_id="o1"),)
    assert delivered.next_step is None
    assert [(s.status, s.at) for s in delivered.shipment.history] == [
        (Status.SCHEDULED, T0),
        (Status.DISPATCHED, T1),
        (Status.DELIVERED, T2),
    ]
    assert delivered.shipment.version == 3


def test_a_step_already_reached_changes_nothing():
    dispatched = domain.advance(scheduled(), "dispatched", now=T1).shipment
    assert dispatched is not None
    assert domain.advance(dispatched, "dispatched", now=T2) == domain.NOTHING
    delivered = domain.advance(dispatched, "delivered", now=T2).shipment
    assert delivered is not None
    for to in ("dispatched", "delivered"):
        assert domain.advance(delivered, to, now=T2) == domain.NOTHING


def test_delivered_before_dispatched_dispatches_then_delivers():
    outcome = domain.advance(scheduled(), "delivered", now=T1)
    assert outcome.shipment is not None and outcome.shipment.status is Status.DELIVERED
    assert [type(e) for e in outcome.events] == [ShipmentDispatched, ShipmentDelivered]
    assert [s.status for s in outcome.shipment.history] == [
        Status.SCHEDULED,
        Status.DISPATCHED,
        Status.DELIVERED,
    ]
    assert outcome.next_step is None


CANCEL = OrderCancellationRequested(order_id="o1", customer_id="c1")


def test_a_copy_of_the_confirmation_schedules_nothing_more():
    assert domain.schedule(scheduled(), confirmed(), now=T1) == domain.NOTHING


def test_a_stopped_shipment_is_announced_once_and_never_moved_on():
    shipment = scheduled()
    outcome = domain.stop(shipment, CANCEL, now=T1)
    stopped = outcome.shipment
    assert stopped is not None and stopped.cancelled_at == T1 and stopped.version == 2
    assert outcome.events == (ShipmentStopped(order_id="o1", shipment_id=shipment.shipment_id),)
    assert domain.stop(stopped, CANCEL, now=T2) == domain.NOTHING
    for to in ("dispatched", "delivered"):
        assert domain.advance(stopped, to, now=T2) == domain.NOTHING
    assert stopped.view().cancelled_at == T1 and stopped.view().status == "scheduled"


def test_a_cancel_before_the_confirmation_leaves_a_stop_that_nothing_schedules_or_moves():
    outcome = domain.stop(None, CANCEL, now=T0)
    stopped = outcome.shipment
    assert stopped is not None and not stopped.scheduled and stopped.version == 1
    assert outcome.events == (ShipmentStopped(order_id="o1"),)
    assert domain.schedule(stopped, confirmed(), now=T1) == domain.NOTHING
    assert domain.advance(stopped, "dispatched", now=T1) == domain.NOTHING


def test_a_cancel_after_dispatch_is_too_late_and_changes_nothing():
    dispatched = domain.advance(scheduled(), "dispatched", now=T1).shipment
    assert dispatched is not None
    assert domain.stop(dispatched, CANCEL, now=T2) == domain.NOTHING


def test_view_carries_the_whole_history():
    view = scheduled().view()
    assert (view.order_id, view.customer_id, view.status) == ("o1", "c1", "scheduled")
    assert [(step.status, step.at) for step in view.history] == [("scheduled", T0)]
    assert view.cancelled_at is None
