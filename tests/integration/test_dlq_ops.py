"""The dead-letter operations against the real RabbitMQ and MongoDB: look, replay, purge."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aio_pika
import httpx
import pytest
from typer.testing import CliRunner

from actors.registry import ACTORS
from actors.runtime.host import topology_of
from brokers.contracts.catalog import CreateProduct, ProductCreated
from brokers.contracts.inventory import GetStock, Restock, StockView
from brokers.contracts.shipping import ShipmentDispatched, ShipmentScheduled
from brokers.deadletters import ATTEMPTS, ERROR, ORIGIN, REASON, DeadLetter
from brokers.dlq import DlqError, QueueDepth, dead_letter_queues, peek, purge, replay
from brokers.envelope import Envelope
from brokers.factory import publish_body
from brokers.management import vhost_of
from brokers.rpc import Requester, requesting
from brokers.settings import Settings
from brokers.topology import COMMANDS, EVENTS, UNROUTED_EVENTS, declare, declare_exchanges
from ops import dlq
from tests.helpers import eventually, send


@pytest.fixture
async def requester(settings: Settings) -> AsyncIterator[Requester]:
    async with requesting(settings, app_name="tests") as asker:
        yield asker


def _product(sku: str) -> ProductCreated:
    return ProductCreated(
        product_id=f"p-{sku.lower()}",
        sku=sku,
        name=sku.title(),
        category="home",
        price_cents=1200,
        currency="EUR",
    )


def _stock(requester: Requester, sku: str):
    return lambda: requester.ask(GetStock(sku=sku), StockView)


async def _letters(settings: Settings, queue: str, count: int) -> list[DeadLetter]:
    return await eventually(
        lambda: peek(settings, queue, 100),
        until=lambda found: len(found) == count,
        what=f"{count} in {queue}",
    )


async def _park(settings: Settings, dlq_name: str, origin: str, message_id: str) -> None:
    """Put a message in a DLQ the way the runtime does, for cases no actor produces on its own."""
    connection = await aio_pika.connect(settings.rabbitmq_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(dlq_name, durable=True, arguments={"x-queue-type": "quorum"})
        headers = {ORIGIN: origin, REASON: "rule-violation", ATTEMPTS: 1, ERROR: "RuleViolation: [made up]"}
        message = aio_pika.Message(
            b'{"n": 1}',
            message_id=message_id,
            headers=headers,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await channel.default_exchange.publish(message, routing_key=dlq_name)


async def test_an_invalid_command_is_shown_with_its_origin_reason_and_error(settings, start_host, broker):
    await start_host("catalog")
    envelope = Envelope(correlation_id="corr-invalid", type=CreateProduct.TYPE)
    body = {"product_id": "p-1", "sku": "not a sku", "name": "Lamp", "category": "home", "price_cents": 1200}
    await publish_body(
        broker,
        json.dumps(body).encode(),
        exchange=COMMANDS.name,
        routing_key=CreateProduct.TYPE,
        envelope=envelope,
    )

    [letter] = await _letters(settings, "catalog.dlq", 1)

    assert (letter.origin_queue, letter.reason, letter.attempts) == ("catalog", "invalid-message", 1)
    assert letter.error.startswith("InvalidMessage: body is not a valid catalog.create_product")
    assert "sku" in letter.error
    assert (letter.message_id, letter.correlation_id, letter.type) == (
        envelope.message_id,
        "corr-invalid",
        CreateProduct.TYPE,
    )
    assert letter.dead_lettered_at
    assert json.loads(letter.body) == body
    # Looking did not take it away.
    assert [again.message_id for again in await peek(settings, "catalog.dlq", 10)] == [envelope.message_id]


async def test_a_message_rabbitmq_dead_lettered_itself_is_read_from_x_death_and_replayed(settings, broker):
    await declare(broker, topology_of(ACTORS["catalog"], settings))  # queues only: no consumer
    command = CreateProduct(product_id="p-1", sku="LAMP-1", name="Lamp", category="home", price_cents=1200)
    envelope = await send(broker, command)
    connection = await aio_pika.connect(settings.rabbitmq_url)
    async with connection:
        work = await (await connection.channel()).get_queue("catalog")
        taken = await eventually(lambda: work.get(no_ack=False, fail=False), what="the command in catalog")
        await taken.reject(requeue=False)  # RabbitMQ dead-letters it into catalog.dlq, with x-death

        [letter] = await _letters(settings, "catalog.dlq", 1)
        assert (letter.origin_queue, letter.reason, letter.attempts) == ("catalog", "rejected", 1)
        assert (letter.message_id, letter.error) == (envelope.message_id, "dead-lettered by RabbitMQ")

        assert [replayed.message_id for replayed in await replay(settings, "catalog.dlq")] == [
            envelope.message_id
        ]
        back = await eventually(lambda: work.get(no_ack=True, fail=False), what="the command back in catalog")
    assert (back.message_id, back.body) == (envelope.message_id, command.body())
    assert "x-death" not in back.headers
    assert await peek(settings, "catalog.dlq", 10) == []


async def test_a_replayed_dead_letter_is_processed_and_the_others_stay(
    settings, start_host, broker, requester
):
    await start_host("inventory")
    # Inventory has not heard of these SKUs: retried (200/400/800 ms), then dead-lettered.
    lamp = await send(broker, Restock(sku="LAMP-1", quantity=5))
    desk = await send(broker, Restock(sku="DESK-1", quantity=7))
    letters = await _letters(settings, "inventory.dlq", 2)
    assert {letter.message_id for letter in letters} == {lamp.message_id, desk.message_id}
    assert {(letter.reason, letter.attempts) for letter in letters} == {("retries-exhausted", 4)}
    assert all(letter.error.startswith("UnknownSku:") for letter in letters)

    await send(broker, _product("LAMP-1"))
    await eventually(_stock(requester, "LAMP-1"), what="inventory knows LAMP-1")
    replayed = await replay(settings, "inventory.dlq", message_id=lamp.message_id)

    assert [letter.message_id for letter in replayed] == [lamp.message_id]
    stock = await eventually(
        _stock(requester, "LAMP-1"),
        until=lambda s: s.on_hand == 5,
        what="LAMP-1 x5",
    )
    assert stock.received == 5
    assert [letter.message_id for letter in await peek(settings, "inventory.dlq", 10)] == [desk.message_id]


async def test_replaying_all_empties_the_queue_into_processing(settings, start_host, broker, requester):
    await start_host("inventory")
    skus = ("CHAIR-1", "SOFA-1")
    for quantity, sku in enumerate(skus, start=3):
        await send(broker, Restock(sku=sku, quantity=quantity))
    await _letters(settings, "inventory.dlq", 2)
    for sku in skus:
        await send(broker, _product(sku))
        await eventually(_stock(requester, sku), what=f"inventory knows {sku}")

    replayed = await replay(settings, "inventory.dlq")

    assert len(replayed) == 2
    stocks = [
        await eventually(_stock(requester, sku), until=lambda s: s.on_hand > 0, what=sku) for sku in skus
    ]
    assert [(s.sku, s.on_hand, s.received) for s in stocks] == [("CHAIR-1", 3, 3), ("SOFA-1", 4, 4)]
    assert await peek(settings, "inventory.dlq", 10) == []


async def test_list_shows_each_dlq_with_its_depth_and_purge_empties_one(settings, start_host, broker):
    await start_host("inventory")
    # A dispatch for an order inventory never reserved breaks a rule: dead-lettered at once.
    for order in ("o-1", "o-2"):
        await send(
            broker,
            ShipmentDispatched(shipment_id=f"s-{order}", order_id=order, carrier="dhl", tracking_number="t"),
        )
    [first, _] = await _letters(settings, "inventory.dlq", 2)
    assert (first.reason, first.attempts) == ("rule-violation", 1)
    assert first.error == "RuleViolation: order o-1 was dispatched but has no reservation"

    assert await dead_letter_queues(settings) == [
        QueueDepth("inventory.dlq", 2),
        QueueDepth("unrouted-events", 0),
    ]
    assert await purge(settings, "inventory.dlq") == 2
    assert await dead_letter_queues(settings) == [
        QueueDepth("inventory.dlq", 0),
        QueueDepth("unrouted-events", 0),
    ]


async def test_an_event_no_queue_takes_is_shown_in_unrouted_events_and_replayed_once_one_does(
    settings, broker
):
    await declare_exchanges(broker)
    scheduled = ShipmentScheduled(
        shipment_id="s-1", order_id="o-1", customer_id="c-1", carrier="dhl", tracking_number="t-1"
    )
    sent = await send(broker, scheduled)
    [letter] = await _letters(settings, UNROUTED_EVENTS.name, 1)
    assert (letter.type, letter.message_id, letter.reason) == (scheduled.TYPE, sent.message_id, "unrouted")
    assert letter.origin_queue == EVENTS.name
    assert QueueDepth(UNROUTED_EVENTS.name, 1) in await dead_letter_queues(settings)

    connection = await aio_pika.connect(settings.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        subscriber = await channel.declare_queue("late-subscriber", exclusive=True)
        await subscriber.bind(EVENTS.name, routing_key=scheduled.TYPE)
        [replayed] = await replay(settings, UNROUTED_EVENTS.name)
        assert replayed.message_id == sent.message_id
        delivered = await eventually(
            lambda: subscriber.get(fail=False), until=lambda m: m is not None, what="the replayed event"
        )
        assert (delivered.message_id, delivered.type) == (sent.message_id, scheduled.TYPE)
    assert await peek(settings, UNROUTED_EVENTS.name, 10) == []


async def test_a_dead_letter_that_cannot_be_sent_back_stays(settings):
    await _park(settings, "ghost.dlq", origin="ghost", message_id="m-ghost")  # no queue "ghost" exists

    with pytest.raises(
        DlqError, match=r"could not replay message m-ghost to 'ghost'.*NO_ROUTE.*stays in ghost\.dlq"
    ):
        await replay(settings, "ghost.dlq")

    assert [letter.message_id for letter in await peek(settings, "ghost.dlq", 10)] == ["m-ghost"]


async def test_bad_requests_are_refused_and_change_nothing(settings):
    await _park(settings, "ghost.dlq", origin="ghost", message_id="m-1")

    with pytest.raises(DlqError, match="no dead letter with message id 'm-2'"):
        await replay(settings, "ghost.dlq", message_id="m-2")
    with pytest.raises(DlqError, match="'ghost' is not a dead-letter queue"):
        await purge(settings, "ghost")
    with pytest.raises(DlqError, match=r"there is no queue 'nowhere\.dlq'"):
        await peek(settings, "nowhere.dlq", 10)
    with pytest.raises(DlqError, match="limit must be at least 1"):
        await peek(settings, "ghost.dlq", 0)

    assert [letter.message_id for letter in await peek(settings, "ghost.dlq", 10)] == ["m-1"]


def test_the_cli_lists_shows_replays_and_purges(settings: Settings, management: httpx.Client):
    vhost = vhost_of(settings.rabbitmq_url)
    queues = f"/api/queues/{vhost}"
    for name in ("orders", "orders.dlq"):
        management.put(
            f"{queues}/{name}", json={"durable": True, "arguments": {"x-queue-type": "quorum"}}
        ).raise_for_status()
    # Replays go through emporium.moves, where an actor's queues are bound by their names.
    management.put(f"/api/exchanges/{vhost}/emporium.moves", json={"type": "topic", "durable": True})
    management.post(
        f"/api/bindings/{vhost}/e/emporium.moves/q/orders", json={"routing_key": "orders"}
    ).raise_for_status()
    for message_id in ("m-1", "m-2"):
        management.post(
            f"/api/exchanges/{vhost}/amq.default/publish",
            json={
                "routing_key": "orders.dlq",
                "payload": '{"order_id": "o-1"}',
                "payload_encoding": "string",
                "properties": {
                    "message_id": message_id,
                    "delivery_mode": 2,
                    "headers": {ORIGIN: "orders", REASON: "rule-violation"},
                },
            },
        ).raise_for_status()
    cli = CliRunner()

    def run(*args: str, stdin: str | None = None):
        return cli.invoke(dlq.app, [*args, "--vhost", vhost], input=stdin)

    listed = run("list")
    assert listed.exit_code == 0, listed.output
    assert "orders.dlq" in listed.output and "│ 2 " in listed.output

    shown = run("show", "orders.dlq", "--limit", "1")
    assert shown.exit_code == 0, shown.output
    assert "m-1" in shown.output and "m-2" not in shown.output and '"order_id": "o-1"' in shown.output

    # For scripts: the same as JSON, nothing else on stdout.
    listed_json = run("list", "--json")
    assert listed_json.exit_code == 0, listed_json.output
    assert {"queue": "orders.dlq", "messages": 2} in json.loads(listed_json.stdout)
    shown_json = run("show", "orders.dlq", "--json")
    assert shown_json.exit_code == 0, shown_json.output
    letters = json.loads(shown_json.stdout)
    assert [(d["message_id"], d["origin_queue"], d["reason"]) for d in letters] == [
        ("m-1", "orders", "rule-violation"),
        ("m-2", "orders", "rule-violation"),
    ]
    assert json.loads(letters[0]["body"]) == {"order_id": "o-1"}
    # An error goes to stderr, with exit code 1: stdout stays for what was asked.
    missing = cli.invoke(dlq.app, ["list", "--json", "--vhost", "no-such-vhost"])
    assert missing.exit_code == 1 and missing.stdout == ""
    assert "error: there is no vhost 'no-such-vhost'" in missing.stderr

    assert run("replay", "orders.dlq").exit_code == 2  # neither --message-id nor --all
    assert run("purge", "orders").exit_code == 2  # not a DLQ
    refused = run("purge", "orders.dlq", stdin="n\n")
    assert refused.exit_code == 1 and "purged" not in refused.output

    replayed = run("replay", "orders.dlq", "--message-id", "m-2", "--yes")
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1 message(s)" in replayed.output
    got = management.post(
        f"{queues}/orders/get", json={"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"}
    )
    assert [m["properties"]["message_id"] for m in got.json()] == ["m-2"]

    purged = run("purge", "orders.dlq", "--yes")
    assert purged.exit_code == 0 and "purged 1 message(s)" in purged.output
