"""A customer's orders: place, read, list and cancel them, their timeline, and their saga live.

Customers see only their own orders: another customer's order is answered 404 exactly like one that
does not exist. Placing an order needs an ``Idempotency-Key``; the order id is made of the customer
and the key, so every retry names the same order. Placing asks no actor anything when it can help
it: a retry is recognised from the edge's own record of the orders it placed (edge/pending.py), and
the lines are priced with the edge's replica of the catalog's prices (edge/prices.py). A retry this
edge does not know (it restarted, or another replica placed the order) is sent again: the same
lines are the same message, applied once; other lines are dropped by the orders actor, the first
order standing, where this edge would have answered 409. Every message of an order's saga carries the order id as its
correlation id, from the PlaceOrder the edge sends on. An order accepted but not yet applied by the
orders actor is answered from the edge's own record of it (edge/pending.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ConfigDict, Field, field_validator

from brokers import pricing
from brokers.contracts.common import MAX_QUANTITY, EntityId, Line
from brokers.contracts.inventory import GetStock, StockView
from brokers.contracts.orders import (
    CancelOrder,
    GetOrder,
    ListOrders,
    OrderPage,
    OrderPlaced,
    OrderQuote,
    OrderStatus,
    OrderView,
    PlaceOrder,
    QuoteOrder,
)
from brokers.rpc import QueryFailed
from brokers.settings import Settings
from edge.auth import CustomerId as Customer
from edge.events import Listener, SagaEvent, snapshot, stream
from edge.guard import IdempotencyKey, WriteIdentity, idempotent_id, settings_of
from edge.limits import shed_orders_load
from edge.link import RabbitLink
from edge.pending import PendingOrder, PendingOrders
from edge.prices import ORDER_CHECKS, PriceBook
from edge.problems import (
    IDEMPOTENCY_KEY_REUSED,
    ORDER_NOT_CANCELLABLE,
    OrderNotFound,
    Refused,
    problem_responses,
)
from edge.routes.shared import Accepted, Body, Link, QueryParameters, RequestId, dispatch, read_problems
from edge.timeline import Timeline, answer_of, gather_timeline

log = structlog.get_logger()
router = APIRouter(prefix="/orders", tags=["orders"])
OrderId = Annotated[EntityId, Path(description="The order's id, as returned when it was placed.")]

# How long the timeline waits for each of its sources, and a new order for inventory to check its
# SKUs (at most the query timeout).
SHORT_WAIT_S = 2.0
# Quiet this long, a saga stream sends a comment line, so proxies keep it open.
HEARTBEAT_S = 5.0
ENDED: frozenset[OrderStatus] = frozenset({"delivered", "cancelled"})
# The orders actor decides (until dispatch); the edge refuses what is clearly too late.
# "cancelling": asked already; asking again changes nothing and is answered the same.
CANCELLABLE: frozenset[OrderStatus] = frozenset({"placed", "reserved", "confirmed", "cancelling"})
CurrentSettings = Annotated[Settings, Depends(settings_of)]


async def pending_orders_of(request: Request) -> PendingOrders:
    return request.app.state.pending_orders


async def price_book_of(request: Request) -> PriceBook:
    return request.app.state.price_book


Pending = Annotated[PendingOrders, Depends(pending_orders_of)]
Prices = Annotated[PriceBook, Depends(price_book_of)]
# What GET /orders/{order_id} answers: the order as orders has it, or as the edge accepted it.
SomeOrder = Annotated[OrderView | PendingOrder, Field(discriminator="status")]


class NewOrder(Body):
    lines: list[Line] = Field(
        min_length=1,
        max_length=100,
        description="Lines of one SKU are added up into one line.",
        examples=[[{"sku": "MUG-BLUE-350", "quantity": 2}]],
    )

    @field_validator("lines")
    @classmethod
    def _one_line_per_sku(cls, lines: list[Line]) -> list[Line]:
        totals: Counter[str] = Counter()
        for line in lines:
            totals[line.sku] += line.quantity
        if too_many := {sku: quantity for sku, quantity in totals.items() if quantity > MAX_QUANTITY}:
            sku, quantity = next(iter(too_many.items()))
            raise ValueError(
                f"the lines of SKU {sku} add up to {quantity}, above {MAX_QUANTITY} in one order"
            )
        return [Line(sku=sku, quantity=quantity) for sku, quantity in totals.items()]

    def digest(self) -> str:
        """The request's fingerprint: the same for the same lines, however the JSON was spelled."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class OrderListing(QueryParameters):
    offset: int = Field(0, ge=0, le=1_000_000)
    limit: int = Field(20, ge=1, le=100)


class OrderLinks(BaseModel):
    model_config = ConfigDict(frozen=True)
    self: str
    timeline: str
    events: str
    cancel: str

    @classmethod
    def of(cls, order_id: str) -> OrderLinks:
        order = f"{router.prefix}/{order_id}"
        return cls(
            self=order, timeline=f"{order}/timeline", events=f"{order}/events", cancel=f"{order}/cancel"
        )


class OrderAccepted(Accepted):
    """The order's command is queued (correlation_id is the order id, as in its whole saga)."""

    order_id: str
    links: OrderLinks


def order_id_for(customer_id: str, idempotency_key: str) -> str:
    """The id of the order a customer places with a key: the same on every retry, and theirs only."""
    return idempotent_id(f"order of {customer_id}", idempotency_key)


def _short_wait_s(settings: Settings) -> float:
    return min(SHORT_WAIT_S, settings.emporium_query_timeout_s)


async def _order_or_none(link: RabbitLink, order_id: str, request_id: str) -> OrderView | None:
    try:
        return await link.ask(GetOrder(order_id=order_id), OrderView, correlation_id=request_id)
    except QueryFailed as exc:
        if exc.problem.status == 404:
            return None
        raise


async def _order_or_pending(
    link: RabbitLink, pending: PendingOrders, order_id: str, customer_id: str, request_id: str
) -> OrderView | PendingOrder | None:
    """The customer's order as orders has it, else as the edge accepted it a moment ago, else None."""
    order = await _order_or_none(link, order_id, request_id)
    if order is None:
        return pending.of(order_id, customer_id)
    pending.applied(order_id)
    return order if order.customer_id == customer_id else None


async def _own_order(
    link: RabbitLink, pending: PendingOrders, order_id: str, customer_id: str, request_id: str
) -> OrderView | PendingOrder:
    order = await _order_or_pending(link, pending, order_id, customer_id, request_id)
    if order is None:
        raise OrderNotFound(order_id)
    return order


async def _send(
    link: RabbitLink, command: PlaceOrder | CancelOrder, message_id: str, response: Response
) -> OrderAccepted:
    """Send an order's command (correlated by the order id) and answer where to follow it."""
    links = OrderLinks.of(command.order_id)
    write = WriteIdentity(message_id=message_id, correlation_id=command.order_id, idempotent=True)
    envelope = await dispatch(link, command, write, response, location=links.self)
    return OrderAccepted.of(envelope, order_id=command.order_id, links=links)


@router.post(
    "",
    status_code=202,
    summary="Place an order (its saga starts; follow it by the links)",
    responses=problem_responses(401, 409, 422, 503, 504),
)
async def place_order(
    request: Request,
    body: NewOrder,
    customer: Customer,
    key: IdempotencyKey,
    link: Link,
    request_id: RequestId,
    settings: CurrentSettings,
    response: Response,
    pending: Pending,
    book: Prices,
) -> OrderAccepted:
    # While the orders actor is far behind: 503 with Retry-After rather than more backlog (a retry
    # with the same key is safe once it is over).
    await shed_orders_load(request)
    placement = Placement(order_id_for(customer, key), customer, key, body.lines, body.digest())
    async with pending.placing(placement.order_id):
        return await _place_once(
            placement, link, pending, book, request_id, wait_s=_short_wait_s(settings), response=response
        )


@dataclass(frozen=True)
class Placement:
    """A customer's request to place an order under an Idempotency-Key."""

    order_id: str
    customer_id: str
    key: str
    lines: list[Line]
    digest: str

    @property
    def message_id(self) -> str:
        # Same order, same lines: the same message, which the orders actor applies once.
        return idempotent_id(f"place order {self.order_id}", self.digest)


async def _place_once(
    placement: Placement,
    link: RabbitLink,
    pending: PendingOrders,
    book: PriceBook,
    request_id: str,
    *,
    wait_s: float,
    response: Response,
) -> OrderAccepted:
    order_id, customer, digest = placement.order_id, placement.customer_id, placement.digest
    known = pending.placed_by(order_id, customer)
    if known is not None and known.request_digest != digest:
        raise Refused(
            409,
            f"the Idempotency-Key {placement.key!r} already placed order {order_id} with other lines; "
            "use a new key for a new order",
            type_=IDEMPOTENCY_KEY_REUSED,
            title="The Idempotency-Key was used for another request",
        )
    if known is not None:  # a retry of an order already placed: nothing more to send
        links = OrderLinks.of(order_id)
        response.headers["Location"] = links.self
        return OrderAccepted(
            message_id=placement.message_id, correlation_id=order_id, order_id=order_id, links=links
        )
    await _check_lines(link, book, placement.lines, request_id, wait_s=wait_s)
    command = PlaceOrder(
        order_id=order_id, customer_id=customer, lines=placement.lines, request_digest=digest
    )
    accepted = await _send(link, command, placement.message_id, response)
    pending.accept(
        PendingOrder(
            order_id=order_id,
            customer_id=customer,
            status="accepted",
            lines=placement.lines,
            request_digest=digest,
            accepted_at=datetime.now(UTC),
        )
    )
    return accepted


async def _check_lines(
    link: RabbitLink, book: PriceBook, lines: list[Line], request_id: str, *, wait_s: float
) -> None:
    """Refuse (422) lines the orders actor could not make an order of: it could only dead-letter them.

    Priced with the edge's price book when it knows every SKU; else inventory and orders are asked,
    both at once (an unknown SKU is the refusal that names its line).
    """
    prices = book.prices_of(line.sku for line in lines)
    if len(prices) == len(lines):  # one line per SKU (NewOrder adds them up)
        ORDER_CHECKS.labels("price_book").inc()
        try:
            pricing.priced(lines, prices)
        except pricing.NotPriceable as exc:
            raise _not_payable(str(exc)) from exc
        return
    ORDER_CHECKS.labels("actors").inc()
    for refusal in await asyncio.gather(
        _check_skus_known(link, lines, request_id, wait_s=wait_s),
        _check_payable(link, lines, request_id, wait_s=wait_s),
        return_exceptions=True,
    ):
        if isinstance(refusal, BaseException):
            raise refusal


def _not_payable(detail: str) -> RequestValidationError:
    return RequestValidationError([{"type": "not_payable", "loc": ("body", "lines"), "msg": detail}])


async def _check_skus_known(link: RabbitLink, lines: list[Line], request_id: str, *, wait_s: float) -> None:
    """Refuse (422) lines whose SKU no product has: the orders actor could only dead-letter them.

    Inventory is asked, since it knows every SKU from product.created as the orders actor does. If it
    cannot say within ``wait_s``, the order goes on unchecked: placing an order does not wait for
    inventory (the saga reaches it later), and an unknown SKU then ends in the orders dead letters.
    """
    skus = sorted({line.sku for line in lines})
    answers = await asyncio.gather(
        *(
            answer_of(link.ask(GetStock(sku=sku), StockView, correlation_id=request_id, timeout_s=wait_s))
            for sku in skus
        )
    )
    said = dict(zip(skus, answers, strict=True))
    if unchecked := {sku: str(answer.failure) for sku, answer in said.items() if answer.failure is not None}:
        log.warning("edge.skus_unchecked", why=unchecked)
    unknown = {sku for sku, answer in said.items() if answer.is_not_found}
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "unknown_sku",
                    "loc": ("body", "lines", i, "sku"),
                    "msg": f"no product has SKU {line.sku}",
                }
                for i, line in enumerate(lines)
                if line.sku in unknown
            ]
        )


async def _check_payable(link: RabbitLink, lines: list[Line], request_id: str, *, wait_s: float) -> None:
    """Refuse (422) lines the orders actor could not price into an order (two currencies, a total
    above what can be paid): it would only dead-letter them. Unchecked, as for SKUs, when orders
    does not answer within ``wait_s``."""
    answer = await answer_of(
        link.ask(QuoteOrder(lines=lines), OrderQuote, correlation_id=request_id, timeout_s=wait_s)
    )
    if isinstance(answer.failure, QueryFailed) and answer.failure.problem.status == 409:
        raise _not_payable(answer.failure.problem.detail)
    if answer.failure is not None:
        log.warning("edge.order_unpriced", why=str(answer.failure))


@router.get("", summary="My orders, newest first, a page at a time", responses=read_problems(401))
async def list_orders(
    listing: Annotated[OrderListing, Query()], customer: Customer, link: Link, request_id: RequestId
) -> OrderPage:
    query = ListOrders(customer_id=customer, offset=listing.offset, limit=listing.limit)
    return await link.ask(query, OrderPage, correlation_id=request_id)


ONE_ORDER = """
The order as the orders actor has it. Right after it was placed (`202`), until the orders actor has
applied its PlaceOrder, the order is answered as the edge accepted it instead: status `accepted`,
its lines without prices, and when it was accepted (a `PendingOrder`). Read it again shortly for
prices, total and history. Such an order can already be cancelled.
"""


@router.get(
    "/{order_id}", summary="One of my orders", description=ONE_ORDER, responses=read_problems(401, 404)
)
async def get_order(
    order_id: OrderId, customer: Customer, link: Link, request_id: RequestId, pending: Pending
) -> SomeOrder:
    return await _own_order(link, pending, order_id, customer, request_id)


@router.post(
    "/{order_id}/cancel",
    status_code=202,
    summary="Cancel one of my orders (possible until it is dispatched)",
    description="An order accepted a moment ago (status `accepted`) can be cancelled too: the cancel "
    "is applied right after the order.",
    responses=problem_responses(401, 404, 409, 422, 503, 504),
)
async def cancel_order(
    order_id: OrderId,
    customer: Customer,
    link: Link,
    request_id: RequestId,
    response: Response,
    pending: Pending,
) -> OrderAccepted:
    order = await _own_order(link, pending, order_id, customer, request_id)
    # A pending order is cancellable: orders retries the cancel until it has applied the order.
    if isinstance(order, OrderView) and order.status not in CANCELLABLE:
        raise Refused(
            409,
            f"order {order_id} is {order.status}: an order can be cancelled until it is dispatched",
            type_=ORDER_NOT_CANCELLABLE,
            title="The order can no longer be cancelled",
        )
    # One cancellation per order, however often it is asked for.
    message_id = idempotent_id("cancel order", order_id)
    return await _send(link, CancelOrder(order_id=order_id, customer_id=customer), message_id, response)


@router.get(
    "/{order_id}/timeline",
    summary="Everything known of one of my orders, from every actor at once (partial if one is silent)",
    responses=read_problems(401, 404),
)
async def order_timeline(
    order_id: OrderId, customer: Customer, link: Link, request_id: RequestId, settings: CurrentSettings
) -> Timeline:
    return await gather_timeline(
        link, order_id, customer, correlation_id=request_id, timeout_s=_short_wait_s(settings)
    )


@dataclass(frozen=True)
class Following:
    first: SagaEvent
    listener: Listener


async def follow_order(
    order_id: OrderId, customer: Customer, link: Link, request_id: RequestId, settings: CurrentSettings
) -> AsyncIterator[Following]:
    """Listen to the order's saga (before asking where it is, so nothing falls in between)."""
    with link.saga_events.listen(order_id) as listener:
        order = await _order_or_none(link, order_id, request_id)
        if order is not None and order.customer_id == customer:
            first = snapshot(order.model_dump_json(), ended=order.status in ENDED)
        else:
            # As long as a query may take: the PlaceOrder may be waiting behind other work in orders.
            first = await _placed_by(customer, listener, order_id, wait_s=settings.emporium_query_timeout_s)
        yield Following(first, listener)


async def _placed_by(customer_id: str, listener: Listener, order_id: str, *, wait_s: float) -> SagaEvent:
    """An order accepted a moment ago may not be known to orders yet: its order.placed shows whose it is.

    Another customer's order waits as long, so that timing does not tell it from a missing one.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while (left := deadline - loop.time()) > 0:
        event = await listener.next(left)
        if event is not None and event.type == OrderPlaced.TYPE:
            if OrderPlaced.parse(event.data.encode()).customer_id == customer_id:
                return event
            break
    raise OrderNotFound(order_id)


FOLLOWING_AN_ORDER = f"""
First a `snapshot` event: the order as it is now, as `GET /orders/{{order_id}}` shows it. Then every
event of the order's saga as it happens: `event` is its type (`order.placed`, `stock.reserved`,
`payment.captured`, `shipment.dispatched`, ...), `id` its message id and `data` its JSON body. Events
may repeat what the snapshot already shows, and an event an actor published again comes again with
the same id.

The stream ends after `order.delivered` or `order.cancelled` (at once if the order is already there).
A follower that falls behind, or a lost subscription, ends it with a `dropped` event: reconnect to
resume from the current status (`Last-Event-ID` is not replayed). A comment line comes every
{HEARTBEAT_S:g} s while nothing happens. An order placed a moment ago may not be known yet: the stream
then waits for it to be placed as long as a query may take (`EMPORIUM_QUERY_TIMEOUT_S`, 5 s by default).
"""


@router.get(
    "/{order_id}/events",
    response_class=EventSourceResponse,
    summary="The saga of one of my orders as it happens (Server-Sent Events)",
    description=FOLLOWING_AN_ORDER,
    responses=problem_responses(401, 404, 422, 503, 504),
)
async def order_events(
    following: Annotated[Following, Depends(follow_order)],
) -> AsyncIterable[ServerSentEvent]:
    async for event in stream(following.first, following.listener, heartbeat_s=HEARTBEAT_S):
        yield event
