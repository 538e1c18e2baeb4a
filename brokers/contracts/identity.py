"""Identity: users, their credentials and roles, and the keys that sign their access tokens.

Registration is a command (it changes state), so the edge answers it 202 and learns the outcome by
asking ``GetUser`` for the user id it chose; a registration whose email address is taken is
dead-lettered as a rule violation, and ``GetUser(email=...)`` then names another user.
Logging in is the query ``AuthenticateUser``: it only reads (it checks the password against the
stored hash) and answers a signed access token, or a 404 problem whose detail never says whether
the address or the password was wrong.

``CreateAdmin`` is sent by the operators' tool only (``ops.identity_admin``): the edge never sends
it, and ``RegisterUser`` always makes a customer, so no HTTP request can create an administrator.

The password policy is part of the registration contracts, so every sender (the edge, the operators'
tool) learns about a weak password when it builds the command, not from a dead letter later.
Passwords travel in message bodies: they are kept out of ``repr`` and out of validation errors.
"""

import unicodedata
from datetime import datetime
from typing import Annotated, Literal, Self

from confusable_homoglyphs import categories, confusables
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    model_validator,
)

from brokers.contracts.common import EntityId, Name, Value
from brokers.envelope import Command, Event, Query

Role = Literal["customer", "admin"]

# What an access token says about where it comes from and whom it is for; the edge checks both.
TOKEN_ISSUER = "emporium-identity"
TOKEN_AUDIENCE = "emporium"
TOKEN_ALGORITHM = "EdDSA"
# The longest an access token may live (iat to exp): identity issues none longer, the edge accepts none.
TOKEN_MAX_LIFETIME_S = 3_600

PASSWORD_MIN_LENGTH = 12
# A bound on the work one login can cost (argon2 hashes the whole input).
PASSWORD_MAX_LENGTH = 256


def normalise_email(address: str) -> str:
    """One spelling per address, so that uniqueness means what people expect."""
    return address.strip().lower()


def _compatibility_folded(address: object) -> object:
    # NFKC: full-width, ligature and other compatibility forms become the letters they stand for, so
    # "ａｄａ@example.com" is ada@example.com and cannot be a second account beside it.
    return unicodedata.normalize("NFKC", address) if isinstance(address, str) else address


def _one_script_per_part(address: str) -> str:
    """Refuse a local part or domain label mixing scripts (a Cyrillic "а" among Latin letters).

    Such a mix is how a look-alike of someone's address is made; an address wholly in one script
    (Latin, Cyrillic, Greek, Han, ...) is accepted. Digits and punctuation belong to every script.
    """
    local, _, domain = address.rpartition("@")
    for part in (local, *domain.split(".")):
        if confusables.is_mixed_script(part):
            scripts = " and ".join(sorted(categories.unique_aliases(part) - {"COMMON"}))
            raise ValueError(
                f"the email address mixes scripts ({scripts}) in {part!r}: type it in one script"
            )
    return address


# email-validator already lower-cases the domain; the local part is lower-cased too (see above).
Email = Annotated[
    EmailStr,
    BeforeValidator(_compatibility_folded),
    AfterValidator(_one_script_per_part),
    AfterValidator(normalise_email),
]
# Passwords are taken as typed: no stripping of surrounding spaces.
Password = Annotated[
    str,
    StringConstraints(strip_whitespace=False, min_length=1, max_length=PASSWORD_MAX_LENGTH),
    Field(repr=False),
]


def _character_classes(password: str) -> int:
    return sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )


def password_problems(password: str, email: str) -> list[str]:
    """Why a password is not acceptable for the account of this (normalised) email; empty if it is."""
    problems = []
    if len(password) < PASSWORD_MIN_LENGTH:
        problems.append(f"the password must have at least {PASSWORD_MIN_LENGTH} characters")
    if _character_classes(password) < 2:
        problems.append(
            "the password must mix at least two of: lower case, upper case, digits, other characters"
        )
    folded = password.strip().casefold()
    if folded in {email.casefold(), email.split("@", 1)[0].casefold()}:
        problems.append("the password must not be the email address")
    return problems


class _WithPassword:
    # A validation error must not echo the password back into logs or dead letters, and a dead
    # letter is parked without it.
    model_config = ConfigDict(hide_input_in_errors=True)
    SECRETS = frozenset({"password"})


class _Registration(_WithPassword, Command):
    user_id: EntityId
    email: Email
    name: Name
    password: Password

    @model_validator(mode="after")
    def _password_policy(self) -> Self:
        problems = password_problems(self.password, self.email)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RegisterUser(_Registration, type="identity.register_user"):
    """Register a customer (the only role a registration through the edge can have)."""


class CreateAdmin(_Registration, type="identity.create_admin"):
    """Register an administrator: sent by ``ops.identity_admin`` only, never by the edge."""


class DeactivateUser(Command, type="identity.deactivate_user", version=2):
    """Deactivate a user at an administrator's request; its outcome is ``GetDeactivation``'s answer.

    Refused (the user stays active) when the administrator names themselves, or the user is the
    last active administrator.
    """

    deactivation_id: EntityId = Field(description="Names this request's outcome; the same on a retry.")
    user_id: EntityId
    requested_by: EntityId = Field(description="The administrator asking.")


class RotateSigningKey(Command, type="identity.rotate_signing_key"):
    """Start signing with a new key; the previous ones stay published until their tokens expire."""


class UserRegistered(Event, type="user.registered"):
    user_id: EntityId
    email: EmailStr
    name: str = Field(min_length=1, max_length=200)


class UserDeactivated(Event, type="user.deactivated"):
    user_id: EntityId


class GetUser(Query, type="identity.get_user"):
    """A user by id, or by email address: exactly one of the two."""

    user_id: EntityId | None = None
    email: Email | None = None

    @model_validator(mode="after")
    def _one_key(self) -> Self:
        if (self.user_id is None) == (self.email is None):
            raise ValueError("give exactly one of user_id and email")
        return self


class GetDeactivation(Query, type="identity.get_deactivation"):
    """The outcome of a DeactivateUser: done, a 409 problem saying why it was refused, or 404 (not yet)."""

    deactivation_id: EntityId


class AuthenticateUser(_WithPassword, Query, type="identity.authenticate_user"):
    email: Email
    password: Password


class GetSigningKeys(Query, type="identity.get_signing_keys"):
    """The public keys that verify access tokens, as a JSON Web Key Set (RFC 7517)."""


class UserView(Value):
    """A user as others may see it: never the password hash."""

    user_id: EntityId
    email: str
    name: str
    role: Role
    active: bool
    registered_at: datetime
    deactivated_at: datetime | None = None


class Deactivation(Value):
    """A deactivation done: the user is inactive (since ``deactivated_at``)."""

    deactivation_id: EntityId
    user_id: EntityId
    deactivated_at: datetime


class AccessToken(Value):
    """A short-lived bearer token (a JWT signed with EdDSA, its key named by ``kid``)."""

    access_token: str = Field(repr=False)
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(gt=0, description="seconds")


class Jwk(Value):
    """The public half of an Ed25519 signing key (RFC 8037)."""

    kty: Literal["OKP"] = "OKP"
    crv: Literal["Ed25519"] = "Ed25519"
    x: str
    kid: str
    use: Literal["sig"] = "sig"
    alg: Literal["EdDSA"] = "EdDSA"


class Jwks(Value):
    """The key set; the first key is the one signing new tokens."""

    keys: list[Jwk]
