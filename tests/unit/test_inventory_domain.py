from dataclasses import replace

import pytest

from actors.inventory import domain
from actors.inventory.domain import Reservation, Status, StockLevel
from actors.runtime.errors import RuleViolation
from brokers.contracts.common import Line
from brokers.contracts.inventory import StockCommitted, StockRejected, StockReleased, StockReserved


def level(sku: str, on_hand: int, reserved: int = 0, shipped: int = 0) -> StockLevel:
    return StockLevel(
        sku, on_hand=on_hand, reserved=reserved, shipped=shipped, received=on_hand + reserved + shipped
    )


def balanced(levels: dict[str, StockLevel]) -> bool:
    return all(s.on_hand + s.reserved + s.shipped == s.received for s in levels.values())


def test_combine_sums_quantities_per_sku_in_sku_order():
    lines = domain.combine([Line(sku="B", quantity=1), Line(sku="A", quantity=2), Line(sku="B", quantity=3)])
    assert lines == (Line(sku="A", quantity=2), Line(sku="B", quantity=4))


def test_restock_adds_to_on_hand_and_received():
    assert domain.restock(level("A", 2), "A", 5) == StockLevel("A", on_hand=7, received=7)


def test_restock_of_an_unknown_sku_is_refused():
    with pytest.raises(domain.UnknownSku):
        domain.restock(None, "A", 5)


def test_reserve_moves_every_line_from_on_hand_to_reserved():
    levels = {"A": level("A", 3), "B": level("B", 1)}
    lines = (Line(sku="A", quantity=2), Line(sku="B", quantity=1))
    outcome = domain.reserve("o1", lines, levels, existing=None)
    assert outcome.levels == {"A": level("A", 1, reserved=2), "B": level("B", 0, reserved=1)}
    assert outcome.reservation == Reservation("o1", lines, Status.RESERVED)
    assert outcome.event == StockReserved(order_id="o1", lines=list(lines))
    assert balanced(outcome.levels)


def test_reserve_is_all_or_nothing_and_names_every_short_line():
    levels = {"A": level("A", 3), "B": level("B", 1)}
    lines = (Line(sku="A", quantity=2), Line(sku="B", quantity=2), Line(sku="C", quantity=1))
    outcome = domain.reserve("o1", lines, levels, existing=None)
    assert outcome.levels == {} and outcome.reservation is None
    assert isinstance(outcome.event, StockRejected)
    assert [(s.sku, s.requested, s.available) for s in outcome.event.shortages] == [("B", 2, 1), ("C", 1, 0)]


def test_reserve_twice_or_after_cancel_does_nothing():
    levels = {"A": level("A", 3)}
    lines = (Line(sku="A", quantity=1),)
    for status in Status:
        assert domain.reserve("o1", lines, levels, Reservation("o1", lines, status)) == domain.NOTHING


def test_release_returns_reserved_units_to_on_hand():
    lines = (Line(sku="A", quantity=2),)
    outcome = domain.release(
        "o1", Reservation("o1", lines, Status.RESERVED), {"A": level("A", 1, reserved=2)}
    )
    assert outcome.levels == {"A": level("A", 3)}
    assert outcome.reservation.status is Status.RELEASED
    assert outcome.event == StockReleased(order_id="o1", lines=list(lines))


def test_cancel_before_reserving_leaves_a_marker_so_a_late_placement_is_not_reserved():
    outcome = domain.release("o1", None, {})
    assert outcome.event is None
    assert outcome.reservation == Reservation("o1", (), Status.CANCELLED_BEFORE_RESERVING)
    later = domain.reserve("o1", (Line(sku="A", quantity=1),), {"A": level("A", 5)}, outcome.reservation)
    assert later == domain.NOTHING


@pytest.mark.parametrize("status", [Status.RELEASED, Status.COMMITTED, Status.CANCELLED_BEFORE_RESERVING])
def test_release_of_a_settled_reservation_does_nothing(status):
    assert domain.release("o1", Reservation("o1", (), status), {}) == domain.NOTHING


def test_commit_moves_reserved_units_to_shipped():
    lines = (Line(sku="A", quantity=2),)
    outcome = domain.commit("o1", Reservation("o1", lines, Status.RESERVED), {"A": level("A", 1, reserved=2)})
    assert outcome.levels == {"A": level("A", 1, shipped=2)}
    assert outcome.event == StockCommitted(order_id="o1", lines=list(lines))
    assert balanced(outcome.levels)


def test_commit_twice_does_nothing():
    assert domain.commit("o1", Reservation("o1", (), Status.COMMITTED), {}) == domain.NOTHING


@pytest.mark.parametrize("existing", [None, Reservation("o1", (), Status.RELEASED)])
def test_dispatch_without_a_live_reservation_breaks_a_rule(existing):
    with pytest.raises(RuleViolation):
        domain.commit("o1", existing, {})


def test_no_sequence_of_operations_unbalances_stock():
    levels = {"A": level("A", 10)}
    lines = (Line(sku="A", quantity=4),)
    reserved = domain.reserve("o1", lines, levels, None)
    levels = {**levels, **reserved.levels}
    committed = domain.commit("o1", reserved.reservation, levels)
    levels = {**levels, **committed.levels}
    second = domain.reserve("o2", lines, levels, None)
    levels = {**levels, **second.levels}
    released = domain.release("o2", second.reservation, levels)
    levels = {**levels, **released.levels}
    assert levels["A"] == replace(level("A", 6, shipped=4))
    assert balanced(levels)
