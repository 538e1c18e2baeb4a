"""How an order's lines are priced: the one rule the orders actor applies when it places an order,
and the edge checks before it accepts one (so a customer hears a refusal as a 422, not as a dead
letter). Both keep their own replica of the catalog's prices, fed by product.created and
product.price_changed; this module only says what a set of lines costs at those prices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from brokers.contracts.common import MAX_CENTS, Line
from brokers.contracts.orders import OrderLine, OrderQuote

# The largest amount the contracts carry, and so the largest order total that can be paid.
MAX_TOTAL_CENTS = MAX_CENTS


@dataclass(frozen=True)
class Price:
    sku: str
    cents: int
    currency: str
    # When the catalog decided this price: a late, older price event must not undo a newer one.
    as_of: datetime


def newer(offered: Price, current: Price | None) -> bool:
    return current is None or offered.as_of > current.as_of


class NotPriceable(ValueError):
    """The lines cannot make an order at these prices; the message says why."""


def unknown_skus(lines: Sequence[Line], prices: Mapping[str, Price]) -> list[str]:
    return sorted({line.sku for line in lines} - prices.keys())


def priced(lines: Sequence[Line], prices: Mapping[str, Price]) -> OrderQuote:
    """The lines at these prices, or NotPriceable: an unknown SKU, two currencies, a total too large."""
    if unknown := unknown_skus(lines, prices):
        raise NotPriceable(f"unknown SKU(s) {', '.join(unknown)}: no product.created seen for them")
    currencies = sorted({prices[line.sku].currency for line in lines})
    if len(currencies) > 1:
        raise NotPriceable(f"lines are priced in {', '.join(currencies)}: an order is paid in one currency")
    order_lines = [
        OrderLine(sku=line.sku, quantity=line.quantity, unit_price_cents=prices[line.sku].cents)
        for line in lines
    ]
    total = sum(line.quantity * line.unit_price_cents for line in order_lines)
    if total > MAX_TOTAL_CENTS:
        raise NotPriceable(f"order total {total} cents is above the largest payable amount {MAX_TOTAL_CENTS}")
    return OrderQuote(lines=order_lines, total_cents=total, currency=currencies[0])
