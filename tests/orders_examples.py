"""Orders as the tests of several actors build them: lines priced, the total their sum."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from brokers.contracts.orders import OrderConfirmed, OrderLine, OrderPlaced


def priced_lines(prices: Mapping[str, int], **quantities: int) -> list[OrderLine]:
    """A line per SKU named, at its price in ``prices`` (cents)."""
    return [OrderLine(sku=sku, quantity=q, unit_price_cents=prices[sku]) for sku, q in quantities.items()]


def order_placed(
    order_id: str, customer_id: str, lines: Sequence[OrderLine], *, currency: str = "EUR"
) -> OrderPlaced:
    """The order.placed of these lines, totalled as the orders actor totals them."""
    total = sum(line.quantity * line.unit_price_cents for line in lines)
    return OrderPlaced(
        order_id=order_id, customer_id=customer_id, lines=list(lines), total_cents=total, currency=currency
    )


def order_confirmed(order: OrderPlaced) -> OrderConfirmed:
    """The confirmation of ``order``: the same order, lines and total."""
    return OrderConfirmed(**order.model_dump())
