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
E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Timer:
    """A delay an actor sends itself commands after (an order's deadline, a carrier's step),
    declared once on the actor by name: its delay queue is declared from it, and handlers schedule
    by it."""

    name: str
    delay_ms: Callable[[Settings], int]


@dataclass(frozen=True)
class Staged:
    """A message a handler sent, with its envelope and its outbox entry."""

    message: Message
    envelope: Envelope
    entry: dict[str, Any]


class Asking(Generic[S]):
    """What a handler's outside step has to work with: the store, reading what is committed (no
    transaction is open yet), the message's envelope, and whether a failure now would be retried."""

    def __init__(self, store: S, envelope: Envelope, settings: Settings, *, retries_left: bool) -> None:
        self.store, self.envelope, self.settings, self.retries_left = store, envelope, settings, retries_left


class Work(Generic[S]):
    """The staged effects of one message: what its handler reads and changes through the store
    (bound to the runtime's transaction) and the messages it sends, staged here in the order it sent
    them. The runtime writes the staged messages to the outbox in the same transaction and publishes
    them once it has committed; the handler never commits or publishes anything itself.
    """

    def __init__(
        self,
        store: S,
        envelope: Envelope,
        topology: ActorTopology,
        settings: Settings,
        *,
        attempt: int = 1,
        asked: Any = None,
    ) -> None:
        self.store = store
        self.envelope = envelope
        # What the handler's outside step learnt before the transaction (see Actor.handles).
        self.asked = asked
        # Which handling of this message this is (1: the first; more: a retry after a transient failure).
        self.attempt = attempt
        self.settings = settings
        self._topology = topology
        # The messages sent (events emitted, commands scheduled), in the order they were sent.
        self.staged: list[Staged] = []

    @property
    def retries_left(self) -> bool:
        """Whether a transient failure now would be retried (else the message is dead-lettered): on
        its last try a handler may settle for a definite outcome instead of failing again."""
        return self._topology.retry_queue(self.attempt) is not None

    @property
    def outbox(self) -> list[dict[str, Any]]:
        return [staged.entry for staged in self.staged]

    @property
    def emitted(self) -> list[tuple[Event, Envelope]]:
        """The events staged, with their envelopes (for the actor's observers, after commit)."""
        return [(s.message, s.envelope) for s in self.staged if isinstance(s.message, Event)]

    def emit(self, event: Event) -> None:
        """Publish an event once this message's transaction commits."""
        self._stage(event)

    def schedule(self, command: Command, timer: Timer) -> None:
        """Send a command to this actor itself once one of its timers has run out."""
        self._stage(command, routing_key=self._topology.delay_queue(timer.delay_ms(self.settings)))

    def _stage(self, message: Message, *, routing_key: str | None = None) -> None:
        envelope = self.envelope.caused(message)
        self.staged.append(
            Staged(message, envelope, outbox_entry(message, envelope, routing_key=routing_key))
        )


Handler = Callable[[Any, Work[Any]], Awaitable[None]]
Ask = Callable[[Any, Asking[Any]], Awaitable[Any]]
Answer = Callable[[Any, Any], Awaitable[BaseModel | list[BaseModel] | dict[str, Any]]]
# Sees an event the actor emitted, its envelope, and the actor's store (reading outside any transaction).
Observer = Callable[[Any, Envelope, Any], Awaitable[None]]


@dataclass
class Actor(Generic[S]):
    name: str
    store: type[S]
    # The timers the actor schedules commands to itself with.
    timers: tuple[Timer, ...] = ()
    # Group commit (actors.runtime.batches): batches applied side by side in one process (a
    # conversation always in the same lane), and this actor's batch size (default EMPORIUM_BATCH_SIZE);
    # either may depend on the settings.
    lanes: int | Callable[[Settings], int] = 1
    batch_size: Callable[[Settings], int] | None = None
    handlers: dict[str, tuple[type[Message], Handler]] = field(default_factory=dict)
    asks: dict[str, Ask] = field(default_factory=dict)
    answers: dict[str, tuple[type[Query], Answer]] = field(default_factory=dict)
    observers: dict[str, list[Observer]] = field(default_factory=dict)

    def batching(self, settings: Settings) -> tuple[int, int]:
        """How many lanes the actor's batches run in, and how many messages a batch takes at most."""
        lanes = self.lanes(settings) if callable(self.lanes) else self.lanes
        return lanes, self.batch_size(settings) if self.batch_size else settings.emporium_batch_size

    def handles(
        self, message: type[M], *, asks: Callable[[M, Asking[S]], Awaitable[Any]] | None = None
    ) -> Callable[[Callable[[M, Work[S]], Awaitable[None]]], Any]:
        """Register the handler of a command or event (one per message type).

        One process applies an actor's messages one batch at a time, each batch in delivery order
        (see ``actors.runtime.batches``): handlers never run beside each other there.

        ``asks`` is a step that runs before the transaction, for what must not wait inside one (a
        call to another system): its answer is the handler's ``work.asked``. It must be safe to run
        again (an idempotency key), since a message may be handled more than once; a handler that
        finds the committed state moved past what was asked raises ConcurrentUpdate, to be asked again.
        """
        if message.KIND is Kind.QUERY:
            raise TypeError(f"{message.TYPE} is a query: register it with answers()")

        def register(handler: Handler) -> Handler:
            if message.TYPE in self.handlers:
                raise TypeError(f"{self.name} already handles {message.TYPE}")
            self.handlers[message.TYPE] = (message, handler)
            if asks is not None:
                self.asks[message.TYPE] = asks
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

    def observes(self, event: type[E]) -> Callable[[Callable[[E, Envelope, S], Awaitable[None]]], Any]:
        """Register an observer of an event this actor emits (business metrics, say).

        The runtime calls it once per applied message that emitted the event, after the handler's
        transaction committed: never for a duplicate, nor for an attempt that was rolled back.
        """

        def register(observer: Observer) -> Observer:
            self.observers.setdefault(event.TYPE, []).append(observer)
            return observer

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
