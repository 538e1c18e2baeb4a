"""The RabbitMQ topology: exchanges, each actor's queues, retry tiers and dead-letter queues.

Commands and queries go to direct exchanges, routed by message type to the one actor that owns them;
events go to a topic exchange, routed by type to every actor that subscribed. Each actor has:

- ``<actor>``: its work queue (commands and events), quorum, dead-lettering at least once into
  ``<actor>.dlq`` when the runtime rejects a message or the delivery limit is hit;
- ``<actor>.delay.<ms>ms``: one queue per delay (the retry delays, and the timers an actor sets
  itself, such as an order's deadline); a message waits out the queue's TTL and is dead-lettered
  back into ``<actor>``;
- ``<actor>.reads``: request/reply queries, kept apart so reads never wait behind work. A query
  is never dead-lettered: one that expired unanswered has had its timeout answer already, and
  queries carry secrets (a login's password) that must not be parked anywhere.

Messages the runtime moves itself (to a delay queue to retry later, to a dead-letter queue, a timer,
a replay back to where it failed) go through the topic exchange ``emporium.moves``, where each of an
actor's queues is bound by its own name. Publishing there, rather than to the default exchange
(which reaches every queue), lets a broker user be allowed to move messages into its own queues only
(RabbitMQ topic permissions on routing keys ``<actor>.*``).

Queue arguments are part of a queue's identity in RabbitMQ (redeclaring with other arguments fails),
so every argument that can vary is in the queue's name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from aio_pika.exceptions import ChannelNotFoundEntity
from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas.queue import QuorumQueueArgs

from brokers.envelope import Kind, Message

COMMANDS = RabbitExchange("emporium.commands", type=ExchangeType.DIRECT, durable=True)
# An event nobody subscribes to (yet) is legitimate, so events are never unroutable: what no queue
# takes goes through the alternate exchange to "unrouted-events", visible and kept for a day.
UNROUTED = RabbitExchange("emporium.unrouted", type=ExchangeType.FANOUT, durable=True)
EVENTS = RabbitExchange(
    "emporium.events", type=ExchangeType.TOPIC, durable=True, arguments={"alternate-exchange": UNROUTED.name}
)
QUERIES = RabbitExchange("emporium.queries", type=ExchangeType.DIRECT, durable=True)
DEAD_LETTERS = RabbitExchange("emporium.dead-letters", type=ExchangeType.DIRECT, durable=True)
MOVES = RabbitExchange("emporium.moves", type=ExchangeType.TOPIC, durable=True)
EXCHANGES = (UNROUTED, COMMANDS, EVENTS, QUERIES, DEAD_LETTERS, MOVES)

_EXCHANGE_OF_KIND = {Kind.COMMAND: COMMANDS, Kind.EVENT: EVENTS, Kind.QUERY: QUERIES}


def exchange_for(message: type[Message] | Message) -> RabbitExchange:
    return _EXCHANGE_OF_KIND[message.KIND]


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]
    # (exchange name, routing key) pairs
    bindings: tuple[tuple[str, str], ...] = ()

    def rabbit_queue(self, *, declare: bool = True) -> RabbitQueue:
        """The queue for FastStream; ``declare=False`` only checks that it exists (a passive
        declaration, which needs no RabbitMQ permission: see ``declare``)."""
        return RabbitQueue(
            self.name,
            queue_type=QueueType.QUORUM,
            durable=True,
            # Quorum arguments by construction (_quorum); x-queue-type goes as queue_type instead.
            arguments=cast(QuorumQueueArgs, {k: v for k, v in self.arguments.items() if k != "x-queue-type"}),
            declare=declare,
        )


def _quorum(**arguments: Any) -> dict[str, Any]:
    # At-least-once dead-lettering keeps a message until the dead-letter queue confirms it; it
    # requires reject-publish overflow.
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        **arguments,
    }


def dlq_name(queue: str) -> str:
    return f"{queue}.dlq"


def delay_queue_name(queue: str, delay_ms: int) -> str:
    return f"{queue}.delay.{delay_ms}ms"


def reads_queue_name(actor: str) -> str:
    return f"{actor}.reads"


@dataclass(frozen=True)
class ActorTopology:
    actor: str
    work: QueueSpec
    delays: tuple[QueueSpec, ...]
    queries: QueueSpec
    dead_letters: tuple[QueueSpec, ...]
    retry_delays_ms: tuple[int, ...] = field(default=())

    @property
    def queues(self) -> tuple[QueueSpec, ...]:
        return (self.work, *self.delays, self.queries, *self.dead_letters)

    def retry_queue(self, attempt: int) -> str | None:
        """The delay queue for the given failed attempt (1-based), or None when retries are spent."""
        if attempt > len(self.retry_delays_ms):
            return None
        return delay_queue_name(self.work.name, self.retry_delays_ms[attempt - 1])

    def delay_queue(self, delay_ms: int) -> str:
        name = delay_queue_name(self.work.name, delay_ms)
        if name not in {spec.name for spec in self.delays}:
            raise ValueError(f"{self.actor} declares no {delay_ms} ms delay; add it to the actor's timers")
        return name


def actor_topology(
    actor: str,
    *,
    consumes: Iterable[type[Message]],
    answers: Iterable[type[Message]],
    retry_delays_ms: tuple[int, ...],
    delivery_limit: int,
    timer_delays_ms: Iterable[int] = (),
) -> ActorTopology:
    work_name = actor

    def dead_lettering_into_dlq(queue: str) -> dict[str, Any]:
        return _quorum(
            **{
                "x-dead-letter-exchange": DEAD_LETTERS.name,
                "x-dead-letter-routing-key": queue,
                "x-delivery-limit": delivery_limit,
            }
        )

    def movable(name: str) -> tuple[str, str]:
        return (MOVES.name, name)

    work = QueueSpec(
        work_name,
        dead_lettering_into_dlq(work_name),
        tuple(sorted({*((exchange_for(m).name, m.TYPE) for m in consumes), movable(work_name)})),
    )
    delays = tuple(
        QueueSpec(
            delay_queue_name(work_name, delay),
            _quorum(
                **{
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": work_name,
                }
            ),
            (movable(delay_queue_name(work_name, delay)),),
        )
        for delay in sorted({*retry_delays_ms, *timer_delays_ms})
    )
    queries = QueueSpec(
        reads_queue_name(actor),
        # No dead-lettering (see the module's docstring); a query crashing its consumer again and
        # again is dropped at the delivery limit.
        {"x-queue-type": "quorum", "x-delivery-limit": delivery_limit},
        tuple(sorted((QUERIES.name, q.TYPE) for q in answers)),
    )
    dead_letters = (
        QueueSpec(
            dlq_name(work_name),
            {"x-queue-type": "quorum"},
            ((DEAD_LETTERS.name, work_name), movable(dlq_name(work_name))),
        ),
    )
    return ActorTopology(actor, work, delays, queries, dead_letters, tuple(retry_delays_ms))


UNROUTED_EVENTS = QueueSpec(
    "unrouted-events",
    {"x-queue-type": "quorum", "x-message-ttl": 86_400_000, "x-max-length": 100_000},
    ((UNROUTED.name, ""),),
)


class TopologyMissing(ConnectionError):
    """A queue or exchange this process only checks for (``create=False``) is not in RabbitMQ.

    A ConnectionError: like an unreachable broker, nothing works until an operator fixes it.
    """


async def _declare_queue(broker: RabbitBroker, spec: QueueSpec, *, create: bool) -> None:
    if not create:
        # Bindings cannot be checked passively over AMQP; they come with the queues from the
        # imported definitions.
        await _check(broker.declare_queue(spec.rabbit_queue(declare=False)), f"queue {spec.name!r}")
        return
    queue = await broker.declare_queue(spec.rabbit_queue())
    for exchange, routing_key in spec.bindings:
        await queue.bind(exchange, routing_key=routing_key)


async def _check(passive_declaration: Awaitable[Any], what: str) -> None:
    try:
        await passive_declaration
    except ChannelNotFoundEntity as exc:
        raise TopologyMissing(
            f"RabbitMQ has no {what} in this vhost, and this process does not declare its topology "
            "(EMPORIUM_DECLARE_TOPOLOGY=false): import ops/rabbitmq/definitions.json first"
        ) from exc


async def declare_exchanges(broker: RabbitBroker, *, create: bool = True) -> None:
    """The exchanges every process publishes to (and the parking queue for unrouted events).

    ``create=False`` (production, see Settings.emporium_declare_topology) only checks that they are
    there: a passive declaration needs no permission, while declaring needs "configure", which
    also allows deleting.
    """
    for exchange in EXCHANGES:
        if create:
            await broker.declare_exchange(exchange)
        else:
            passive = RabbitExchange(exchange.name, type=exchange.type, declare=False)
            await _check(broker.declare_exchange(passive), f"exchange {exchange.name!r}")
    await _declare_queue(broker, UNROUTED_EVENTS, create=create)


async def declare(broker: RabbitBroker, topology: ActorTopology, *, create: bool = True) -> None:
    """Declare an actor's queues and bindings; idempotent, safe to run at every start.

    ``create=False`` only checks that the exchanges and queues exist (see ``declare_exchanges``).
    Where it may declare, it also removes the queues earlier versions declared (``obsolete_queues``).
    """
    await declare_exchanges(broker, create=create)
    for spec in topology.queues:
        await _declare_queue(broker, spec, create=create)
    if create:
        await _remove_obsolete(broker, topology.actor)


def obsolete_queues(actor: str) -> tuple[str, ...]:
    """Queues of earlier versions of this topology: the query queue that dead-lettered what expired
    in it (logins, passwords included) and its dead-letter queue. Still bound, the first would keep
    taking a copy of every query, and the second keep what it parked."""
    return (f"{actor}.queries", dlq_name(f"{actor}.queries"))


async def _remove_obsolete(broker: RabbitBroker, actor: str) -> None:
    connection = await broker.connect()  # the broker's open connection
    async with connection.channel(publisher_confirms=False) as channel:
        for name in obsolete_queues(actor):
            await channel.queue_delete(name)  # deleting a queue that is not there is not an error
