"""The status of tokens' subjects at the edge: asked of identity once, kept briefly and boundedly,
ended at once by identity's deactivation event, and forgotten when events may have been missed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from brokers.contracts.identity import UserDeactivated, UserView
from edge.auth import Principal, Unauthenticated
from edge.subjects import Subjects

ANN = Principal(user_id="ann", role="customer")


class Identity:
    """Identity's answers, counted; ``hold`` keeps them back until released."""

    def __init__(self) -> None:
        self.users = {"ann": "customer", "root": "admin"}
        self.inactive: set[str] = set()
        self.asked: list[str] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def ask(self, user_id: str) -> UserView | None:
        self.asked.append(user_id)
        await self.hold.wait()
        if user_id not in self.users:
            return None
        return UserView(
            user_id=user_id,
            email=f"{user_id}@example.com",
            name=user_id,
            role=self.users[user_id],
            active=user_id not in self.inactive,
            registered_at=datetime.now(UTC),
        )


def deactivation(user_id: str) -> bytes:
    return UserDeactivated(user_id=user_id).body()


async def test_a_burst_of_one_users_requests_asks_identity_once():
    identity = Identity()
    subjects = Subjects(identity.ask, subscribed=lambda: True)
    await asyncio.gather(*(subjects.require(ANN) for _ in range(20)))
    await subjects.require(ANN)
    assert identity.asked == ["ann"]


async def test_the_deactivation_event_ends_a_cached_users_tokens_at_once():
    identity = Identity()
    subjects = Subjects(identity.ask, subscribed=lambda: True)
    await subjects.require(ANN)
    subjects.deactivated(deactivation("ann"))
    with pytest.raises(Unauthenticated, match="deactivated or does not exist"):
        await subjects.require(ANN)
    assert identity.asked == ["ann"]


async def test_an_answer_asked_before_the_deactivation_and_arriving_after_its_event_does_not_undo_it():
    identity = Identity()
    identity.hold.clear()
    subjects = Subjects(identity.ask, subscribed=lambda: True)
    first = asyncio.create_task(subjects.require(ANN))
    await asyncio.sleep(0)  # the question is on its way
    subjects.deactivated(deactivation("ann"))
    identity.hold.set()
    for request in (first, subjects.require(ANN)):
        with pytest.raises(Unauthenticated):
            await request


async def test_unknown_users_and_a_role_not_the_users_are_refused():
    subjects = Subjects(Identity().ask, subscribed=lambda: True)
    with pytest.raises(Unauthenticated, match="deactivated or does not exist"):
        await subjects.require(Principal(user_id="ghost", role="admin"))
    with pytest.raises(Unauthenticated, match="role is not its user's"):
        await subjects.require(Principal(user_id="ann", role="admin"))


async def test_nothing_is_kept_while_events_cannot_arrive_and_everything_is_forgotten_after_a_gap():
    identity = Identity()
    subscribed = False
    subjects = Subjects(identity.ask, subscribed=lambda: subscribed)
    await subjects.require(ANN)
    await subjects.require(ANN)
    assert identity.asked == ["ann", "ann"]

    subscribed = True
    await subjects.require(ANN)
    subjects.forget_all()
    identity.inactive.add("ann")  # a deactivation whose event was missed
    with pytest.raises(Unauthenticated):
        await subjects.require(ANN)


async def test_the_cache_is_bounded_and_expires():
    identity = Identity()
    identity.users |= {f"u{n}": "customer" for n in range(5)}
    subjects = Subjects(identity.ask, subscribed=lambda: True, capacity=3)
    for n in range(5):
        await subjects.require(Principal(user_id=f"u{n}", role="customer"))
    await subjects.require(Principal(user_id="u0", role="customer"))  # evicted: asked again
    assert identity.asked.count("u0") == 2

    expiring = Subjects(identity.ask, subscribed=lambda: True, ttl_s=0)
    await expiring.require(ANN)
    await expiring.require(ANN)
    assert identity.asked.count("ann") == 2


def test_an_invalid_event_changes_nothing():
    subjects = Subjects(Identity().ask, subscribed=lambda: True)
    subjects.deactivated(b'{"user_id": {"$gt": ""}}')
    assert not subjects._known
