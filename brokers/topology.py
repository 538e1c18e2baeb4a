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

import structlog
from aio_pika.exceptions import ChannelNotFoundEntity
from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas.queue import QuorumQueueArgs

from brokers.envelope import PARTITION_KEY_HEADER, Kind, Message

log = structlog.get_logger()

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


# Actors whose work is split into partitions by key (Message.partition_key, in the header
# PARTITION_KEY_HEADER): the messages about one key (an inventory SKU) queue in one partition queue,
# which one consumer at a time takes (single active consumer) across every replica, so replicas
# never fight over that key's documents. Part of the topology, not a setting: a different count
# sends keys to other partitions (drain the actor's queues before changing it).
PARTITIONS: dict[str, int] = {"inventory": 4}


def partition_queue_name(actor: str, partition: int) -> str:
    return f"{actor}.partition.{partition}"


def partitions_exchange_name(actor: str) -> str:
    return f"{actor}.partitions"


def replicas_queue_name(actor: str) -> str:
    return f"{actor}.replicas"


def work_queue_names(actor: str) -> tuple[str, ...]:
    """The queues an actor's commands and events wait in: its partitions, or its one work queue."""
    count = PARTITIONS.get(actor, 0)
    return tuple(partition_queue_name(actor, n) for n in range(count)) if count else (actor,)


@dataclass(frozen=True)
class ExchangeSpec:
    """An exchange an actor declares for itself, bound to other exchanges (exchange to exchange)."""

    name: str
    type: ExchangeType
    arguments: dict[str, Any]
    # (source exchange name, routing key) pairs
    bindings: tuple[tuple[str, str], ...] = ()

    def rabbit_exchange(self, *, declare: bool = True) -> RabbitExchange:
        return RabbitExchange(
            self.name, type=self.type, durable=True, arguments=self.arguments or None, declare=declare
        )


@dataclass(frozen=True)
class ActorTopology:
    actor: str
    # Where the actor's work is addressed: its work queue, or the exchange spreading it over partitions.
    work_address: str
    work: tuple[QueueSpec, ...]
    delays: tuple[QueueSpec, ...]
    queries: QueueSpec
    dead_letters: tuple[QueueSpec, ...]
    retry_delays_ms: tuple[int, ...] = field(default=())
    exchanges: tuple[ExchangeSpec, ...] = field(default=())
    # Partitioned: the queue every replica consumes (and nothing is sent to), whose consumer count
    # tells each replica how many there are (actors.runtime.partitions).
    replicas: QueueSpec | None = None

    @property
    def queues(self) -> tuple[QueueSpec, ...]:
        replicas = (self.replicas,) if self.replicas else ()
        return (*self.work, *self.delays, self.queries, *replicas, *self.dead_letters)

    @property
    def routed_to(self) -> tuple[QueueSpec | ExchangeSpec, ...]:
        """Everything of the actor's that is bound to an exchange: its own exchanges, its queues."""
        return (*self.exchanges, *self.queues)

    @property
    def entry(self) -> QueueSpec | ExchangeSpec:
        """Where the commands and events it takes arrive first: its partitions exchange or work queue."""
        return self.exchanges[0] if self.exchanges else self.work[0]

    @property
    def dlq(self) -> str:
        return dlq_name(self.actor)

    def retry_queue(self, attempt: int) -> str | None:
        """The delay queue for the given failed attempt (1-based), or None when retries are spent."""
        if attempt > len(self.retry_delays_ms):
            return None
        return delay_queue_name(self.work_address, self.retry_delays_ms[attempt - 1])

    def delay_queue(self, delay_ms: int) -> str:
        name = delay_queue_name(self.work_address, delay_ms)
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
    """An actor's queues. Unpartitioned, its work queue is named after it. Partitioned (PARTITIONS),
    its commands and events go to ``<actor>.partitions``, a consistent-hash exchange that sends each
    to one of ``<actor>.partition.<n>`` by its partition key; its delay queues (named after that
    exchange) put what waited back through it, so a retry or timer returns to its key's partition."""
    partitions = PARTITIONS.get(actor, 0)
    address = partitions_exchange_name(actor) if partitions else actor

    def dead_lettering_into_dlq() -> dict[str, Any]:
        return _quorum(
            **{
                "x-dead-letter-exchange": DEAD_LETTERS.name,
                "x-dead-letter-routing-key": actor,
                "x-delivery-limit": delivery_limit,
            }
        )

    def movable(name: str) -> tuple[str, str]:
        return (MOVES.name, name)

    # What the actor takes: its types from the commands and events exchanges, and moves back to it.
    takes = tuple(sorted({*((exchange_for(m).name, m.TYPE) for m in consumes), movable(address)}))
    exchanges: tuple[ExchangeSpec, ...] = ()
    replicas = None
    if partitions:
        # Bound to nothing: only a stray publish on the default exchange reaches it, and is dropped.
        replicas = QueueSpec(
            replicas_queue_name(actor),
            {"x-queue-type": "quorum", "x-max-length": 0, "x-overflow": "drop-head"},
        )
        exchanges = (
            ExchangeSpec(
                address, ExchangeType.X_CONSISTENT_HASH, {"hash-header": PARTITION_KEY_HEADER}, takes
            ),
        )
        work = tuple(
            QueueSpec(
                partition_queue_name(actor, n),
                {**dead_lettering_into_dlq(), "x-single-active-consumer": True},
                # The binding's key is the partition's weight: every partition takes an equal share.
                ((address, "1"), movable(partition_queue_name(actor, n))),
            )
            for n in range(partitions)
        )
    else:
        work = (QueueSpec(actor, dead_lettering_into_dlq(), takes),)
    delays = tuple(
        QueueSpec(
            delay_queue_name(address, delay),
            _quorum(
                **{
                    "x-message-ttl": delay,
                    # Partitioned: back through the exchange (a queue, "" routes by its name).
                    "x-dead-letter-exchange": address if partitions else "",
                    "x-dead-letter-routing-key": address,
                }
            ),
            (movable(delay_queue_name(address, delay)),),
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
            dlq_name(actor),
            {"x-queue-type": "quorum"},
            ((DEAD_LETTERS.name, actor), movable(dlq_name(actor))),
        ),
    )
    return ActorTopology(
        actor, address, work, delays, queries, dead_letters, tuple(retry_delays_ms), exchanges, replicas
    )


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
    """Declare an actor's exchanges, queues and bindings; idempotent, safe to run at every start.

    ``create=False`` only checks that the exchanges and queues exist (see ``declare_exchanges``).
    Where it may declare, it also removes the queues earlier versions declared (``obsolete_queues``).
    """
    await declare_exchanges(broker, create=create)
    for exchange in topology.exchanges:
        if not create:
            await _check(
                broker.declare_exchange(exchange.rabbit_exchange(declare=False)),
                f"exchange {exchange.name!r}",
            )
            continue
        declared = await broker.declare_exchange(exchange.rabbit_exchange())
        for source, routing_key in exchange.bindings:
            await declared.bind(source, routing_key=routing_key)
    for spec in topology.queues:
        await _declare_queue(broker, spec, create=create)
    if create:
        await _remove_obsolete(broker, topology)


def obsolete_queues(actor: str) -> tuple[str, ...]:
    """Queues of earlier versions of this topology: the query queue that dead-lettered what expired
    in it (logins, passwords included) and its dead-letter queue. Still bound, the first would keep
    taking a copy of every query, and the second keep what it parked."""
    return (f"{actor}.queries", dlq_name(f"{actor}.queries"))


def unpartitioned_queues(topology: ActorTopology) -> tuple[str, ...]:
    """A partitioned actor's queues from before it was partitioned: its delay queues, then its one
    work queue (what waits in the first is dead-lettered into the second)."""
    if not topology.exchanges:
        return ()
    delays = (delay_queue_name(topology.actor, spec.arguments["x-message-ttl"]) for spec in topology.delays)
    return (*delays, topology.actor)


async def _remove_obsolete(broker: RabbitBroker, topology: ActorTopology) -> None:
    connection = await broker.connect()  # the broker's open connection
    async with connection.channel(publisher_confirms=False) as channel:
        for name in obsolete_queues(topology.actor):
            await channel.queue_delete(name)  # deleting a queue that is not there is not an error
    kept = False
    for name in unpartitioned_queues(topology):
        # Not taking new work any more; removed once empty. One still holding messages is kept
        # and named in the log (nothing takes it: move them with a shovel), and so is the work
        # queue while a delay queue still puts messages back into it.
        async with connection.channel(publisher_confirms=False) as channel:
            try:
                queue = await channel.get_queue(name, ensure=True)
            except ChannelNotFoundEntity:
                continue
            if name == topology.actor:
                for exchange, routing_key in topology.exchanges[0].bindings:
                    await queue.unbind(exchange, routing_key=routing_key)
                await queue.unbind(MOVES.name, routing_key=name)
            depth = queue.declaration_result.message_count
            if depth or (kept and name == topology.actor):
                log.warning("topology.unpartitioned_queue_kept", queue=name, messages=depth)
                kept = True
                continue
            await channel.queue_delete(name, if_empty=True)
