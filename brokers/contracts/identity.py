"""Identity: the user events other actors react to (the identity actor comes with its own issue)."""

from pydantic import EmailStr, Field

from brokers.contracts.common import EntityId
from brokers.envelope import Event


class UserRegistered(Event, type="user.registered"):
    user_id: EntityId
    email: EmailStr
    name: str = Field(min_length=1, max_length=200)


class UserDeactivated(Event, type="user.deactivated"):
    user_id: EntityId
