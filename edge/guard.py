"""The message identity of writes: idempotency keys and the ids they give a write's command."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from brokers.envelope import Command, Envelope, new_id
from brokers.settings import Settings
from edge.observe import request_id_of

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_CHARS = r"^[A-Za-z0-9._~:+/=-]+$"
# Fixed forever: changing it would give a retried request a new message id.
_IDEMPOTENCY_NAMESPACE = uuid.UUID("5b0d7c64-3f0e-4f4e-9a51-6a1f7d0c2e19")


async def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def idempotent_id(scope: str, key: str) -> str:
    """The same id for the same scope and key, so a retried request repeats the same message."""
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{scope}\n{key}").hex


@dataclass(frozen=True)
class WriteIdentity:
    """The ids a write request gives its command: deterministic when the client sent an Idempotency-Key."""

    message_id: str
    correlation_id: str
    idempotent: bool = False

    def envelope_for(self, command: Command) -> Envelope:
        """The envelope of the write's command: its message id, correlated with the request."""
        return Envelope.first(command, self.correlation_id).model_copy(update={"message_id": self.message_id})

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


async def write_identity(
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


async def required_idempotency_key(
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
