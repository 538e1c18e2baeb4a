"""An event no actor subscribes to yet is published, parked in unrouted-events, and marked sent.

With mandatory publishing such an event would otherwise come back as unroutable and stay in the
outbox for ever, holding up the sweeper.
"""

from actors.runtime.outbox import outbox_entries
from brokers.contracts.catalog import ChangePrice, CreateProduct
from brokers.topology import UNROUTED_EVENTS
from tests.helpers import eventually, send
from tests.integration.support import amqp


async def test_an_event_without_subscribers_is_parked_and_its_outbox_entry_marked_sent(
    start_host, broker, mongo, settings
):
    await start_host("catalog")  # inventory is not running, and nothing subscribes to price changes
    await send(
        broker, CreateProduct(product_id="p-1", sku="LAMP-1", name="Lamp", category="home", price_cents=100)
    )
    changed = await send(broker, ChangePrice(product_id="p-1", price_cents=150))

    db = mongo[settings.database_name("catalog")]
    entries = await eventually(
        lambda: outbox_entries(db), until=lambda entries: len(entries) == 2, what="both catalog events"
    )
    await eventually(
        lambda: db["outbox"].count_documents({"sent_at": None}),
        until=lambda unsent: unsent == 0,
        what="both catalog events marked sent",
    )
    assert sorted(e["routing_key"] for e in entries) == ["product.created", "product.price_changed"]
    price_changed = next(d for d in entries if d["routing_key"] == "product.price_changed")
    assert price_changed["envelope"]["causation_id"] == changed.message_id

    async with amqp(settings) as rabbit:
        parked = await rabbit.take(UNROUTED_EVENTS.name, count=2)
    assert sorted(m.type for m in parked) == ["product.created", "product.price_changed"]
