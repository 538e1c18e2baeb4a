"""An actor: a named bounded context, its store, and the messages it handles and answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from actors.runtime.outbox import outbox_entry
from actors.runtime.store import Store
from brokers.envelope import Command, Envelope, Event, InvalidMessage, Kind, Message, Query
from brokers.settings import Settings
from brokers.topology import ActorTopology

S = TypeVar("S", bound=Store)
M = TypeVar("M", bound=Message)
Q = TypeVar("Q", bound=Query)


class UnitOfWork(Generic[S]):
    """What a handler works with: its store (inside the transaction) and the messages it sends.

    Emitted events and scheduled commands are written to the outbox in the same transaction as the
    store's changes and published after commit by the runtime.
    """

    def __init__(self, store: S, envelope: Envelope, topology: ActorTopology, settings: Settings) -> None:
        self.store = store
        self.envelope = envelope
        self.settings = settings
        self._topology = topology
        self.outbox: list[dict[str, Any]] = []

    def emit(self, event: Event) -> None:
        """Publish an event once this handler's transaction commits."""
        self.outbox.append(outbox_entry(event, self.envelope.caused(event)))

    def schedule(self, command: Command, *, delay_ms: int) -> None:
        """Send a command to this actor itself after a delay (a timer, such as a deadline)."""
        self.outbox.append(
            outbox_entry(command, self.envelope.caused(command), routing_key=self._topology.delay_queue(delay_ms))
        )


Handler = Callable[[Any, UnitOfWork[Any]], Awaitable[None]]
Answer = Callable[[Any, Any], Awaitable[BaseModel | list[BaseModel] | dict[str, Any]]]


@dataclass
class Actor(Generic[S]):
    name: str
    store: type[S]
    # The delays (ms) of the timers the actor schedules, read from the settings.
    timers: Callable[[Settings], tuple[int, ...]] = lambda settings: ()
    handlers: dict[str, tuple[type[Message], Handler]] = field(default_factory=dict)
    answers: dict[str, tuple[type[Query], Answer]] = field(default_factory=dict)

    def handles(self, message: type[M]) -> Callable[[Callable[[M, UnitOfWork[S]], Awaitable[None]]], Any]:
        """Register the handler of a command or event (one per message type)."""
        if message.KIND is Kind.QUERY:
            raise TypeError(f"{message.TYPE} is a query: register it with answers()")

        def register(handler: Handler) -> Handler:
            if message.TYPE in self.handlers:
                raise TypeError(f"{self.name} already handles {message.TYPE}")
            self.handlers[message.TYPE] = (message, handler)
            return handler

        return register

    def answers_to(self, query: type[Q]) -> Callable[[Callable[[Q, S], Awaitable[Any]]], Any]:
        """Register the handler of a query; it reads through the store and returns a reply model."""

        def register(handler: Answer) -> Answer:
            if query.TYPE in self.answers:
                raise TypeError(f"{self.name} already answers {query.TYPE}")
            self.answers[query.TYPE] = (query, handler)
            return handler

        return register

    def handler_for(self, envelope: Envelope) -> tuple[type[Message], Handler]:
        if envelope.type not in self.handlers:
            raise InvalidMessage(f"{self.name} does not handle {envelope.type!r}")
        contract, handler = self.handlers[envelope.type]
        envelope.expect(contract)
        return contract, handler

    def answer_for(self, envelope: Envelope) -> tuple[type[Query], Answer]:
        if envelope.type not in self.answers:
            raise InvalidMessage(f"{self.name} does not answer {envelope.type!r}")
        contract, answer = self.answers[envelope.type]
        envelope.expect(contract)
        return contract, answer
