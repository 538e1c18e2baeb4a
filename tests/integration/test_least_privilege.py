"""The generated RabbitMQ definitions on the real RabbitMQ: each actor and the edge can do their job
with their own user, and are refused what they do not need.

Users and permissions are global in RabbitMQ, so the definitions are generated for the test's own
vhost with a user prefix of its own, and those users are deleted at the end.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel
from aiormq.exceptions import ChannelAccessRefused

from actors.registry import ACTORS
from actors.runtime.host import ActorHost, topology_of
from actors.runtime.outbox import outbox_entries
from brokers.contracts.catalog import CreateProduct, GetProduct, ProductView, UpdateProduct
from brokers.deadletters import replay as replay_message
from brokers.dlq import peek, purge
from brokers.envelope import Command, Envelope
from brokers.factory import make_broker
from brokers.management import vhost_of
from brokers.settings import Settings
from brokers.topology import COMMANDS, EVENTS, MOVES, TopologyMissing, declare
from edge.events import sse_queue_name
from edge.link import RabbitLink
from ops.production import EDGE, definitions
from tests.helpers import eventually
from tests.integration.support import running

Principals = dict[str, Settings]  # actor name or "edge" -> settings carrying that user's credentials


def _as_user(settings: Settings, user: str, password: str) -> Settings:
    parts = urlsplit(settings.rabbitmq_url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port or 5672}"
    url = urlunsplit(parts._replace(netloc=netloc))
    return settings.model_copy(update={"rabbitmq_url": url, "emporium_declare_topology": False})


@pytest.fixture
def principals(management: httpx.Client, settings: Settings) -> Iterator[Principals]:
    """The definitions imported into the test's vhost, each user with a fresh password."""
    prefix = f"lp-{uuid.uuid4().hex[:8]}-"
    imported = definitions(settings, vhost=vhost_of(settings.rabbitmq_url), user_prefix=prefix)
    users = [user["name"] for user in imported["users"]]
    try:
        management.post("/api/definitions", json=imported).raise_for_status()
        found: Principals = {}
        for user in users:
            password = secrets.token_urlsafe(16)
            management.put(
                f"/api/users/{quote(user, safe='')}", json={"password": password, "tags": ""}
            ).raise_for_status()
            found[user.removeprefix(prefix)] = _as_user(settings, user, password)
        yield found
    finally:
        for user in users:
            management.delete(f"/api/users/{quote(user, safe='')}")


def _lamp() -> CreateProduct:
    return CreateProduct(product_id="p-1", sku="LAMP-1", name="Lamp", category="home", price_cents=1200)


async def _send(link: RabbitLink, command: Command) -> Envelope:
    envelope = Envelope.first(command)
    await link.send(command, envelope)
    return envelope


async def test_the_catalog_and_the_edge_do_their_jobs_with_their_own_users(
    principals: Principals, settings: Settings, start_host, mongo
) -> None:
    # configure on nothing: the catalog only checks (passively) that its topology is there.
    await start_host(
        "catalog", **principals["catalog"].model_dump(include={"rabbitmq_url", "emporium_declare_topology"})
    )
    edge = principals[EDGE]
    link = RabbitLink(edge)
    await link.open()
    try:
        # Commands, queries over direct reply-to, and the saga subscription (its own SSE queue).
        assert await link.ready()
        await _send(link, _lamp())
        view = await eventually(
            lambda: link.ask(GetProduct(product_id="p-1"), ProductView, correlation_id="c-1")
        )
        assert view.sku == "LAMP-1"
        # product.created was published under the catalog's topic permission: nothing is left unsent.
        outbox = mongo[settings.database_name("catalog")]["outbox"]
        await eventually(lambda: outbox.count_documents({"sent_at": None}), until=lambda unsent: unsent == 0)
        assert len(await outbox_entries(outbox.database)) == 1

        # Moves into the catalog's own queues: a rule violation straight to catalog.dlq; an update of
        # a product that does not exist through every delay queue first, then catalog.dlq.
        duplicate = await _send(link, _lamp())
        await _send(link, UpdateProduct(product_id="p-404", name="Ghost"))
        letters = await eventually(
            lambda: peek(edge, "catalog.dlq", 10), until=lambda found: len(found) == 2, what="2 dead letters"
        )
        assert {(letter.type, letter.reason, letter.attempts) for letter in letters} == {
            ("catalog.create_product", "rule-violation", 1),
            ("catalog.update_product", "retries-exhausted", 4),
        }
        await _edge_replays(edge, duplicate.message_id)
        assert await purge(edge, "catalog.dlq") == 2
    finally:
        await link.close()


async def _edge_replays(edge: Settings, message_id: str) -> None:
    """The edge sends a dead letter back to the catalog's work queue; it fails there again."""
    broker = make_broker(edge, app_name="tests", role="edge replay")
    await broker.connect()
    connection = await aio_pika.connect(edge.rabbitmq_url)
    try:
        channel = await connection.channel()
        dlq = await channel.get_queue("catalog.dlq", ensure=False)
        while (message := await dlq.get(no_ack=False, timeout=5)).message_id != message_id:
            await message.nack(requeue=True)
        first_death = message.headers["x-dead-lettered-at"]
        await replay_message(broker, message, "catalog")
        await message.ack()
    finally:
        await connection.close()
        await broker.stop()

    async def died_again() -> bool:
        letters = await peek(edge, "catalog.dlq", 10)
        return any(l.message_id == message_id and l.dead_lettered_at != first_death for l in letters)

    await eventually(died_again, what="the replayed dead letter back in catalog.dlq")


# --- what each user is refused ---------------------------------------------------------------------

Attempt = Callable[[AbstractChannel], Awaitable[object]]


async def _ignore(_message: object) -> None:
    """A consumer that does nothing (it is only there to be allowed or refused)."""


def _consume(queue: str) -> Attempt:
    async def attempt(channel: AbstractChannel) -> object:
        return await (await channel.get_queue(queue, ensure=False)).consume(_ignore)

    return attempt


def _publish(exchange: str, routing_key: str) -> Attempt:
    async def attempt(channel: AbstractChannel) -> object:
        target = (
            channel.default_exchange if exchange == "" else await channel.get_exchange(exchange, ensure=False)
        )
        return await target.publish(aio_pika.Message(b"{}"), routing_key=routing_key, mandatory=False)

    return attempt


def _bind_own_queue(routing_key: str) -> Attempt:
    async def attempt(channel: AbstractChannel) -> object:
        # Named as aio-pika names the edge's SSE queue (on a robust channel; this one is not).
        name = sse_queue_name()
        queue = await channel.declare_queue(
            name, exclusive=True, auto_delete=True, arguments={"x-queue-type": "classic"}
        )
        return await queue.bind(EVENTS.name, routing_key=routing_key)

    return attempt


def _declare_exchange(name: str) -> Attempt:
    return lambda channel: channel.declare_exchange(name, type="topic", durable=True)


def _delete_exchange(name: str) -> Attempt:
    return lambda channel: channel.exchange_delete(name)


def _delete_queue(name: str) -> Attempt:
    return lambda channel: channel.queue_delete(name)


REFUSED: dict[tuple[str, str], Attempt] = {
    ("catalog", "consume inventory's work queue"): _consume("inventory"),
    ("catalog", "consume its own dead-letter queue (the edge's job)"): _consume("catalog.dlq"),
    ("catalog", "move a message into inventory's delay queue"): _publish(
        MOVES.name, "inventory.partitions.delay.200ms"
    ),
    ("catalog", "move a message into its own work queue (a replay)"): _publish(MOVES.name, "catalog"),
    ("catalog", "publish inventory's event"): _publish(EVENTS.name, "stock.reserved"),
    ("catalog", "send a command"): _publish(COMMANDS.name, "catalog.create_product"),
    ("catalog", "declare an exchange"): _declare_exchange("emporium.sneaky"),
    ("catalog", "delete an exchange"): _delete_exchange(EVENTS.name),
    ("catalog", "delete its own work queue"): _delete_queue("catalog"),
    ("catalog", "declare a queue of its own"): lambda channel: channel.declare_queue("catalog.sneaky"),
    ("edge", "consume an actor's work queue"): _consume("catalog"),
    ("edge", "publish an event"): _publish(EVENTS.name, "order.placed"),
    ("edge", "move a message into a delay queue"): _publish(MOVES.name, "catalog.delay.200ms"),
    ("edge", "publish straight into a queue (default exchange)"): _publish("", "catalog"),
    ("edge", "bind its queue to an event it has no use for"): _bind_own_queue("user.registered"),
    ("edge", "declare a named queue"): lambda channel: channel.declare_queue("edge.sneaky"),
    ("edge", "delete an actor's queue"): _delete_queue("catalog.dlq"),
}

# The same kinds of operation, on what each user does need: the refusals above are not blanket ones.
ALLOWED: dict[tuple[str, str], Attempt] = {
    ("catalog", "consume its own reads queue"): _consume("catalog.reads"),
    ("catalog", "move a message into its own delay queue"): _publish(MOVES.name, "catalog.delay.200ms"),
    ("catalog", "publish its own event"): _publish(EVENTS.name, "product.created"),
    ("catalog", "reply to a query (default exchange)"): _publish("", "amq.rabbitmq.reply-to.none"),
    # The residual of replying over direct reply-to: write on the default exchange reaches any queue.
    ("catalog", "publish straight into another actor's queue"): _publish("", "inventory"),
    ("edge", "consume a dead-letter queue"): _consume("inventory.dlq"),
    ("edge", "replay into a work queue"): _publish(MOVES.name, "catalog"),
    ("edge", "replay into a partitioned actor's work"): _publish(MOVES.name, "inventory.partitions"),
    ("edge", "send a command"): _publish(COMMANDS.name, "catalog.create_product"),
    ("edge", "bind its queue to a saga event"): _bind_own_queue("order.placed"),
}


async def test_each_user_is_refused_what_it_does_not_need(principals: Principals) -> None:
    outcomes: dict[tuple[str, str], str] = {}
    for user in ("catalog", EDGE):
        connection = await aio_pika.connect(principals[user].rabbitmq_url)
        async with connection:
            for cases in (REFUSED, ALLOWED):
                for (who, what), attempt in cases.items():
                    if who != user:
                        continue
                    # A refusal closes the channel it happened on: one channel per attempt.
                    channel = await connection.channel(publisher_confirms=True)
                    try:
                        await attempt(channel)
                        outcomes[who, what] = "allowed"
                    except ChannelAccessRefused as refusal:
                        assert "ACCESS_REFUSED" in str(refusal)
                        outcomes[who, what] = "refused"
                    if not channel.is_closed:
                        await channel.close()
    assert outcomes == {**{case: "refused" for case in REFUSED}, **{case: "allowed" for case in ALLOWED}}


# --- the topology: imported, not declared -----------------------------------------------------------


async def test_the_imported_topology_is_the_one_the_actors_declare(
    principals: Principals, settings: Settings
) -> None:
    # With the test's own full rights: declaring over the import changes nothing and fails on
    # nothing (a queue argument that differed would be PRECONDITION_FAILED).
    broker = make_broker(settings, app_name="tests", role="publisher")
    await broker.connect()
    try:
        for actor in ACTORS.values():
            await declare(broker, topology_of(actor, settings))
    finally:
        await broker.stop()


async def test_an_actor_without_its_topology_refuses_to_start_and_says_what_to_do(
    settings: Settings, mongo
) -> None:
    host = ActorHost([ACTORS["catalog"]], settings.model_copy(update={"emporium_declare_topology": False}))
    with pytest.raises(TopologyMissing, match="import ops/rabbitmq/definitions.json"):
        async with running(host):
            pass
