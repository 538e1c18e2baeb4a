"""Identity rules: who may register, who may log in, who may be deactivated and what that changes.
Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from actors.runtime.errors import NotFound, RuleViolation
from brokers.contracts.identity import (
    CreateAdmin,
    DeactivateUser,
    RegisterUser,
    Role,
    UserDeactivated,
    UserRegistered,
    UserView,
)

Registration = RegisterUser | CreateAdmin
# The role comes from the command, never from its content: only the operators' tool sends CreateAdmin.
ROLE_OF: dict[type[Registration], Role] = {RegisterUser: "customer", CreateAdmin: "admin"}
# One answer for an unknown address, a wrong password and a deactivated account: a login attempt
# must not learn which addresses have accounts.
BAD_CREDENTIALS = "email or password is wrong"


@dataclass(frozen=True)
class User:
    user_id: str
    email: str
    name: str
    role: Role
    password_hash: str = field(repr=False)
    active: bool
    registered_at: datetime
    deactivated_at: datetime | None = None

    def view(self) -> UserView:
        return UserView(
            user_id=self.user_id,
            email=self.email,
            name=self.name,
            role=self.role,
            active=self.active,
            registered_at=self.registered_at,
            deactivated_at=self.deactivated_at,
        )


EMAIL_TAKEN = "the email address is already registered"


@dataclass(frozen=True)
class RefusedRegistration:
    """A registration turned down; its sender learns why by asking for the user it named (409)."""

    user_id: str
    reason: str


def judge_registration(
    command: Registration, *, same_id: User | None, same_email: User | None
) -> Literal["register", "seen"] | RefusedRegistration:
    """Whether to register, or the registration was applied before (a copy sent again), or is refused."""
    if same_id is not None:
        if (same_id.email, same_id.role) == (command.email, ROLE_OF[type(command)]):
            return "seen"
        # Only a faulty sender reuses an id (the edge makes a new one per registration).
        raise RuleViolation(f"user id {command.user_id} already belongs to another registration")
    if same_email is not None:
        # An everyday outcome, not a dead letter (which would park the password with it).
        return RefusedRegistration(command.user_id, EMAIL_TAKEN)
    return "register"


def register(command: Registration, *, password_hash: str, now: datetime) -> tuple[User, UserRegistered]:
    user = User(
        user_id=command.user_id,
        email=command.email,
        name=command.name,
        role=ROLE_OF[type(command)],
        password_hash=password_hash,
        active=True,
        registered_at=now,
    )
    return user, UserRegistered(user_id=user.user_id, email=user.email, name=user.name)


def authenticated(user: User | None, *, password_matches: bool) -> User:
    """The user a login is for, or NotFound (answered 404) with the same detail whatever went wrong."""
    if user is None or not password_matches or not user.active:
        raise NotFound(BAD_CREDENTIALS)
    return user


SELF_DEACTIVATION = "an administrator cannot deactivate themselves"
LAST_ADMIN = "the last active administrator cannot be deactivated: make another administrator first"


@dataclass(frozen=True)
class Admins:
    """The active administrators, and the version of the guard every departure of one writes.

    Two administrators deactivating each other read two active administrators each; each would
    leave one. Writing one guard document, version checked, makes the second conflict and decide
    again on the first's outcome (rule 9: a write skew otherwise).
    """

    active: int
    version: int  # 0: never written


@dataclass(frozen=True)
class Deactivation:
    """The outcome of a DeactivateUser, and what to write for it."""

    deactivation_id: str
    user_id: str
    refusal: str | None = None
    deactivated_at: datetime | None = None
    user: User | None = None  # the user, deactivated now (None: nothing changes)
    event: UserDeactivated | None = None
    guard_version: int | None = None  # the next version of the administrators' guard


def deactivate(command: DeactivateUser, user: User, *, admins: Admins, now: datetime) -> Deactivation:
    """Deactivate a user, unless that is the requesting administrator or the last active one."""
    unchanged = Deactivation(deactivation_id=command.deactivation_id, user_id=user.user_id)
    if command.requested_by == user.user_id:
        return replace(unchanged, refusal=SELF_DEACTIVATION)
    if not user.active:
        return replace(unchanged, deactivated_at=user.deactivated_at)
    guard_version = None
    if user.role == "admin":
        if admins.active <= 1:
            return replace(unchanged, refusal=LAST_ADMIN)
        guard_version = admins.version + 1
    return replace(
        unchanged,
        deactivated_at=now,
        user=replace(user, active=False, deactivated_at=now),
        event=UserDeactivated(user_id=user.user_id),
        guard_version=guard_version,
    )
