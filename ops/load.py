"""`emporium load`: many customers ordering at once through the edge, every order followed to its end.

A run sets up its own shop through the edge: an administrator (made as operators make one, with a
password generated for the run), products whose SKUs are a mix of a few *hot* ones that most orders
want and that sell out during the run, *normal* ones with plenty of stock, and *out-of-stock* ones
never restocked; then customers registered and logged in, a few of them with cards the payment
provider declines (the simulator's ``decline_customers``).

Then it places orders with Idempotency-Keys, at most ``concurrency`` in flight (placed, not ended)
and at most ``rate_per_s`` a second, cancels some (right after the 202, at a random time, or after
dispatch, when a 409 is the expected answer), and follows each accepted order over its Server-Sent
Events until it is delivered or cancelled, within ``settle_s``. Every answer of the edge is counted
by route and status. A 429 or a 503 with ``Retry-After`` is admission control, not an error: the
request waits that long and is made again (a 503 to POST /orders is a *shed*).

What the edge must allow: every customer registers and logs in once, and so does the administrator,
all from one address, so ``EMPORIUM_LOGIN_RATE_LIMIT`` must allow ``2 x customers + 1`` a minute
(the default, 10/minute, would make a run of 20 customers wait minutes: the load waits out each
429, within ``setup_s``). Each order costs its customer 2-3 requests (place, follow, perhaps
cancel), within the default ``EMPORIUM_RATE_LIMIT`` of 300/minute per customer unless a run is fast
with few customers. Tokens are not renewed: a run must end within their lifetime (15 minutes).

``run_load(edge_url, config)`` returns a :class:`LoadResult`: every order's record and the ledger of
what the edge answered (the accepted order ids, the cancels answered 202 or 409), for a caller such
as a chaos run to compare with what the system says afterwards.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
from rich.progress import Progress

from brokers.settings import Settings, get_settings
from edge.problems import EMAIL_TAKEN
from ops.accounts import Account, make_admin
from ops.sse import ServerEvent, SseReader

T = TypeVar("T")
K = TypeVar("K")
SkuKind = Literal["hot", "normal", "out_of_stock"]
ENDED = frozenset({"delivered", "cancelled"})
MAX_UNITS = 2  # units of a line: 1 or 2
NORMAL_SPARE = 10  # units a normal SKU gets beyond everything the run orders of it
PRICE_CENTS = {"hot": 2_499, "normal": 1_299, "out_of_stock": 4_500}
# Requests that wait for the system, and how often they look again (the deadline bounds them all).
POLL_PAUSE_S = 0.2
# An answer the edge could not give (504) or a dropped connection is asked again after this.
RETRY_PAUSE_S = 1.0
SIGN_UPS_AT_ONCE = 4  # registrations hash a password in identity (argon2): a few at a time
REQUEST_TIMEOUT_S = 15.0
STREAM_READ_TIMEOUT_S = 30.0  # a saga stream sends a heartbeat every 5 s
# The order's status after each event of its saga that moves it (SSE event type -> status).
STATUS_AFTER = {
    "order.placed": "placed",
    "stock.reserved": "reserved",
    "order.confirmed": "confirmed",
    "order.shipped": "shipped",
    "order.delivered": "delivered",
    "order.cancelled": "cancelled",
}
PLACE_ROUTE = "/orders"
EVENTS_ROUTE = "/orders/{id}/events"
CANCEL_ROUTE = "/orders/{id}/cancel"


class LoadFailed(RuntimeError):
    """The load could not be set up, or may not go where it was pointed: nothing was measured."""


class Unanswered(RuntimeError):
    """The edge could not be reached (connection errors) before the request's deadline."""


# --- where the load may go ------------------------------------------------------------------------


def require_loopback(edge_url: str, *, allow_remote: bool = False) -> None:
    """Refuse an edge that is not on this machine, unless ``allow_remote`` says it is meant."""
    host = urlsplit(edge_url).hostname
    if allow_remote or (host is not None and _is_loopback(host)):
        return
    raise LoadFailed(
        f"refusing to load {edge_url}: not a loopback address (a load is a lot of traffic; "
        "pass --allow-remote if that system is yours to load)"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost: it may resolve anywhere
        return False


# --- the plan (pure) ------------------------------------------------------------------------------


def apportion(total: int, shares: Mapping[K, float]) -> dict[K, int]:
    """``total`` split in proportion to ``shares`` (largest remainders): the parts add up to ``total``."""
    weight = sum(shares.values())
    if total < 0 or weight <= 0 or any(share < 0 for share in shares.values()):
        raise ValueError(f"cannot split {total} by {dict(shares)}")
    exact = {name: total * share / weight for name, share in shares.items()}
    parts = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: exact[name] - parts[name], reverse=True)
    for name in by_remainder[: total - sum(parts.values())]:
        parts[name] += 1
    return parts


Lines = tuple[tuple[str, int], ...]  # (sku, quantity) per line


@dataclass(frozen=True)
class SkuMix:
    """Which SKUs the orders ask for, and how much of each is stocked."""

    hot: int = 2
    normal: int = 6
    out_of_stock: int = 1
    hot_share: float = 0.5  # of the orders, those whose first line is a hot SKU
    out_of_stock_share: float = 0.05  # those whose first line is an out-of-stock SKU
    hot_fill: float = 0.6  # a hot SKU is stocked for this share of the units ordered: it sells out
    second_line_share: float = 0.2  # orders with a second line, of a normal SKU (all reserved or none)

    def __post_init__(self) -> None:
        if min(self.hot, self.normal, self.out_of_stock) < 0:
            raise ValueError("SKU counts cannot be negative")
        for name in ("hot_share", "out_of_stock_share", "hot_fill", "second_line_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        for kind, share in self.shares().items():
            if share > 0 and self.count(kind) == 0:
                raise ValueError(f"{share:.0%} of the orders want a {kind} SKU, but the mix has none")

    def shares(self) -> dict[SkuKind, float]:
        normal = 1.0 - self.hot_share - self.out_of_stock_share
        if normal < -1e-9:
            raise ValueError("hot_share + out_of_stock_share cannot exceed 1")
        return {"hot": self.hot_share, "normal": max(normal, 0.0), "out_of_stock": self.out_of_stock_share}

    def count(self, kind: SkuKind) -> int:
        return {"hot": self.hot, "normal": self.normal, "out_of_stock": self.out_of_stock}[kind]

    def skus(self, run_id: str) -> dict[str, SkuKind]:
        """The run's SKUs and their kinds (named after the run, so runs never share stock)."""
        tags: dict[SkuKind, str] = {"hot": "HOT", "normal": "STD", "out_of_stock": "OOS"}
        return {
            f"LOAD-{run_id}-{tags[kind]}-{i}": kind for kind in tags for i in range(1, self.count(kind) + 1)
        }

    def lines(self, count: int, skus: Mapping[str, SkuKind], rng: random.Random) -> list[Lines]:
        """The lines of ``count`` orders: exactly the mix's shares of first lines, in random order."""
        of_kind = {kind: [sku for sku, k in skus.items() if k == kind] for kind in self.shares()}
        firsts = [kind for kind, n in apportion(count, self.shares()).items() for _ in range(n)]
        rng.shuffle(firsts)
        orders = []
        for kind in firsts:
            first = rng.choice(of_kind[kind])
            lines = [(first, rng.randint(1, MAX_UNITS))]
            others = [sku for sku in of_kind["normal"] if sku != first]
            if others and rng.random() < self.second_line_share:
                lines.append((rng.choice(others), 1))
            orders.append(tuple(lines))
        return orders

    def stock(self, skus: Mapping[str, SkuKind], orders: Sequence[Lines]) -> dict[str, int]:
        """Units to restock per SKU for these orders: hot ones short, normal ones plenty, the rest none."""
        wanted = units_wanted(orders)

        def units(sku: str, kind: SkuKind) -> int:
            if kind == "hot":
                return math.floor(wanted[sku] * self.hot_fill)
            if kind == "normal":
                return wanted[sku] + NORMAL_SPARE
            return 0

        return {sku: units(sku, kind) for sku, kind in skus.items()}


def units_wanted(orders: Sequence[Lines]) -> Counter[str]:
    """Units ordered per SKU, over every line of ``orders``."""
    wanted: Counter[str] = Counter()
    for lines in orders:
        for sku, quantity in lines:
            wanted[sku] += quantity
    return wanted


class Cancel(StrEnum):
    NONE = "none"
    AT_ONCE = "right after the 202"  # the order may not be known yet: a 404 is asked again
    MEANWHILE = "at a random time"
    AFTER_DISPATCH = "after dispatch"  # or after the order ended: 409 is the expected answer


@dataclass(frozen=True)
class Cancels:
    """Which share of the orders their customer cancels, and when."""

    at_once: float = 0.04
    meanwhile: float = 0.04
    after_dispatch: float = 0.04
    window_s: float = 5.0  # a cancel "at a random time" comes this long after the 202 at most

    def __post_init__(self) -> None:
        if min(self.at_once, self.meanwhile, self.after_dispatch) < 0 or self._none() < -1e-9:
            raise ValueError("cancel shares must be within [0, 1] and add up to at most 1")
        if self.window_s <= 0:
            raise ValueError("window_s must be positive")

    def _none(self) -> float:
        return 1.0 - self.at_once - self.meanwhile - self.after_dispatch

    def plans(self, count: int, rng: random.Random) -> list[tuple[Cancel, float]]:
        """Exactly the shares of ``count`` orders, in random order; with the delay of the random ones."""
        shares = {
            Cancel.NONE: max(self._none(), 0.0),
            Cancel.AT_ONCE: self.at_once,
            Cancel.MEANWHILE: self.meanwhile,
            Cancel.AFTER_DISPATCH: self.after_dispatch,
        }
        plans = [plan for plan, n in apportion(count, shares).items() for _ in range(n)]
        rng.shuffle(plans)
        return [(plan, rng.uniform(0, self.window_s) if plan is Cancel.MEANWHILE else 0.0) for plan in plans]


@dataclass(frozen=True)
class LoadConfig:
    orders: int = 200
    concurrency: int = 16  # orders in flight at once: placed and not yet ended
    rate_per_s: float | None = None  # at most this many orders placed a second (None: as slots free up)
    duration_s: float = 180.0  # no order is placed after this
    settle_s: float = 120.0  # how long an accepted order may take to end
    customers: int = 20
    declined_customers: int = 2  # customers whose every charge the provider declines
    mix: SkuMix = field(default_factory=SkuMix)
    cancels: Cancels = field(default_factory=Cancels)
    seed: int | None = None
    allow_remote: bool = False
    setup_s: float = 180.0  # the shop and the customers are ready within this

    def __post_init__(self) -> None:
        if self.orders < 1 or self.concurrency < 1 or self.customers < 1:
            raise ValueError("orders, concurrency and customers must be at least 1")
        if not 0 <= self.declined_customers <= self.customers:
            raise ValueError("declined_customers must be between 0 and customers")
        if self.rate_per_s is not None and self.rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if min(self.duration_s, self.settle_s, self.setup_s) <= 0:
            raise ValueError("duration_s, settle_s and setup_s must be positive")


@dataclass(frozen=True)
class PlannedOrder:
    number: int
    customer: int  # index of the run's customer who places it
    lines: Lines
    cancel: Cancel
    cancel_after_s: float  # for Cancel.MEANWHILE: how long after the 202
    key: str  # its Idempotency-Key


def plan_orders(
    config: LoadConfig, skus: Mapping[str, SkuKind], rng: random.Random, run_id: str
) -> list[PlannedOrder]:
    lines = config.mix.lines(config.orders, skus, rng)
    cancels = config.cancels.plans(config.orders, rng)
    return [
        PlannedOrder(i, i % config.customers, order_lines, plan, after_s, f"load-{run_id}-{i}")
        for i, (order_lines, (plan, after_s)) in enumerate(zip(lines, cancels, strict=True))
    ]


def status_after(event: ServerEvent) -> tuple[str, str | None] | None:
    """The order's status (and cancel reason) once this saga event happened; None if it tells none."""
    if event.event == "snapshot":  # the order as it stood when the stream started
        view = event.json()
        return view["status"], view.get("cancel_reason")
    status = STATUS_AFTER.get(event.event or "")
    if status is None:
        return None
    return status, event.json().get("reason") if status == "cancelled" else None


# --- what a run records ---------------------------------------------------------------------------


@dataclass
class CancelRecord:
    plan: Cancel
    sent_at: float | None = None  # seconds into the run; None: never sent (the order never moved on)
    answer: int | str | None = None  # the edge's last answer: a status, or "no answer"


@dataclass
class OrderRecord:
    planned: PlannedOrder
    order_id: str | None = None
    accepted_at: float | None = None  # seconds into the run the 202 came
    refused: int | str | None = None  # never accepted: the last answer to POST /orders
    status: str | None = None  # the last status the order's events showed
    cancel_reason: str | None = None
    ended_at: float | None = None
    cancel: CancelRecord | None = None

    @property
    def accepted(self) -> bool:
        return self.order_id is not None

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def latency_s(self) -> float | None:
        """From the 202 to the moment its end was seen."""
        if self.accepted_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.accepted_at

    @property
    def outcome(self) -> str:
        if not self.accepted:
            return "not placed" if self.refused is None else f"refused ({self.refused})"
        if self.status == "cancelled":
            return f"cancelled: {self.cancel_reason}"
        if self.ended:
            return str(self.status)
        return f"unsettled ({self.status or 'not seen'})"


@dataclass
class LoadResult:
    """What a run did and what the edge answered: its own ledger, to compare with the system's state."""

    edge_url: str
    config: LoadConfig
    run_id: str
    started_at: datetime  # when placing started
    setup_s: float
    skus: dict[str, SkuKind]
    stock: dict[str, int]
    orders: list[OrderRecord]
    answers: Counter[str]  # "POST /orders 202": how often the edge answered that
    sheds_at: list[float]  # seconds into the run of each 503 to POST /orders

    @property
    def accepted_ids(self) -> list[str]:
        return [order.order_id for order in self.orders if order.order_id is not None]

    def cancels_answered(self, answer: int | str) -> list[str]:
        """The accepted orders whose cancel the edge answered with ``answer`` (202, 409, ...)."""
        return [
            order.order_id
            for order in self.orders
            if order.order_id is not None and order.cancel is not None and order.cancel.answer == answer
        ]

    def ledger(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted_ids,
            "cancels": {
                order.order_id: {"when": order.cancel.plan.value, "answer": order.cancel.answer}
                for order in self.orders
                if order.order_id is not None and order.cancel is not None
            },
            "ended": {order.order_id: order.outcome for order in self.orders if order.order_id is not None},
        }


# --- the edge over HTTP ---------------------------------------------------------------------------


def retry_after_s(response: httpx.Response) -> float | None:
    """How long the edge asks to wait before asking again: Retry-After on a 429 or 503, 1 s for a 504."""
    if response.status_code == 504:
        return RETRY_PAUSE_S
    if response.status_code not in (429, 503):
        return None
    said = response.headers.get("Retry-After", "")
    return float(said) if said.isdigit() else None  # the edge sends seconds, never a date


class Edge:
    """The edge's HTTP API as the load uses it: every answer counted; told to wait, it waits."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.answers: Counter[str] = Counter()
        self.sheds_at: list[float] = []  # monotonic times
        self.on_answer: Callable[[], None] = lambda: None

    def count(self, method: str, route: str, answer: int | str) -> None:
        self.answers[f"{method} {route} {answer}"] += 1
        if method == "POST" and route == PLACE_ROUTE and answer == 503:
            self.sheds_at.append(time.monotonic())
        self.on_answer()

    async def call(
        self, method: str, route: str, *, deadline: float, path: str | None = None, **request: Any
    ) -> httpx.Response:
        """Send a request, again after each Retry-After that ends before ``deadline``; the last answer."""
        while True:
            try:
                response = await self.http.request(method, path or route, **request)
            except httpx.TransportError as exc:
                self.count(method, route, type(exc).__name__)
                await _pause_before(deadline, RETRY_PAUSE_S, Unanswered(f"{method} {path or route}: {exc!r}"))
                continue
            self.count(method, route, response.status_code)
            wait_s = retry_after_s(response)
            if wait_s is None or time.monotonic() + wait_s > deadline:
                return response
            await asyncio.sleep(wait_s)

    @asynccontextmanager
    async def stream(
        self, route: str, path: str, *, headers: dict[str, str]
    ) -> AsyncIterator[httpx.Response]:
        """A GET whose body is read as it comes; a broken connection is counted, then raised."""
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=STREAM_READ_TIMEOUT_S)
        try:
            async with self.http.stream("GET", path, headers=headers, timeout=timeout) as response:
                self.count("GET", route, response.status_code)
                yield response
        except httpx.TransportError as exc:
            self.count("GET", route, type(exc).__name__)
            raise


async def _pause_before(deadline: float, pause_s: float, late: Exception) -> None:
    """Pause before looking again; raise ``late`` if that would pass ``deadline``."""
    if time.monotonic() + pause_s > deadline:
        raise late
    await asyncio.sleep(pause_s)


async def poll(
    probe: Callable[[], Awaitable[T]], *, until: Callable[[T], bool], deadline: float, what: str
) -> T:
    """Ask ``probe`` until ``until`` holds of its answer; at ``deadline``, LoadFailed with the last."""
    while not until(answer := await probe()):
        await _pause_before(
            deadline, POLL_PAUSE_S, LoadFailed(f"timed out waiting for {what}: last {answer!r}")
        )
    return answer


def _checked(response: httpx.Response, what: str, *expected: int) -> Any:
    if response.status_code not in expected:
        raise LoadFailed(f"{what}: {response.status_code} {response.text[:500]}")
    return response.json() if response.content else None


# --- setting up the shop --------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    user_id: str
    headers: dict[str, str]
    token_ends: float  # monotonic time the access token expires


async def _log_in(edge: Edge, account: Account, deadline: float) -> tuple[dict[str, str], float]:
    """Log in (a registration on its way answers 401 for a moment); the headers and when they expire."""
    credentials = {"email": account.email, "password": account.password}
    response = await poll(
        lambda: edge.call("POST", "/auth/login", json=credentials, deadline=deadline),
        until=lambda r: r.status_code != 401,
        deadline=deadline,
        what=f"{account.email} to be able to log in",
    )
    token = _checked(response, f"logging in as {account.email}", 200)
    return {"Authorization": f"Bearer {token['access_token']}"}, time.monotonic() + token["expires_in"]


async def _sign_up(edge: Edge, who: str, deadline: float) -> Customer:
    account = Account.new(who)
    registration = {"email": account.email, "name": who, "password": account.password}
    response = await edge.call("POST", "/auth/register", json=registration, deadline=deadline)
    if _email_taken(response):
        # The registration was sent again after a lost answer (an edge killed mid-request) and the
        # first one went through: the account is this load's own if its password logs in.
        headers, token_ends = await _log_in(edge, account, deadline)
        me = await edge.call("GET", "/auth/me", headers=headers, deadline=deadline)
        return Customer(
            _checked(me, f"reading {account.email}'s account", 200)["user_id"], headers, token_ends
        )
    user_id = _checked(response, f"registering {account.email}", 201, 202)["user_id"]
    headers, token_ends = await _log_in(edge, account, deadline)
    return Customer(user_id, headers, token_ends)


def _email_taken(response: httpx.Response) -> bool:
    return (
        response.status_code == 409
        and response.headers.get("content-type", "").startswith("application/problem+json")
        and response.json().get("type") == EMAIL_TAKEN
    )


async def sign_up_customers(edge: Edge, run_id: str, count: int, deadline: float) -> list[Customer]:
    at_once = asyncio.Semaphore(SIGN_UPS_AT_ONCE)

    async def one(i: int) -> Customer:
        async with at_once:
            return await _sign_up(edge, f"load-{run_id.lower()}-customer-{i}", deadline)

    return await _all(*(one(i) for i in range(count)))


async def sign_in_admin(edge: Edge, settings: Settings, run_id: str, deadline: float) -> dict[str, str]:
    account = Account.new(f"load-{run_id.lower()}-admin")
    await make_admin(settings, account, name="Load administrator")
    headers, _ = await _log_in(edge, account, deadline)
    return headers


async def open_product(
    edge: Edge, admin: dict[str, str], sku: str, kind: SkuKind, units: int, deadline: float
) -> None:
    """Create the product, and once inventory knows its SKU, restock ``units`` of it."""
    product = {"sku": sku, "name": f"Load {kind} {sku}", "category": "load", "price_cents": PRICE_CENTS[kind]}
    _checked(await edge.call("POST", "/products", json=product, headers=admin, deadline=deadline), sku, 202)
    stock_path = f"/inventory/{sku}"

    def stock() -> Awaitable[httpx.Response]:
        return edge.call("GET", "/inventory/{sku}", path=stock_path, deadline=deadline)

    await poll(
        stock, until=lambda r: r.status_code == 200, deadline=deadline, what=f"inventory to know {sku}"
    )
    if units == 0:
        return
    restock = {"quantity": units}
    response = await edge.call(
        "POST",
        "/inventory/{sku}/restock",
        path=f"{stock_path}/restock",
        json=restock,
        headers=admin,
        deadline=deadline,
    )
    _checked(response, f"restocking {sku}", 202)
    await poll(
        stock,
        until=lambda r: r.status_code == 200 and r.json()["on_hand"] >= units,
        deadline=deadline,
        what=f"{units} units of {sku} on hand",
    )


@asynccontextmanager
async def _declining(
    edge: Edge, admin: dict[str, str], customer_ids: list[str], deadline: float
) -> AsyncIterator[None]:
    """The provider declines these customers' cards while the block runs; then declines whom it did
    before. Only the declines are put back: whatever else changed meanwhile (an outage a chaos run
    started or ended) stays as it is now."""
    if not customer_ids:
        yield
        return
    route = "/dev/payment-provider"
    before = _checked(
        await edge.call("GET", route, headers=admin, deadline=deadline), "the provider's controls", 200
    )
    declining = {**before, "decline_customers": sorted({*before.get("decline_customers", []), *customer_ids})}
    _checked(
        await edge.call("PUT", route, json=declining, headers=admin, deadline=deadline),
        "declining cards",
        200,
    )
    try:
        yield
    finally:
        restore_by = time.monotonic() + REQUEST_TIMEOUT_S
        now = _checked(
            await edge.call("GET", route, headers=admin, deadline=restore_by), "the provider's controls", 200
        )
        restored = {**now, "decline_customers": before.get("decline_customers", [])}
        _checked(
            await edge.call("PUT", route, json=restored, headers=admin, deadline=restore_by), "restoring", 200
        )


# --- placing and following orders -----------------------------------------------------------------


class Meter:
    """The progress bars (none without a Progress): orders accepted and ended, and the pushback."""

    def __init__(self, progress: Progress | None, edge: Edge, total: int) -> None:
        self._progress = progress
        self._edge = edge
        self.in_flight = 0
        if progress is not None:
            self._accepted = progress.add_task("accepted", total=total, note="")
            self._ended = progress.add_task("ended", total=total, note="")
            edge.on_answer = self._show_pushback

    def accepted(self) -> None:
        self.in_flight += 1
        self._advance("_accepted")

    def ended(self) -> None:
        self.in_flight -= 1
        self._advance("_ended")

    def _advance(self, bar: str) -> None:
        if self._progress is not None:
            self._progress.advance(getattr(self, bar))
            self._show_pushback()

    def _show_pushback(self) -> None:
        assert self._progress is not None
        answers = self._edge.answers
        sheds = answers[f"POST {PLACE_ROUTE} 503"]
        limited = sum(n for answer, n in answers.items() if answer.endswith(" 429"))
        self._progress.update(self._accepted, note=f"sheds {sheds}, 429s {limited}")
        self._progress.update(self._ended, note=f"in flight {self.in_flight}")


@dataclass
class _Run:
    edge: Edge
    config: LoadConfig
    customers: list[Customer]
    meter: Meter
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.config.concurrency)

    def now(self) -> float:
        return time.monotonic() - self.started

    @property
    def placing_ends(self) -> float:
        return self.started + self.config.duration_s

    async def turn_of(self, number: int) -> None:
        """Wait for the pace: order ``number`` goes no earlier than ``number / rate`` into the run."""
        if self.config.rate_per_s is not None:
            await asyncio.sleep(max(0.0, self.started + number / self.config.rate_per_s - time.monotonic()))


async def _journey(run: _Run, record: OrderRecord) -> None:
    """One order: placed in its turn, cancelled as planned, followed until it ends or its time is up."""
    planned = record.planned
    async with run.slots:
        await run.turn_of(planned.number)
        if time.monotonic() > run.placing_ends:
            return
        await _place(run, record)
        if (accepted_at := record.accepted_at) is None:  # not accepted (set with its order id)
            return
        run.meter.accepted()
        settle_by = run.started + accepted_at + run.config.settle_s
        moved_on = asyncio.Event()  # shipped, or ended: what a cancel "after dispatch" waits for
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_follow(run, record, moved_on, settle_by))
            if record.cancel is not None:
                tasks.create_task(_cancel(run, record, moved_on, settle_by))
        run.meter.ended()


async def _place(run: _Run, record: OrderRecord) -> None:
    planned = record.planned
    customer = run.customers[planned.customer]
    body = {"lines": [{"sku": sku, "quantity": quantity} for sku, quantity in planned.lines]}
    # A retry with the same key names the same order: the edge places it once.
    headers = {**customer.headers, "Idempotency-Key": planned.key}
    try:
        response = await run.edge.call(
            "POST", PLACE_ROUTE, json=body, headers=headers, deadline=run.placing_ends
        )
    except Unanswered:
        record.refused = "no answer"
        return
    if response.status_code != 202:
        record.refused = response.status_code
        return
    record.order_id = response.json()["order_id"]
    record.accepted_at = run.now()


async def _follow(run: _Run, record: OrderRecord, moved_on: asyncio.Event, settle_by: float) -> None:
    """Read the order's saga events until it ends; connect again when a stream ends early."""
    try:
        async with asyncio.timeout_at(_loop_time_of(settle_by)):
            while not record.ended:
                await _read_saga(run, record, moved_on)
    except TimeoutError:  # its time is up: the record keeps the last status seen (unsettled)
        moved_on.set()  # a cancel waiting for dispatch is not sent: the order is stuck, not dispatched


async def _read_saga(run: _Run, record: OrderRecord, moved_on: asyncio.Event) -> None:
    customer = run.customers[record.planned.customer]
    path = f"/orders/{record.order_id}/events"
    headers = {**customer.headers, "Accept": "text/event-stream"}
    try:
        async with run.edge.stream(EVENTS_ROUTE, path, headers=headers) as response:
            if response.status_code != 200:
                # 404: orders has not seen the order yet (the stream waited a query timeout for it).
                await asyncio.sleep(retry_after_s(response) or POLL_PAUSE_S)
                return
            reader = SseReader()
            async for line in response.aiter_lines():
                event = reader.feed(line)
                if event is not None and _saw(run, record, event):
                    moved_on.set()
                if record.ended:
                    return
    except httpx.TransportError:  # the stream broke (the edge counted it): follow again
        await asyncio.sleep(RETRY_PAUSE_S)


def _saw(run: _Run, record: OrderRecord, event: ServerEvent) -> bool:
    """Note what the event says of the order; whether it is now dispatched or ended."""
    after = status_after(event)
    if after is None:
        return False
    record.status, reason = after
    if record.ended:
        record.cancel_reason = reason
        record.ended_at = run.now()
    return record.status == "shipped" or record.ended


async def _cancel(run: _Run, record: OrderRecord, moved_on: asyncio.Event, settle_by: float) -> None:
    cancel = record.cancel
    assert cancel is not None
    if cancel.plan is Cancel.MEANWHILE:
        await asyncio.sleep(record.planned.cancel_after_s)  # the customer's own timing, not the system's
    elif cancel.plan is Cancel.AFTER_DISPATCH:
        await moved_on.wait()
        if not record.ended and record.status != "shipped":
            return  # never dispatched nor ended in time: there is nothing "after dispatch"
    customer = run.customers[record.planned.customer]
    path = f"/orders/{record.order_id}/cancel"

    cancel.sent_at = run.now()
    try:
        while True:
            response = await run.edge.call(
                "POST", CANCEL_ROUTE, path=path, headers=customer.headers, deadline=settle_by
            )
            # Right after the 202 the orders actor may not have the order yet: 404 until it has.
            if response.status_code != 404 or time.monotonic() + POLL_PAUSE_S > settle_by:
                break
            await asyncio.sleep(POLL_PAUSE_S)
        cancel.answer = response.status_code
    except Unanswered:
        cancel.answer = "no answer"


def _loop_time_of(monotonic: float) -> float:
    """asyncio's deadlines are in the loop's clock: ``monotonic`` (time.monotonic) in it."""
    return asyncio.get_running_loop().time() + (monotonic - time.monotonic())


# --- a run ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shop:
    admin: dict[str, str]
    customers: list[Customer]
    skus: dict[str, SkuKind]
    stock: dict[str, int]


async def _open_shop(
    edge: Edge, settings: Settings, config: LoadConfig, run_id: str, plan: list[PlannedOrder], deadline: float
) -> _Shop:
    skus = config.mix.skus(run_id)
    stock = config.mix.stock(skus, [order.lines for order in plan])
    admin = await sign_in_admin(edge, settings, run_id, deadline)
    customers, *_ = await _all(
        sign_up_customers(edge, run_id, config.customers, deadline),
        *(open_product(edge, admin, sku, kind, stock[sku], deadline) for sku, kind in skus.items()),
    )
    return _Shop(admin, customers, skus, stock)


async def _all(*steps: Awaitable[Any]) -> list[Any]:
    """Run ``steps`` at once; the first failure stops the others and is raised as it is."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


def _require_tokens_last(customers: list[Customer], config: LoadConfig) -> None:
    ends = time.monotonic() + config.duration_s + config.settle_s
    if any(customer.token_ends < ends for customer in customers):
        raise LoadFailed(
            f"the customers' access tokens expire before the run could end ({config.duration_s:g} s placing "
            f"+ {config.settle_s:g} s settling): shorten the run (tokens are not renewed)"
        )


async def run_load(
    edge_url: str, config: LoadConfig, *, settings: Settings | None = None, progress: Progress | None = None
) -> LoadResult:
    """Set up a shop through the edge at ``edge_url``, place and follow ``config.orders`` orders.

    ``settings`` reach the system's RabbitMQ (the administrator is made there); ``progress`` shows bars.
    """
    require_loopback(edge_url, allow_remote=config.allow_remote)
    settings = settings or get_settings()
    rng = random.Random(config.seed)
    run_id = uuid.uuid4().hex[:6].upper()
    limits = httpx.Limits(max_connections=2 * config.concurrency + 16, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=edge_url, timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
        edge = Edge(http)
        setup_started = time.monotonic()
        setup_ends = setup_started + config.setup_s
        plan = plan_orders(config, config.mix.skus(run_id), rng, run_id)
        shop = await _open_shop(edge, settings, config, run_id, plan, setup_ends)
        _require_tokens_last(shop.customers, config)
        declined = [customer.user_id for customer in shop.customers[: config.declined_customers]]
        records = [_record_of(order) for order in plan]
        async with _declining(edge, shop.admin, declined, setup_ends):
            run = _Run(edge, config, shop.customers, Meter(progress, edge, config.orders))
            started_at = datetime.now(UTC)
            async with asyncio.TaskGroup() as journeys:
                for record in records:
                    journeys.create_task(_journey(run, record))
    return LoadResult(
        edge_url=edge_url,
        config=config,
        run_id=run_id,
        started_at=started_at,
        setup_s=run.started - setup_started,
        skus=shop.skus,
        stock=shop.stock,
        orders=records,
        answers=edge.answers,
        sheds_at=[at - run.started for at in edge.sheds_at],
    )


def _record_of(order: PlannedOrder) -> OrderRecord:
    return OrderRecord(order, cancel=None if order.cancel is Cancel.NONE else CancelRecord(order.cancel))
