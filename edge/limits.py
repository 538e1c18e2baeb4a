"""What one caller may ask of the edge, and how much work the edge lets pile up behind it.

Rate limits count requests in windows (the `limits` library): every request spends one unit of its
caller's budget, and a login or registration one unit of its client address's login budget. A
spent budget is answered 429 with ``Retry-After``. The login budgets count in a moving window (every
attempt remembered until it is older than the window, so Retry-After is exact). The per-request
budget, spent by every request, counts in a sliding window counter (this window's count plus the
previous window's, weighted by how much of it the sliding window still covers), in a storage of its
own: the moving window's in-memory storage hands each of its keys to a thread to expire on every
hit, which cost the edge about a sixth of its CPU under load when every caller's budget was one.

Failed logins are counted per (email, client address) and per email. The first budget stops one
address guessing one account's password (429 for that pair only, so nobody can lock an owner out
from elsewhere); the second, larger one notices guessing spread over many addresses and then
slows every attempt for that account down (a pause before its password is checked) instead of
refusing the owner. A successful login clears its address's failures for that email. Admission control refuses new orders
(503) while the saga's backlog is larger than it can clear well inside an order's deadline: an
order accepted then would be cancelled for timeout, charged or not. The backlog is the deepest of
the work queues an order passes before it is confirmed (orders, inventory, payments), so a slow
inventory counts as much as a slow orders actor.

Client addresses are ``request.client.host``. Behind a reverse proxy that is the proxy's address
unless uvicorn runs with ``--proxy-headers --forwarded-allow-ips=<the proxy's address>``, which
sets it from the proxy's X-Forwarded-For; this module never reads that header itself, since any
client can send one.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from typing import Annotated, Literal, NoReturn, get_args

from fastapi import Depends, FastAPI, Request
from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter, RateLimiter, SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from prometheus_client import Counter

from brokers.settings import Settings
from brokers.topology import work_queue_names
from edge.auth import Principal, optional_principal
from edge.link import QueueMissing, RabbitLink
from edge.problems import RETRY_AFTER_S, Refused

RATE_LIMITED = "urn:emporium:problem:rate-limited"
OVERLOADED = "urn:emporium:problem:overloaded"

# The work queues an order goes through before its confirmation, which the deadline waits for: an
# actor's one queue, or each of its partitions (an order waits behind the others in its partition).
SAGA_WORK_QUEUES = tuple(
    queue for actor in ("orders", "inventory", "payments") for queue in work_queue_names(actor)
)
ORDERS_WORK_QUEUE = SAGA_WORK_QUEUES[0]
# How long one reading of a queue's depth answers for: a burst of requests shares one declaration.
DEPTH_MAX_AGE_S = 1.0

Budget = Literal["caller", "login", "login-failures", "account-failures"]

RATE_LIMITED_TOTAL = Counter(
    "emporium_edge_rate_limited_total", "Requests refused because a rate-limit budget was spent", ["budget"]
)
# Every budget is a series from the start, so a rate of refusals is 0 before the first one.
for _budget in get_args(Budget):
    RATE_LIMITED_TOTAL.labels(_budget)
SLOWED_LOGINS_TOTAL = Counter(
    "emporium_edge_slowed_logins_total", "Logins paused because their account's failed-login budget was spent"
)


def client_address(request: Request) -> str:
    # No client (a server that does not tell, such as one on a unix socket): all such requests
    # share one budget rather than escape the limit.
    return request.client.host if request.client else "unknown"


def _address_key(request: Request) -> str:
    return f"address:{client_address(request)}"


def _email_key(email: str) -> str:
    # Hashed: with a shared store, the counters' keys should not list the users' email addresses.
    return "email:" + hashlib.sha256(email.encode()).hexdigest()


class RateLimits:
    """The edge's request budgets, counted in the storage the settings name (one per app)."""

    def __init__(self, settings: Settings) -> None:
        uri = settings.emporium_rate_limit_storage
        # The async flavour of a storage is named "async+<scheme>" in the limits library.
        scheme = uri if uri.startswith("async+") else f"async+{uri}"
        self._requests = SlidingWindowCounterRateLimiter(storage_from_string(scheme))
        self._logins = MovingWindowRateLimiter(storage_from_string(scheme))
        self._per_caller = parse(settings.emporium_rate_limit)
        self._per_login = parse(settings.emporium_login_rate_limit)
        self._failures_per_pair = parse(settings.emporium_login_failure_limit)
        self._failures_per_account = parse(settings.emporium_account_failure_limit)
        self._slowdown_s = settings.emporium_login_slowdown_s

    async def spend_caller(self, request: Request, principal: Principal | None) -> None:
        """One request of its caller's budget: the verified user's, else the client address's."""
        key = f"user:{principal.user_id}" if principal else f"address:{client_address(request)}"
        await self._spend(self._per_caller, "caller", key, "too many requests from this caller")

    async def throttle_registration(self, request: Request) -> None:
        """One attempt from the client address's login budget (an email is not counted: see above)."""
        await self._spend(
            self._per_login, "login", _address_key(request), "too many attempts from this address"
        )

    async def throttle_login(self, request: Request, email: str) -> None:
        """Before a login for ``email`` (normalised) is checked: spend, refuse or slow it down."""
        address = _address_key(request)
        await self._spend(self._per_login, "login", address, "too many attempts from this address")
        pair = (_email_key(email), address)
        if not await self._logins.test(self._failures_per_pair, "login-failures", *pair):
            await self._refuse(
                self._failures_per_pair,
                "login-failures",
                pair,
                "too many failed logins for this account from here",
            )
        if not await self._logins.test(self._failures_per_account, "account-failures", _email_key(email)):
            SLOWED_LOGINS_TOTAL.inc()
            await asyncio.sleep(self._slowdown_s)

    async def login_failed(self, request: Request, email: str) -> None:
        await self._logins.hit(
            self._failures_per_pair, "login-failures", _email_key(email), _address_key(request)
        )
        await self._logins.hit(self._failures_per_account, "account-failures", _email_key(email))

    async def login_succeeded(self, request: Request, email: str) -> None:
        await self._logins.clear(
            self._failures_per_pair, "login-failures", _email_key(email), _address_key(request)
        )

    def _limiter(self, budget: Budget) -> RateLimiter:
        return self._requests if budget == "caller" else self._logins

    async def _spend(self, item: RateLimitItem, budget: Budget, key: str, what: str) -> None:
        if not await self._limiter(budget).hit(item, budget, key):
            await self._refuse(item, budget, (key,), what)

    async def _refuse(
        self, item: RateLimitItem, budget: Budget, keys: tuple[str, ...], what: str
    ) -> NoReturn:
        RATE_LIMITED_TOTAL.labels(budget).inc()
        stats = await self._limiter(budget).get_window_stats(item, budget, *keys)
        retry_after_s = max(1, math.ceil(stats.reset_time - time.time()))
        raise Refused(
            429,
            f"{what} (at most {item.amount} in {item.get_expiry()} s); retry in {retry_after_s} s",
            type_=RATE_LIMITED,
            title="Too many requests",
            headers={"Retry-After": str(retry_after_s)},
        )


class RecentDepth:
    """A queue's depth, read again only once the last reading is older than ``max_age_s``.

    ``missing_is_empty``: a queue that does not exist holds no backlog (an actor not deployed, as in
    a partial deployment); otherwise its absence is an error (503), as for the orders queue, which
    new orders are sent to.
    """

    def __init__(
        self, queue: str, *, max_age_s: float = DEPTH_MAX_AGE_S, missing_is_empty: bool = False
    ) -> None:
        self.queue = queue
        self._missing_is_empty = missing_is_empty
        self._max_age_s = max_age_s
        self._depth = 0
        self._read_at = -math.inf
        # Requests that find the reading stale wait for the one read in flight instead of each reading.
        self._reading = asyncio.Lock()

    async def read(self, link: RabbitLink) -> int:
        async with self._reading:
            if time.monotonic() - self._read_at > self._max_age_s:
                try:
                    self._depth = await link.queue_depth(self.queue)
                except QueueMissing:
                    if not self._missing_is_empty:
                        raise
                    self._depth = 0
                self._read_at = time.monotonic()
            return self._depth


def install_limits(app: FastAPI, settings: Settings) -> None:
    """Put the budgets and the saga queues' depths on ``app.state``."""
    app.state.rate_limits = RateLimits(settings)
    app.state.saga_depths = tuple(
        RecentDepth(queue, missing_is_empty=queue != ORDERS_WORK_QUEUE) for queue in SAGA_WORK_QUEUES
    )


async def limit_caller(
    request: Request, principal: Annotated[Principal | None, Depends(optional_principal)]
) -> None:
    """Dependency: spend one unit of the caller's request budget (429 when it is spent)."""
    rate_limits: RateLimits = request.app.state.rate_limits
    await rate_limits.spend_caller(request, principal)


async def shed_orders_load(request: Request) -> None:
    """Dependency: refuse a new order (503) while a saga work queue is longer than the bound."""
    saga_depths: tuple[RecentDepth, ...] = request.app.state.saga_depths
    link = request.app.state.link
    depths = await asyncio.gather(*(depth.read(link) for depth in saga_depths))
    depth, queue = max(zip(depths, (d.queue for d in saga_depths), strict=True))
    bound = request.app.state.settings.emporium_saga_backlog_bound
    if depth > bound:
        raise Refused(
            503,
            f"the {queue} queue holds {depth} messages, above the saga's backlog bound {bound}; retry later",
            type_=OVERLOADED,
            title="Too busy to take orders",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
