"""Accounts the scripted journeys make up for one run (`emporium demo`, `emporium load`).

Their passwords are generated for the run and never shown or stored: there is no default password
anywhere. The administrator is made the way operators make one (`emporium admin create`, over
RabbitMQ), since no HTTP route makes administrators.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from aio_pika.exceptions import AMQPError

from brokers.contracts.identity import UserView, password_problems
from brokers.settings import Settings
from ops.identity_admin import IdentityAdminFailed, create_admin


@dataclass(frozen=True)
class Account:
    """Credentials made up for one run."""

    email: str
    password: str

    @classmethod
    def new(cls, who: str) -> Account:
        """A fresh account; ``who`` starts its email address (e.g. ``demo-admin``, ``load-customer-3``)."""
        email = f"{who}-{uuid.uuid4().hex[:8]}@example.com"
        return cls(email, new_password(email))


def new_password(email: str) -> str:
    """A random password that identity's policy accepts (drawn again in the rare case it is not)."""
    while True:
        password = secrets.token_urlsafe(18)
        if not password_problems(password, email):
            return password


async def make_admin(settings: Settings, account: Account, *, name: str) -> UserView:
    """Make ``account`` an administrator over the system's RabbitMQ; it exists once this returns."""
    try:
        return await create_admin(settings, account.email, account.password, name=name)
    except (AMQPError, OSError) as exc:
        where = urlsplit(settings.rabbitmq_url)
        raise IdentityAdminFailed(
            f"cannot make an administrator: RabbitMQ at {where.hostname}:{where.port or 5672}"
            f"{where.path or '/'} refused ({exc!r}); set RABBITMQ_URL to the running system's"
        ) from exc
