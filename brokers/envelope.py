"""Message base classes and the envelope every message travels in.

The body of an AMQP message is the JSON of one contract model. The envelope (identity, causality,
type and schema version) travels in AMQP properties and headers, so it is visible in the RabbitMQ UI
without decoding bodies.
"""

from __future__ import annotations

import builtins
import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The header a partitioned actor's consistent-hash exchange hashes (brokers.topology).
PARTITION_KEY_HEADER = "partition_key"


class Kind(StrEnum):
    COMMAND = "command"
    EVENT = "event"
    QUERY = "query"


class InvalidMessage(ValueError):
    """A message whose envelope or body does not match its contract."""


class Message(BaseModel):
    """A contract. Subclasses name their wire type: ``class X(Event, type="x.happened")``."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    TYPE: ClassVar[str]
    KIND: ClassVar[Kind]
    VERSION: ClassVar[int] = 1
    # Fields never to be kept anywhere but in flight (a password): a dead letter is parked without them.
    SECRETS: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, type: str | None = None, version: int = 1, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if type is not None:
            if type in REGISTRY:
                raise TypeError(f"message type {type!r} is declared twice")
            cls.TYPE, cls.VERSION = type, version
            REGISTRY[type] = cls

    def partition_key(self) -> str | None:
        """What a partitioned actor serialises this message by (brokers.topology.PARTITIONS); None
        for the conversation (correlation id). A contract about a thing other than its conversation
        (a SKU's stock) names that thing."""
        return None

    def body(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def parse(cls, body: bytes) -> Self:
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            raise InvalidMessage(f"body is not a valid {cls.TYPE}: {_summary(exc)}") from exc


class Command(Message):
    KIND = Kind.COMMAND


class Event(Message):
    KIND = Kind.EVENT


class Query(Message):
    KIND = Kind.QUERY


REGISTRY: dict[str, type[Message]] = {}
REDACTED = "[redacted]"


def without_secrets(message_type: str | None, body: bytes) -> bytes | None:
    """The body with its type's secret fields masked; None when the type has no secrets.

    A body that cannot be read as a JSON object is dropped whole: nothing in it can be kept safely.
    """
    contract = REGISTRY.get(message_type or "")
    if contract is None or not contract.SECRETS:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return b""
    if not isinstance(data, dict):
        return b""
    return json.dumps({k: REDACTED if k in contract.SECRETS else v for k, v in data.items()}).encode()


def _summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]
    )


def new_id() -> str:
    return uuid.uuid4().hex


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    message_id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    correlation_id: str = Field(min_length=1, max_length=128)
    causation_id: str | None = Field(None, max_length=128)
    type: str = Field(min_length=1, max_length=128)
    schema_version: int = Field(1, ge=1)
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # What the message's partition is chosen by, when not its conversation (Message.partition_key).
    partition_key: str | None = Field(None, max_length=128)

    @classmethod
    def first(cls, message: Message, correlation_id: str | None = None) -> Envelope:
        """The envelope of a message that starts a conversation (a request at the edge)."""
        message_id = new_id()
        return cls(
            message_id=message_id,
            correlation_id=correlation_id or message_id,
            type=message.TYPE,
            schema_version=message.VERSION,
            partition_key=message.partition_key(),
        )

    def caused(self, message: Message) -> Envelope:
        """The envelope of a message emitted while handling the one this envelope belongs to."""
        return Envelope(
            correlation_id=self.correlation_id,
            causation_id=self.message_id,
            type=message.TYPE,
            schema_version=message.VERSION,
            partition_key=message.partition_key(),
        )

    def amqp(self) -> dict[str, Any]:
        """Keyword arguments for FastStream's publish."""
        headers = {
            "schema_version": self.schema_version,
            "occurred_at": self.occurred_at.isoformat(),
            # Hashed by a partitioned actor's exchange; every message carries one (brokers.topology).
            PARTITION_KEY_HEADER: self.partition_key or self.correlation_id,
        }
        if self.causation_id:
            headers["causation_id"] = self.causation_id
        return {
            "message_id": self.message_id,
            "correlation_id": self.correlation_id,
            "message_type": self.type,
            "headers": headers,
        }

    @classmethod
    def from_amqp(
        cls, *, message_id: str | None, correlation_id: str | None, type: str | None, headers: dict
    ) -> Envelope:
        key = headers.get(PARTITION_KEY_HEADER)
        try:
            return cls(
                message_id=message_id,
                correlation_id=correlation_id,
                causation_id=headers.get("causation_id"),
                type=type,
                schema_version=headers.get("schema_version"),
                occurred_at=headers.get("occurred_at"),
                # Sent as the correlation id when the contract names no key of its own (see amqp()).
                partition_key=None if key == correlation_id else key,
            )
        except ValidationError as exc:
            raise InvalidMessage(f"envelope is invalid: {_summary(exc)}") from exc

    # builtins.type: inside the class, ``type`` names the envelope's field.
    def expect(self, contract: builtins.type[Message]) -> None:
        """Refuse a message whose schema version this build does not speak."""
        if contract.VERSION != self.schema_version:
            raise InvalidMessage(
                f"{self.type} schema version {self.schema_version} is not supported "
                f"(this build speaks version {contract.VERSION})"
            )
