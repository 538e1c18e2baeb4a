"""Inventory rules: stock levels per SKU and all-or-nothing reservations. Pure: no I/O.

Every unit ever received is in exactly one of three places: on hand (sellable), reserved for an
order, or shipped. So on_hand + reserved + shipped = received holds after every change here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from actors.runtime.errors import RuleViolation, Transient
from brokers.contracts.common import Line, Shortage
from brokers.contracts.inventory import StockCommitted, StockRejected, StockReleased, StockReserved, StockView
from brokers.envelope import Event


class UnknownSku(Transient, LookupError):
    """The SKU is not (yet) in inventory's list: its product.created may still be on its way."""


@dataclass(frozen=True)
class StockLevel:
    sku: str
    on_hand: int = 0
    reserved: int = 0
    shipped: int = 0
    received: int = 0

    def view(self) -> StockView:
        return StockView(**self.__dict__)


class Status(StrEnum):
    RESERVED = "reserved"
    RELEASED = "released"
    COMMITTED = "committed"
    # The order was cancelled before its reservation was asked for: never reserve it later.
    CANCELLED_BEFORE_RESERVING = "cancelled_before_reserving"


@dataclass(frozen=True)
class Reservation:
    order_id: str
    lines: tuple[Line, ...]
    status: Status


@dataclass(frozen=True)
class Outcome:
    levels: dict[str, StockLevel]
    reservation: Reservation | None = None
    event: Event | None = None


NOTHING = Outcome(levels={})


def combine(lines: Iterable[Line]) -> tuple[Line, ...]:
    """One line per SKU, quantities summed, in SKU order (a stable order for writes)."""
    totals: Counter[str] = Counter()
    for line in lines:
        totals[line.sku] += line.quantity
    return tuple(Line(sku=sku, quantity=q) for sku, q in sorted(totals.items()))


def restock(level: StockLevel | None, sku: str, quantity: int) -> StockLevel:
    if level is None:
        raise UnknownSku(f"SKU {sku} is not in inventory (no product.created seen for it)")
    return replace(level, on_hand=level.on_hand + quantity, received=level.received + quantity)


def reserve(
    order_id: str, lines: tuple[Line, ...], levels: dict[str, StockLevel], existing: Reservation | None
) -> Outcome:
    if existing is not None:  # placed twice, or cancelled first: nothing more to do
        return NOTHING
    shortages = [
        Shortage(
            sku=line.sku,
            requested=line.quantity,
            available=levels[line.sku].on_hand if line.sku in levels else 0,
        )
        for line in lines
        if line.sku not in levels or levels[line.sku].on_hand < line.quantity
    ]
    if shortages:
        return Outcome(levels={}, event=StockRejected(order_id=order_id, shortages=shortages))
    changed = {
        line.sku: replace(
            levels[line.sku],
            on_hand=levels[line.sku].on_hand - line.quantity,
            reserved=levels[line.sku].reserved + line.quantity,
        )
        for line in lines
    }
    return Outcome(
        levels=changed,
        reservation=Reservation(order_id, lines, Status.RESERVED),
        event=StockReserved(order_id=order_id, lines=list(lines)),
    )


def release(order_id: str, existing: Reservation | None, levels: dict[str, StockLevel]) -> Outcome:
    if existing is None:
        return Outcome(levels={}, reservation=Reservation(order_id, (), Status.CANCELLED_BEFORE_RESERVING))
    if existing.status is not Status.RESERVED:
        return NOTHING
    changed = {
        line.sku: replace(
            levels[line.sku],
            on_hand=levels[line.sku].on_hand + line.quantity,
            reserved=levels[line.sku].reserved - line.quantity,
        )
        for line in existing.lines
    }
    return Outcome(
        levels=changed,
        reservation=replace(existing, status=Status.RELEASED),
        event=StockReleased(order_id=order_id, lines=list(existing.lines)),
    )


def commit(order_id: str, existing: Reservation | None, levels: dict[str, StockLevel]) -> Outcome:
    if existing is not None and existing.status is Status.COMMITTED:
        return NOTHING
    if existing is None or existing.status is not Status.RESERVED:
        state = "no reservation" if existing is None else f"a {existing.status} reservation"
        raise RuleViolation(f"order {order_id} was dispatched but has {state}")
    changed = {
        line.sku: replace(
            levels[line.sku],
            reserved=levels[line.sku].reserved - line.quantity,
            shipped=levels[line.sku].shipped + line.quantity,
        )
        for line in existing.lines
    }
    return Outcome(
        levels=changed,
        reservation=replace(existing, status=Status.COMMITTED),
        event=StockCommitted(order_id=order_id, lines=list(existing.lines)),
    )
