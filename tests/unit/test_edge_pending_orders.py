"""The edge's record of orders it accepted that the orders actor has not applied yet."""

from __future__ import annotations

from datetime import UTC, datetime

from brokers.contracts.common import Line
from edge.pending import PendingOrder, PendingOrders, PlacedOrder

KEEP_S = 120.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def accepted(order_id: str = "o-1", customer_id: str = "ann", digest: str = "d-1") -> PendingOrder:
    return PendingOrder(
        order_id=order_id,
        customer_id=customer_id,
        status="accepted",
        lines=[Line(sku="MUG-1", quantity=2)],
        request_digest=digest,
        accepted_at=datetime.now(UTC),
    )


def test_an_accepted_order_is_its_customers_only() -> None:
    pending = PendingOrders(keep_s=KEEP_S)
    order = accepted()
    pending.accept(order)

    assert pending.of("o-1", "ann") == order
    assert pending.of("o-1", "bob") is None
    assert pending.of("o-2", "ann") is None


def test_an_order_orders_has_applied_is_no_longer_pending() -> None:
    pending = PendingOrders(keep_s=KEEP_S)
    pending.accept(accepted())

    pending.applied("o-1")
    pending.applied("never-accepted")

    assert pending.of("o-1", "ann") is None


def test_the_first_acceptance_of_an_order_stays() -> None:
    pending = PendingOrders(keep_s=KEEP_S)
    pending.accept(accepted(digest="first"))
    pending.accept(accepted(digest="second"))

    assert pending.of("o-1", "ann").request_digest == "first"


def test_an_acceptance_is_forgotten_once_the_order_deadline_passed() -> None:
    clock = Clock()
    pending = PendingOrders(keep_s=KEEP_S, clock=clock)
    pending.accept(accepted("old"))
    clock.now += KEEP_S - 1
    pending.accept(accepted("new"))

    at_the_deadline = pending.of("old", "ann")
    clock.now += 1
    past_it = pending.of("old", "ann")

    assert at_the_deadline is not None and past_it is None
    assert pending.of("new", "ann") is not None


def test_an_applied_order_is_remembered_as_placed_for_its_customer_only_and_the_oldest_forgotten() -> None:
    pending = PendingOrders(keep_s=KEEP_S, placed_remembered=2)
    orders = [accepted(order_id) for order_id in ("o-1", "o-2", "o-3")]
    for order in orders:
        pending.accept(order)

    assert pending.placed_by("o-1", "ann") == orders[0]  # still pending
    for order_id in ("o-1", "o-2", "o-3"):
        pending.applied(order_id)

    assert pending.placed_by("o-1", "ann") is None  # beyond the two remembered
    assert pending.placed_by("o-3", "ann") == PlacedOrder("ann", "d-1")
    assert pending.placed_by("o-3", "bob") is None
    assert pending.of("o-3", "ann") is None  # no longer pending: orders answers for it
