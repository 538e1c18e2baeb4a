"""Who is asking, and the message identity of writes: the dev guards and idempotency keys.

Both guards are stand-ins until the identity actor issues real credentials (issue 4): operators
send one shared token, from ``EMPORIUM_DEV_ADMIN_TOKEN`` (the settings refuse to leave it at its
default in production); customers name themselves in ``X-Dev-Customer-Id``, which a JWT replaces.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import TypeAdapter, ValidationError

from brokers.contracts.common import EntityId
from brokers.envelope import new_id
from brokers.settings import Settings
from edge.observe import request_id_of

DEV_ADMIN_HEADER = "X-Dev-Admin-Token"
DEV_CUSTOMER_HEADER = "X-Dev-Customer-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_CHARS = r"^[A-Za-z0-9._~:+/=-]+$"
# Fixed forever: changing it would give a retried request a new message id.
_IDEMPOTENCY_NAMESPACE = uuid.UUID("5b0d7c64-3f0e-4f4e-9a51-6a1f7d0c2e19")

_dev_admin_token = APIKeyHeader(
    name=DEV_ADMIN_HEADER,
    scheme_name="DevAdminToken",
    description="Development stand-in for real authentication: the value of EMPORIUM_DEV_ADMIN_TOKEN.",
    auto_error=False,
)
_dev_customer_id = APIKeyHeader(
    name=DEV_CUSTOMER_HEADER,
    scheme_name="DevCustomerId",
    description=(
        "Development stand-in for a signed-in customer: the customer's id (letters, digits, _ and -, "
        "at most 64), trusted as given. Replaced by a JWT issued by the identity actor (issue 4)."
    ),
    auto_error=False,
)
_CUSTOMER_ID: TypeAdapter[str] = TypeAdapter(EntityId)


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


async def require_dev_admin(
    request: Request, token: Annotated[str | None, Security(_dev_admin_token)] = None
) -> None:
    """Refuse a write without the dev admin token (401), before its body is validated."""
    expected = settings_of(request).emporium_dev_admin_token
    if token is None:
        raise HTTPException(401, f"this route needs the {DEV_ADMIN_HEADER} header")
    # Constant-time comparison, so response times say nothing about how much of a guess was right.
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(401, f"the {DEV_ADMIN_HEADER} header is not the dev admin token")


async def dev_customer(customer_id: Annotated[str | None, Security(_dev_customer_id)] = None) -> str:
    """The customer making the request (401 without one). A stand-in: a JWT replaces it (issue 4)."""
    if customer_id is None:
        raise HTTPException(401, f"this route needs the {DEV_CUSTOMER_HEADER} header (a customer id)")
    try:
        return _CUSTOMER_ID.validate_python(customer_id)
    except ValidationError as exc:
        raise HTTPException(
            401,
            f"the {DEV_CUSTOMER_HEADER} header is not a customer id (letters, digits, _ and -, at most 64)",
        ) from exc


Customer = Annotated[str, Depends(dev_customer)]


def idempotent_id(scope: str, key: str) -> str:
    """The same id for the same scope and key, so a retried request repeats the same message."""
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{scope}\n{key}").hex


@dataclass(frozen=True)
class WriteIdentity:
    """The ids a write request gives its command: deterministic when the client sent an Idempotency-Key."""

    message_id: str
    correlation_id: str
    idempotent: bool = False

    def new_entity_id(self, kind: str) -> str:
        """An id for something the write creates; the same on every retry of an idempotent request."""
        return idempotent_id(kind, self.message_id) if self.idempotent else new_id()


def _idempotency_key_header(description: str) -> Any:
    return Header(
        alias=IDEMPOTENCY_HEADER,
        min_length=8,
        max_length=128,
        pattern=IDEMPOTENCY_KEY_CHARS,
        description=f"8-128 characters of A-Z a-z 0-9 . _ ~ : + / = -. {description}",
    )


def write_identity(
    request: Request,
    idempotency_key: Annotated[
        str | None,
        _idempotency_key_header(
            "Optional. Retrying a write with the same key (on the same method and path) sends the same "
            "message id, and the actor applies it once. A key names one intended write: reused with "
            "another body, it is still the first write."
        ),
    ] = None,
) -> WriteIdentity:
    correlation_id = request_id_of(request)
    if idempotency_key is None:
        return WriteIdentity(message_id=new_id(), correlation_id=correlation_id)
    scope = f"{request.method} {request.url.path}"
    return WriteIdentity(idempotent_id(scope, idempotency_key), correlation_id, idempotent=True)


Write = Annotated[WriteIdentity, Depends(write_identity)]


def required_idempotency_key(
    key: Annotated[
        str,
        _idempotency_key_header(
            "Required. Retrying with the same key and the same body gives the same answer and does the "
            "write once; the same key with another body is refused (409)."
        ),
    ],
) -> str:
    return key


IdempotencyKey = Annotated[str, Depends(required_idempotency_key)]
