"""Accounts: register as a customer, log in for an access token, see who you are, identity's keys.

There is no refresh token: an access token lives minutes (``expires_in``), and a client logs in
again when it has expired. Registering and logging in spend the stricter login budget of the
client's address; failed logins are counted per email and address (edge.limits), against
password guessing that could otherwise lock an account's owner out.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError

from brokers.contracts.common import Name
from brokers.contracts.identity import (
    AccessToken,
    AuthenticateUser,
    CreateAdmin,
    Email,
    GetSigningKeys,
    GetUser,
    Jwks,
    Password,
    RegisterUser,
    UserView,
)
from brokers.registration import IdReused, RegistrationRefused, register
from brokers.rpc import QueryFailed
from edge.auth import SignedIn, Unauthenticated
from edge.guard import Write
from edge.limits import RateLimits
from edge.link import RabbitLink
from edge.problems import EMAIL_TAKEN, IDEMPOTENCY_KEY_REUSED, Refused, problem_responses
from edge.routes.shared import Accepted, Body, Link, RequestId, read_problems

router = APIRouter(prefix="/auth", tags=["auth"])
keys_router = APIRouter(tags=["auth"])
# How long a registration waits for identity to show the new user before answering 202 instead.
REGISTRATION_WAIT_S = 5.0


class Registration(Body):
    email: Email = Field(examples=["ada@example.com"])
    name: Name = Field(examples=["Ada Lovelace"])
    password: Password = Field(
        description="At least 12 characters mixing two kinds (lower, upper, digits, others); not the email."
    )


class Credentials(Body):
    email: Email = Field(examples=["ada@example.com"])
    password: Password


class RegistrationAccepted(Accepted):
    """Identity has not shown the new account yet: try logging in shortly."""

    user_id: str


def _as_invalid_request(exc: ValidationError) -> RequestValidationError:
    # The contract's checks (the password policy) reported like the body's own; inputs left out.
    return RequestValidationError(
        [{**error, "loc": ("body", *error["loc"]), "input": None} for error in exc.errors()]
    )


@router.post(
    "/register",
    status_code=201,
    response_model=UserView,
    summary="Register as a customer",
    responses={
        202: {"model": RegistrationAccepted, "description": "Registered, not visible yet"},
        **problem_responses(409, 422, 429, 503, 504),
    },
)
async def register_customer(
    request: Request, body: Registration, write: Write, link: Link, response: Response
) -> UserView | JSONResponse:
    await request.app.state.rate_limits.throttle_registration(request)
    try:
        command = RegisterUser(user_id=write.new_entity_id("user"), **body.model_dump())
    except ValidationError as exc:
        raise _as_invalid_request(exc) from exc
    try:
        user = await register(
            command,
            send=lambda c: link.send(c, write.envelope_for(c)),
            ask=lambda q: link.ask(q, UserView, correlation_id=write.correlation_id),
            timeout_s=REGISTRATION_WAIT_S,
            password_is_set=lambda c: _password_is_set(link, c, write.correlation_id),
        )
    except RegistrationRefused as exc:
        raise Refused(409, str(exc), type_=EMAIL_TAKEN, title="The email address is taken") from exc
    except IdReused as exc:
        raise Refused(
            409,
            "this Idempotency-Key already registered another account; use a new key for a new registration",
            type_=IDEMPOTENCY_KEY_REUSED,
            title="The Idempotency-Key was used for another request",
        ) from exc
    if user is None:
        accepted = RegistrationAccepted(
            message_id=write.message_id, correlation_id=write.correlation_id, user_id=command.user_id
        )
        return JSONResponse(accepted.model_dump(), status_code=202)
    response.headers["Location"] = "/auth/me"
    return user


async def _password_is_set(
    link: RabbitLink, command: RegisterUser | CreateAdmin, correlation_id: str
) -> bool:
    """Whether the account has this registration's password (identity checks it as for a login)."""
    try:
        await link.ask(
            AuthenticateUser(email=command.email, password=command.password),
            AccessToken,
            correlation_id=correlation_id,
        )
    except QueryFailed as exc:
        if exc.problem.status == 404:
            return False
        raise
    return True


@router.post(
    "/login",
    summary="Log in: an access token for the Authorization header (Bearer)",
    responses=problem_responses(401, 422, 429, 503, 504),
)
async def login(request: Request, body: Credentials, link: Link, request_id: RequestId) -> AccessToken:
    rate_limits: RateLimits = request.app.state.rate_limits
    await rate_limits.throttle_login(request, body.email)
    query = AuthenticateUser(email=body.email, password=body.password)
    try:
        token = await link.ask(query, AccessToken, correlation_id=request_id)
    except QueryFailed as exc:
        if exc.problem.status == 404:
            await rate_limits.login_failed(request, body.email)
            raise Unauthenticated(exc.problem.detail, invalid_token=False) from exc
        raise
    await rate_limits.login_succeeded(request, body.email)
    return token


@router.get("/me", summary="The signed-in user", responses=read_problems(401, 404))
async def me(principal: SignedIn, link: Link, request_id: RequestId) -> UserView:
    return await link.ask(GetUser(user_id=principal.user_id), UserView, correlation_id=request_id)


@keys_router.get(
    "/.well-known/jwks.json",
    summary="The public keys that verify access tokens (JSON Web Key Set)",
    responses=read_problems(),
)
async def signing_keys(link: Link, request_id: RequestId) -> Jwks:
    return await link.ask(GetSigningKeys(), Jwks, correlation_id=request_id)
