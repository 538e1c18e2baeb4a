"""MongoDB operator injection through the broker: what a hostile sender could publish straight to
RabbitMQ, past the edge.

Message bodies whose fields carry query operators (``{"$gt": ""}``, ``{"$ne": null}``, ``$where``,
``$set``, ``$inc``) or keys with ``$`` or ``.`` are not valid contracts: each goes to its actor's
dead-letter queue at once as an invalid message, and no document of any actor changes. Such a field
would match every document if it reached a filter (deactivate every user, cancel every order), so
the actors hold data it would match. Queries carrying them are answered with a 400 problem, never
with data.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest
from faststream.rabbit import RabbitBroker
from pymongo import AsyncMongoClient

from brokers.contracts.catalog import (
    ChangePrice,
    CreateProduct,
    GetProduct,
    ListProducts,
    ProductCreated,
    UpdateProduct,
)
from brokers.contracts.common import Line
from brokers.contracts.identity import (
    AuthenticateUser,
    DeactivateUser,
    GetDeactivation,
    GetUser,
    RegisterUser,
)
from brokers.contracts.inventory import GetStock, Restock, StockView
from brokers.contracts.orders import CancelOrder, GetOrder, ListOrders, OrderPlaced, OrderView, PlaceOrder
from brokers.deadletters import ATTEMPTS, ERROR, ORIGIN, REASON
from brokers.envelope import Envelope, Message
from brokers.factory import publish_body
from brokers.rpc import REPLY_TO, Reply
from brokers.settings import Settings
from brokers.topology import QUERIES, dlq_name, exchange_for
from tests.helpers import eventually, send
from tests.integration.support import (
    amqp,
    header,
    order_placed,
    outcome_count,
    product_created,
    requester,
)

ACTORS = ("identity", "catalog", "inventory", "orders")
PRODUCT_ID, SKU, CUSTOMER, ORDER_ID, USER_ID = "p-inj-1", "SKU-INJ-1", "customer-1", "order-inj-1", "u-inj-1"
EMAIL, PASSWORD = "ada@example.com", "Correct-horse-42"
DEACTIVATION = {"deactivation_id": "d-inj-1", "user_id": USER_ID, "requested_by": "root"}
OPERATORS: tuple[Any, ...] = ({"$gt": ""}, {"$ne": None}, {"$where": "sleep(1000)"}, {"a.b": 1})
_REPLY_TIMEOUT_S = 10.0


# --- what the actors hold, and whether it changed ------------------------------------------------


async def snapshot(mongo: AsyncMongoClient, settings: Settings, actors: tuple[str, ...]) -> dict[str, Any]:
    """Every document of every collection of the actors' databases, in _id order."""
    everything: dict[str, Any] = {}
    for actor in actors:
        db = mongo[settings.database_name(actor)]
        for name in sorted(await db.list_collection_names()):
            everything[f"{actor}.{name}"] = await db[name].find().sort("_id", 1).to_list()
    return everything


async def unsent_events(mongo: AsyncMongoClient, settings: Settings, actors: tuple[str, ...]) -> int:
    return sum(
        [
            await mongo[settings.database_name(actor)]["outbox"].count_documents({"sent_at": None})
            for actor in actors
        ]
    )


async def wait_until_quiet(mongo: AsyncMongoClient, settings: Settings, actors: tuple[str, ...]) -> None:
    """Every event the actors committed is published (what they consume of it was awaited before)."""
    await eventually(
        lambda: unsent_events(mongo, settings, actors), until=lambda n: n == 0, what="every outbox sent"
    )


# --- a shop holding data every operator would match ----------------------------------------------


@pytest.fixture
async def shop(start_host, broker, mongo: AsyncMongoClient, settings: Settings) -> None:
    """A product, its stock, a customer's reserved order and a user, in the four actors' databases."""
    await start_host(*ACTORS)
    learnt = await outcome_count("orders", "applied")
    await send(
        broker,
        CreateProduct(product_id=PRODUCT_ID, sku=SKU, name="Lamp", category="lighting", price_cents=2_500),
    )
    await send(broker, RegisterUser(user_id=USER_ID, email=EMAIL, name="Ada", password=PASSWORD))
    async with requester(settings) as asker:
        await eventually(lambda: asker.ask(GetStock(sku=SKU), StockView), what="inventory to know the SKU")
        await send(broker, Restock(sku=SKU, quantity=5))
        await eventually(
            lambda: asker.ask(GetStock(sku=SKU), StockView),
            until=lambda s: s.on_hand == 5,
            what="the restock",
        )
        # Orders prices the order from its replica of the catalog, learnt from product.created.
        await eventually(
            lambda: outcome_count("orders", "applied"), until=lambda n: n > learnt, what="a price"
        )
        await send(
            broker,
            PlaceOrder(
                order_id=ORDER_ID, customer_id=CUSTOMER, lines=[Line(sku=SKU, quantity=1)], request_digest="d"
            ),
        )
        await eventually(
            lambda: asker.ask(GetOrder(order_id=ORDER_ID), OrderView),
            until=lambda order: order.status == "reserved",
            what="the order to be reserved",
        )
        await eventually(lambda: asker.ask(GetUser(user_id=USER_ID), Any), what="the user to be registered")
    await wait_until_quiet(mongo, settings, ACTORS)


# --- hostile messages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    """A message body no contract allows, and the actors whose queues it reaches."""

    contract: type[Message]
    body: dict[str, Any]
    reaches: tuple[str, ...]


def _valid(message: Message) -> dict[str, Any]:
    return json.loads(message.body())


NEW_PRODUCT = _valid(
    CreateProduct(product_id="p-new", sku="SKU-NEW", name="Mug", category="kitchen", price_cents=1)
)
PRODUCT_CREATED = _valid(product_created("SKU-NEW"))
NEW_ORDER = _valid(
    PlaceOrder(order_id="o-new", customer_id=CUSTOMER, lines=[Line(sku=SKU, quantity=1)], request_digest="d")
)
ORDER_PLACED = _valid(order_placed("o-new", (SKU, 1)))


def hostile_messages() -> list[Hostile]:
    """Operators in the fields that name what a handler looks up or changes, and operator keys."""
    each_operator = [
        hostile
        for operator in OPERATORS
        for hostile in (
            Hostile(UpdateProduct, {"product_id": operator, "name": "renamed"}, ("catalog",)),
            Hostile(ChangePrice, {"product_id": operator, "price_cents": 0}, ("catalog",)),
            Hostile(Restock, {"sku": operator, "quantity": 1}, ("inventory",)),
            Hostile(CancelOrder, {"order_id": operator, "customer_id": operator}, ("orders",)),
            Hostile(DeactivateUser, {**DEACTIVATION, "user_id": operator}, ("identity",)),
            Hostile(DeactivateUser, {**DEACTIVATION, "requested_by": operator}, ("identity",)),
        )
    ]
    return [
        *each_operator,
        Hostile(CreateProduct, {**NEW_PRODUCT, "sku": {"$ne": None}}, ("catalog",)),
        Hostile(CreateProduct, {**NEW_PRODUCT, "name": {"$set": {"price_cents": 0}}}, ("catalog",)),
        Hostile(CreateProduct, {**NEW_PRODUCT, "$where": "sleep(1000)"}, ("catalog",)),
        Hostile(CreateProduct, {**NEW_PRODUCT, "a.b": 1}, ("catalog",)),
        Hostile(ChangePrice, {"product_id": PRODUCT_ID, "price_cents": {"$gt": 0}}, ("catalog",)),
        Hostile(Restock, {"sku": SKU, "quantity": {"$inc": 1_000}}, ("inventory",)),
        Hostile(ProductCreated, {**PRODUCT_CREATED, "sku": {"$gt": ""}}, ("inventory", "orders")),
        Hostile(
            OrderPlaced, {**ORDER_PLACED, "lines": [{"sku": {"$gt": ""}, "quantity": 1}]}, ("inventory",)
        ),
        Hostile(PlaceOrder, {**NEW_ORDER, "customer_id": {"$ne": None}}, ("orders",)),
        Hostile(
            PlaceOrder,
            {**NEW_ORDER, "lines": [{"sku": SKU, "quantity": 1, "$inc": {"on_hand": 9}}]},
            ("orders",),
        ),
        Hostile(PlaceOrder, {**NEW_ORDER, "lines": ["$gt"]}, ("orders",)),
        Hostile(DeactivateUser, {**DEACTIVATION, "$set": {"role": "admin"}}, ("identity",)),
        Hostile(
            RegisterUser,
            {"user_id": "u-new", "email": {"$gt": ""}, "name": "Eve", "password": PASSWORD},
            ("identity",),
        ),
    ]


async def publish_hostile(broker: RabbitBroker, hostile: Hostile) -> str:
    """Publish the body as it is, in a valid envelope of its contract's type; its message id."""
    envelope = Envelope(
        correlation_id="hostile", type=hostile.contract.TYPE, schema_version=hostile.contract.VERSION
    )
    await publish_body(
        broker,
        json.dumps(hostile.body).encode(),
        exchange=exchange_for(hostile.contract).name,
        routing_key=hostile.contract.TYPE,
        envelope=envelope,
    )
    return envelope.message_id


async def test_operators_in_message_bodies_are_dead_lettered_as_invalid_and_change_nothing(
    shop, broker: RabbitBroker, mongo: AsyncMongoClient, settings: Settings
):
    before = await snapshot(mongo, settings, ACTORS)
    assert before["catalog.products"] and before["orders.orders"] and before["identity.users"]
    expected: dict[str, set[str]] = {actor: set() for actor in ACTORS}
    for hostile in hostile_messages():
        message_id = await publish_hostile(broker, hostile)
        for actor in hostile.reaches:
            expected[actor].add(message_id)

    async with amqp(settings) as rabbit:
        for actor, message_ids in expected.items():
            dead = await rabbit.take(dlq_name(actor), len(message_ids))
            assert {letter.message_id for letter in dead} == message_ids, actor
            assert await rabbit.depth(dlq_name(actor)) == 0, actor
            for letter in dead:
                where_from = (header(letter, ORIGIN), header(letter, REASON), header(letter, ATTEMPTS))
                # The origin is where the actor's work is addressed: inventory's partitions exchange.
                origin = "inventory.partitions" if actor == "inventory" else actor
                assert where_from == (origin, "invalid-message", 1), letter.type
                assert header(letter, ERROR).startswith("InvalidMessage: body is not a valid"), letter.type
    # Every hostile message is parked: nothing is left that could still change a document.
    assert await snapshot(mongo, settings, ACTORS) == before


# --- hostile queries -----------------------------------------------------------------------------


async def ask_raw(settings: Settings, query_type: str, body: dict[str, Any]) -> Reply[Any]:
    """Ask a query with this body as it is (in a valid envelope), over direct reply-to."""
    connection = await aio_pika.connect(settings.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        replies: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        await (await channel.get_queue(REPLY_TO, ensure=False)).consume(replies.put, no_ack=True)
        envelope = Envelope(correlation_id="hostile", type=query_type)
        exchange = await channel.get_exchange(QUERIES.name, ensure=False)
        await exchange.publish(
            aio_pika.Message(
                json.dumps(body).encode(),
                content_type="application/json",
                message_id=envelope.message_id,
                correlation_id=envelope.correlation_id,
                type=query_type,
                headers=envelope.amqp()["headers"],
                reply_to=REPLY_TO,
            ),
            routing_key=query_type,
            mandatory=True,
        )
        reply = await asyncio.wait_for(replies.get(), _REPLY_TIMEOUT_S)
    return Reply[Any].model_validate_json(reply.body)


def hostile_queries() -> list[tuple[type[Message], dict[str, Any]]]:
    """Queries whose operator would match the shop's data: a product, stock, orders, a user, a login."""
    return [
        (query, {field: operator, **others})
        for operator in OPERATORS
        for query, field, others in (
            (GetProduct, "product_id", {}),
            (ListProducts, "category", {}),
            (GetStock, "sku", {}),
            (GetOrder, "order_id", {}),
            (ListOrders, "customer_id", {}),
            (GetUser, "user_id", {}),
            (GetUser, "email", {}),
            (GetDeactivation, "deactivation_id", {}),
            (AuthenticateUser, "email", {"password": PASSWORD}),
            (AuthenticateUser, "password", {"email": EMAIL}),
        )
    ]


async def test_operators_in_queries_are_answered_with_a_400_problem_not_data(shop, settings: Settings):
    for query, body in hostile_queries():
        reply = await ask_raw(settings, query.TYPE, body)

        assert not reply.ok and reply.data is None, (query.TYPE, body, reply)
        assert reply.problem is not None and reply.problem.status == 400, (query.TYPE, body, reply)
        assert f"not a valid {query.TYPE}" in reply.problem.detail
