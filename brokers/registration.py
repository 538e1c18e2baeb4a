"""Registering a user and waiting for the outcome, for every sender of a registration (the edge,
the operators' tool): the same steps, whatever carries the messages.

Registration is a command, so its outcome is learnt by asking identity for the user id the sender
chose: the user (registered), a 409 problem (refused: the address is taken), or nothing yet.

The user id comes from the sender's idempotency key, so a retry finds its user. Another request
under the same key finds that user too: it is refused (IdReused) unless the user is what it asked
for (address, name, role and, when the sender can check it, the password), so that nobody learns
another person's account by reusing their key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from brokers.contracts.identity import CreateAdmin, GetUser, RegisterUser, UserView
from brokers.envelope import Command, Query
from brokers.rpc import QueryFailed

T = TypeVar("T")
Send = Callable[[Command], Awaitable[None]]
Ask = Callable[[Query], Awaitable[UserView]]
# Whether the user found under the registration's id has the registration's password.
PasswordCheck = Callable[[RegisterUser | CreateAdmin], Awaitable[bool]]
_POLL_S = 0.05


class RegistrationRefused(Exception):
    """Identity refused the registration; the message says why (never whose the address is)."""


class IdReused(Exception):
    """The registration's user id (its idempotency key) already names another registration's user."""


async def register(
    command: RegisterUser | CreateAdmin,
    *,
    send: Send,
    ask: Ask,
    timeout_s: float,
    password_is_set: PasswordCheck | None = None,
) -> UserView | None:
    """Send ``command`` and return the user once identity has it; None when not seen in time.

    An address already registered is refused before anything is sent, so a password travels only
    when the registration can succeed (a race with another registration is settled by identity).
    """
    existing = await poll(lambda: ask(GetUser(email=command.email)), timeout_s=0)
    if existing is None:
        await send(command)
        user = await poll(lambda: ask(GetUser(user_id=command.user_id)), timeout_s=timeout_s)
    elif existing.user_id == command.user_id:  # this very registration, retried
        user = existing
    else:
        raise RegistrationRefused("the email address is already registered")
    if user is not None and not await _is_registration_of(user, command, password_is_set):
        raise IdReused(f"user id {command.user_id} already names another registration")
    return user


async def _is_registration_of(
    user: UserView, command: RegisterUser | CreateAdmin, password_is_set: PasswordCheck | None
) -> bool:
    role = "admin" if isinstance(command, CreateAdmin) else "customer"
    if (user.email, user.name, user.role) != (command.email, command.name, role):
        return False
    return password_is_set is None or await password_is_set(command)


async def poll(
    ask: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = lambda _: True,
    timeout_s: float,
    refused: type[Exception] = RegistrationRefused,
) -> T | None:
    """Ask until the answer is there and satisfies ``until``; None if it is not by the deadline.

    A 404 counts as not there yet; a 409 is a refusal (``refused``, saying why); any other problem
    is raised.
    """
    deadline = time.monotonic() + timeout_s
    pause = _POLL_S
    while True:
        try:
            answer = await ask()
            if until(answer):
                return answer
        except QueryFailed as exc:
            if exc.problem.status == 409:
                raise refused(exc.problem.detail) from exc
            if exc.problem.status != 404:
                raise
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)
