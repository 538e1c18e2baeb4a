"""Who is asking: bearer tokens issued by the identity actor, verified at the edge.

A token is accepted only if it is an EdDSA JWT signed by a key identity publishes (found by its
``kid``), not expired, and issued by identity for emporium. The algorithm is fixed here, never taken
from the token: ``alg: none``, HS256 signed with the public key, or any other switch is refused.

Identity's public keys are asked for once and kept by key id. A token naming a key not seen yet
makes the edge ask again (a rotation), but at most once per ``KEYSET_REFRESH_S``, so made-up key
ids cannot turn into a flood of queries. The set is also asked for again once it is
``KEYSET_MAX_AGE_S`` old, so a key identity stopped publishing stops being trusted here too.

Any token PyJWT finds invalid, whatever the part (a header with a ``kid`` that is not a string, a
``crit`` member, a role that is a list), is a 401 saying why, never a 500. A token living longer
than ``TOKEN_MAX_LIFETIME_S`` is refused although signed: identity issues none such.

Tokens are short-lived and there is no refresh token: a client logs in again when its token expires.
A verified token is refused too when its user is deactivated or unknown to identity (edge.subjects):
a deactivation ends its user's tokens within moments.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated, Any, TypeGuard, get_args

import jwt
import structlog
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter, ValidationError

from brokers.contracts.common import EntityId
from brokers.contracts.identity import (
    TOKEN_ALGORITHM,
    TOKEN_AUDIENCE,
    TOKEN_ISSUER,
    TOKEN_MAX_LIFETIME_S,
    GetSigningKeys,
    Jwks,
    Role,
)
from brokers.rpc import BrokerUnavailable, QueryTimeout

log = structlog.get_logger()

# The shortest pause between two fetches of the key set caused by unknown key ids.
KEYSET_REFRESH_S = 10.0
# The longest the edge trusts the key set it has without asking again.
KEYSET_MAX_AGE_S = 300.0
# Clocks of the edge and identity may disagree a little.
CLOCK_LEEWAY_S = 5
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp"]
_ROLES = frozenset(get_args(Role))
_USER_ID: TypeAdapter[str] = TypeAdapter(EntityId)


def _is_role(value: object) -> TypeGuard[Role]:
    return isinstance(value, str) and value in _ROLES


_bearer = HTTPBearer(
    scheme_name="AccessToken",
    bearerFormat="JWT",
    description="An access token from `POST /auth/login` (EdDSA-signed JWT, valid for minutes).",
    auto_error=False,
)


@dataclass(frozen=True)
class Principal:
    """The verified caller of a request: the token's subject and role."""

    user_id: str
    role: Role


class Unauthenticated(HTTPException):
    """401 with the RFC 6750 challenge, so clients know a (new) bearer token is what is missing."""

    def __init__(self, detail: str, *, invalid_token: bool = True) -> None:
        challenge = 'Bearer realm="emporium"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        super().__init__(401, detail, headers={"WWW-Authenticate": challenge})


class KeysUnavailable(BrokerUnavailable):
    """Identity did not tell the edge its keys: no token can be verified just now (503)."""


class KeySet:
    """Identity's public keys by key id, fetched when a token names a key not seen yet."""

    def __init__(self, fetch: Any) -> None:
        self._fetch = fetch  # an awaitable callable answering the Jwks
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK | None:
        if kid not in self._keys or self._age() >= KEYSET_MAX_AGE_S:
            async with self._lock:
                stale = self._age() >= KEYSET_MAX_AGE_S
                if stale or (kid not in self._keys and self._age() >= KEYSET_REFRESH_S):
                    await self._refresh(keep_on_failure=kid in self._keys)
        return self._keys.get(kid)

    def _age(self) -> float:
        return time.monotonic() - self._fetched_at

    async def _refresh(self, *, keep_on_failure: bool) -> None:
        try:
            jwks: Jwks = await self._fetch()
        except (QueryTimeout, BrokerUnavailable) as exc:
            if keep_on_failure:
                # Identity is away: the keys known stay trusted, asked for again after a pause.
                log.warning("edge.keyset_refresh_failed", error=str(exc) or type(exc).__name__)
                self._fetched_at = time.monotonic() - KEYSET_MAX_AGE_S + KEYSET_REFRESH_S
                return
            raise KeysUnavailable(
                "the edge cannot verify access tokens now (identity did not give its keys); retry shortly"
            ) from exc
        self._fetched_at = time.monotonic()
        self._keys = {key.kid: jwt.PyJWK(key.model_dump(), algorithm=TOKEN_ALGORITHM) for key in jwks.keys}


def keyset_of_link(link: Any) -> KeySet:
    """The key set of an edge, asking identity over the edge's link."""
    return KeySet(lambda: link.ask(GetSigningKeys(), Jwks, correlation_id="signing-keys"))


async def verify(token: str, keys: KeySet) -> Principal:
    """The principal a token names, or Unauthenticated saying what is wrong with it."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as exc:
        raise Unauthenticated("the access token is not a JWT") from exc
    except jwt.InvalidTokenError as exc:  # a header PyJWT refuses: a kid not a string, a crit member
        raise Unauthenticated(f"the access token's header is not valid: {_reason(exc)}") from exc
    if header.get("alg") != TOKEN_ALGORITHM:
        raise Unauthenticated(f"the access token must be signed with {TOKEN_ALGORITHM}")
    kid = header.get("kid")
    key = await keys.key(kid) if isinstance(kid, str) else None
    if key is None:
        raise Unauthenticated("the access token is signed by a key identity does not publish")
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=[TOKEN_ALGORITHM],
            audience=TOKEN_AUDIENCE,
            issuer=TOKEN_ISSUER,
            leeway=CLOCK_LEEWAY_S,
            options={"require": _REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("the access token has expired: log in again") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"the access token is not valid: {_reason(exc)}") from exc
    if _lifetime_s(claims) > TOKEN_MAX_LIFETIME_S:
        # Identity issues none such: a token meant to outlive a deactivation or a key's rotation.
        raise Unauthenticated(f"the access token lives longer than {TOKEN_MAX_LIFETIME_S} s: log in again")
    return _principal(claims)


def _lifetime_s(claims: dict[str, Any]) -> float:
    """From issue to expiry; infinite unless both are integers, as identity writes them."""
    issued, expires = claims["iat"], claims["exp"]
    if type(issued) is not int or type(expires) is not int:
        return float("inf")
    return expires - issued


def _reason(exc: jwt.InvalidTokenError) -> str:
    if isinstance(exc, jwt.InvalidSignatureError):
        return "its signature does not verify"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "it is not meant for emporium"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "it was not issued by emporium's identity service"
    return str(exc) or type(exc).__name__


def _principal(claims: dict[str, Any]) -> Principal:
    role = claims.get("role")
    try:
        user_id = _USER_ID.validate_python(claims["sub"])
    except ValidationError as exc:
        raise Unauthenticated("the access token names no valid user") from exc
    if not _is_role(role):
        raise Unauthenticated("the access token names no valid role")
    return Principal(user_id=user_id, role=role)


async def optional_principal(request: Request) -> Principal | None:
    """The caller named by a valid bearer token, or None without one (an invalid one is refused 401).

    Verified once per request (FastAPI caches a dependency within a request). Public routes use it
    for their rate limit, so it reads the header itself: through ``Security`` they would be
    documented as needing a token.
    """
    authorization = request.headers.get("authorization")
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be: Bearer <access token>")
    try:
        principal = await verify(token.strip(), request.app.state.keys)
        await request.app.state.subjects.require(principal)
    except Unauthenticated:
        # A refused token spends its client address's budget (429 once spent): forging is not free.
        await request.app.state.rate_limits.spend_caller(request, None)
        raise
    return principal


async def signed_in(
    principal: Annotated[Principal | None, Depends(optional_principal)],
    _documented: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> Principal:
    """Any signed-in user (401 without a token)."""
    if principal is None:
        raise Unauthenticated("this route needs an access token: POST /auth/login", invalid_token=False)
    return principal


async def admin(principal: Annotated[Principal, Depends(signed_in)]) -> Principal:
    """An administrator (403 for any other signed-in user)."""
    if principal.role != "admin":
        raise HTTPException(403, "this route is for administrators")
    return principal


async def signed_in_user_id(principal: Annotated[Principal, Depends(signed_in)]) -> str:
    return principal.user_id


SignedIn = Annotated[Principal, Depends(signed_in)]
Admin = Annotated[Principal, Depends(admin)]
# The signed-in user's id: what a customer's own orders are filed under.
CustomerId = Annotated[str, Depends(signed_in_user_id)]
