"""An event no actor subscribes to yet is published, parked in unrouted-events, and marked sent.

With mandatory publishing such an event would otherwise come back as unroutable and stay in the
outbox for ever, holding up the sweeper.
"""

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

    outbox = mongo[settings.database_name("catalog")]["outbox"]
    entries = await eventually(
        lambda: outbox.find({}).to_list(),
        until=lambda docs: len(docs) == 2 and all(d["sent_at"] is not None for d in docs),
        what="both catalog events marked sent",
    )
    price_changed = next(d for d in entries if d["routing_key"] == "product.price_changed")
    assert price_changed["envelope"]["causation_id"] == changed.message_id

    async with amqp(settings) as rabbit:
        parked = await rabbit.take(UNROUTED_EVENTS.name, count=2)
    assert sorted(m.type for m in parked) == ["product.created", "product.price_changed"]
