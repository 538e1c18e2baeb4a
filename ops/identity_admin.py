"""Operator actions on identity: creating an administrator, rotating the signing key.

This is the only way to an administrator account: the edge only ever sends ``RegisterUser``
(customers), never ``CreateAdmin``, and there is no default administrator or password. Both actions
talk to a running identity actor through RabbitMQ, like everything else, and wait until its
answers show the change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import ValidationError

from brokers.contracts.identity import CreateAdmin, GetSigningKeys, GetUser, Jwks, RotateSigningKey, UserView
from brokers.envelope import Command, Envelope, new_id
from brokers.factory import make_broker, publish
from brokers.rpc import QueryFailed, requesting
from brokers.settings import Settings

T = TypeVar("T")


class IdentityAdminFailed(RuntimeError):
    """The action was refused, or identity did not show its effect in time."""


async def create_admin(
    settings: Settings, email: str, password: str, *, name: str = "Administrator", timeout_s: float = 20.0
) -> UserView:
    """Register an administrator and return it once identity answers for it."""
    try:
        command = CreateAdmin(user_id=f"admin-{new_id()}", email=email, name=name, password=password)
    except ValidationError as exc:
        reasons = "; ".join(error["msg"] for error in exc.errors())
        raise IdentityAdminFailed(f"cannot create this administrator: {reasons}") from exc
    async with requesting(settings) as asker:
        taken = await _poll(lambda: asker.ask(GetUser(email=command.email), UserView), timeout_s=0)
        if taken is not None:
            raise IdentityAdminFailed(
                f"{command.email} is already registered, as {taken.role} {taken.user_id}"
            )
        await _send(settings, command)
        admin = await _poll(
            lambda: asker.ask(GetUser(user_id=command.user_id), UserView), timeout_s=timeout_s
        )
    if admin is None:
        raise IdentityAdminFailed(_not_seen("the administrator", timeout_s))
    return admin


async def rotate_signing_key(settings: Settings, *, timeout_s: float = 20.0) -> str:
    """Start signing with a new key; returns its key id. Tokens signed before stay valid."""
    async with requesting(settings) as asker:
        before = (await asker.ask(GetSigningKeys(), Jwks)).keys[0].kid
        await _send(settings, RotateSigningKey())
        after = await _poll(
            lambda: asker.ask(GetSigningKeys(), Jwks),
            until=lambda jwks: jwks.keys[0].kid != before,
            timeout_s=timeout_s,
        )
    if after is None:
        raise IdentityAdminFailed(_not_seen("the new signing key", timeout_s))
    return after.keys[0].kid


def _not_seen(what: str, timeout_s: float) -> str:
    return (
        f"identity did not show {what} within {timeout_s:g}s: is the identity actor running? "
        "A refused command is in the dead-letter queue identity.dlq"
    )


async def _send(settings: Settings, command: Command) -> None:
    broker = make_broker(settings, app_name="emporium-ops")
    await broker.connect()
    try:
        await publish(broker, command, Envelope.first(command))
    finally:
        await broker.stop()


async def _poll(
    ask: Callable[[], Awaitable[T]], *, until: Callable[[T], bool] = lambda _: True, timeout_s: float
) -> T | None:
    """Ask until the answer is there and satisfies ``until``; None if it is not by the deadline
    (a 404 counts as not there yet; any other problem is raised)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            answer = await ask()
            if until(answer):
                return answer
        except QueryFailed as exc:
            if exc.problem.status != 404:
                raise
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.1)
