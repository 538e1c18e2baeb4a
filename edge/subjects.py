"""Whether a token's subject may still act: a user identity knows, active, with the token's role.

A signed token outlives a deactivation (it lives up to ``TOKEN_MAX_LIFETIME_S``), so the edge asks
identity for the status of a subject it has not seen lately and keeps the answer ``STATUS_TTL_S``,
for at most ``CAPACITY`` subjects (the least recently seen go first). Identity's ``user.deactivated``
event reaches every edge on its events subscription (edge.events) and marks the user at once, so a
deactivated user's token stops working as soon as the event is delivered, not when the cache expires.

Deactivation is final (nothing makes a user active again), so an answer asked for before a
deactivation and arriving after its event never undoes it. While the subscription is down, events
may be missed: nothing is cached then, and everything cached is forgotten when it goes down and
when it comes back.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError

from brokers.contracts.identity import GetUser, Role, UserDeactivated, UserView
from brokers.rpc import QueryFailed
from edge.auth import Principal, Unauthenticated

log = structlog.get_logger()

# How long an answer of identity stands without asking again (deactivations come sooner, by event).
STATUS_TTL_S = 30.0
# Subjects remembered at once: a bound on memory whatever the number of users.
CAPACITY = 10_000
DEACTIVATED = "the access token's user is deactivated or does not exist"


@dataclass(frozen=True)
class Status:
    active: bool  # False: deactivated, or no such user
    role: Role | None
    until: float  # monotonic time after which identity is asked again


# Identity's view of a user, or None when it knows no such user.
AskUser = Callable[[str], Awaitable[UserView | None]]


class Subjects:
    """The status of the users tokens name, cached, with deactivations pushed by identity's event."""

    def __init__(
        self,
        ask: AskUser,
        *,
        subscribed: Callable[[], bool],
        ttl_s: float = STATUS_TTL_S,
        capacity: int = CAPACITY,
    ) -> None:
        self._ask = ask
        self._subscribed = subscribed  # the deactivation events reach this edge now
        self._ttl_s = ttl_s
        self._capacity = capacity
        self._known: OrderedDict[str, Status] = OrderedDict()
        # One question per subject at a time: a burst of requests of one user shares it.
        self._asking: dict[str, asyncio.Future[Status]] = {}
        # Bumped whenever events may have been missed: answers asked for before are not kept.
        self._generation = 0

    async def require(self, principal: Principal) -> None:
        """Refuse (401) a token whose user is deactivated, unknown, or not of the token's role."""
        status = await self._status(principal.user_id)
        if not status.active:
            raise Unauthenticated(DEACTIVATED)
        if status.role != principal.role:
            raise Unauthenticated("the access token's role is not its user's: log in again")

    def deactivated(self, body: bytes) -> None:
        """Identity's user.deactivated event: the user's tokens stop working now."""
        try:
            event = UserDeactivated.model_validate_json(body)
        except ValidationError as exc:
            log.warning("edge.user_deactivated_invalid", error=str(exc))
            return
        self._remember(event.user_id, Status(active=False, role=None, until=self._expiry()))

    def forget_all(self) -> None:
        """Events may have been missed: ask identity again about everyone."""
        self._generation += 1
        self._known.clear()

    async def _status(self, user_id: str) -> Status:
        status = self._known.get(user_id)
        if status is not None and status.until > time.monotonic():
            self._known.move_to_end(user_id)
            return status
        asking = self._asking.get(user_id)
        if asking is None:
            asking = asyncio.ensure_future(self._fetch(user_id))
            self._asking[user_id] = asking
            asking.add_done_callback(lambda done: self._done_asking(user_id, done))
        # Shielded: a request that goes away does not cancel the answer others wait for.
        return await asyncio.shield(asking)

    def _done_asking(self, user_id: str, done: asyncio.Future[Status]) -> None:
        if self._asking.get(user_id) is done:
            del self._asking[user_id]
        if not done.cancelled():
            done.exception()  # retrieved: an error is the waiting requests' to report

    async def _fetch(self, user_id: str) -> Status:
        generation, covered = self._generation, self._subscribed()
        view = await self._ask(user_id)
        status = Status(
            active=view is not None and view.active, role=view.role if view else None, until=self._expiry()
        )
        if covered and generation == self._generation:
            status = self._remember(user_id, status)
        return status

    def _remember(self, user_id: str, status: Status) -> Status:
        known = self._known.get(user_id)
        if known is not None and not known.active and status.active:
            # The deactivation's event came while identity's older answer was on its way.
            return known
        self._known[user_id] = status
        self._known.move_to_end(user_id)
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)
        return status

    def _expiry(self) -> float:
        return time.monotonic() + self._ttl_s


def subjects_of_link(link: Any) -> Subjects:
    """The subjects of an edge: identity asked over its link, deactivations heard on its events."""

    async def ask(user_id: str) -> UserView | None:
        try:
            return await link.ask(GetUser(user_id=user_id), UserView, correlation_id=f"subject-{user_id}")
        except QueryFailed as exc:
            if exc.problem.status in (404, 409):  # 409: an id whose registration was refused
                return None
            raise

    subjects = Subjects(ask, subscribed=lambda: link.saga_events.connected)
    link.saga_events.on_event(UserDeactivated.TYPE, lambda message: subjects.deactivated(message.body))
    link.saga_events.on_gap(subjects.forget_all)
    return subjects
