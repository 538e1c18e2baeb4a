"""Reservations under contention, on the real RabbitMQ and MongoDB.

Inventory runs as several replicas (as pods would), each with its own MongoDB client, consuming
every partition of its work: a SKU's messages are taken by one of them at a time, and transactions
and guarded writes keep the others from selling a unit twice should they overlap (a partition
changing hands, or an order of several SKUs partitioned by its first).
"""

from __future__ import annotations

import asyncio

from rich.progress import Progress

from brokers.contracts.common import Shortage
from brokers.contracts.inventory import GetStock, StockRejected, StockReserved, StockView
from brokers.topology import dlq_name, work_queue_names
from ops.bench.hot_sku import drain_hot_sku
from tests.helpers import Tap, eventually, send
from tests.integration.support import amqp, order_placed, requester, stock

HOSTS = 3
ORDERS = 50
UNITS = 10


async def test_fifty_concurrent_orders_for_the_last_ten_units_reserve_exactly_ten(
    start_host, broker, settings
):
    for _ in range(HOSTS):
        await start_host("inventory")  # each host has its own connection and MongoDB client

    async with (
        Tap(settings.rabbitmq_url) as watcher,
        requester(settings) as asker,
        amqp(settings) as rabbit,
    ):
        # Every replica consumes every partition, one at a time on each (single active consumer:
        # RabbitMQ counts only the active one; the others wait behind it).
        for partition in work_queue_names("inventory"):
            assert (await rabbit.consumers(partition)) == 1
        await stock(broker, asker, "SKU-LAST", UNITS)

        orders = [order_placed(f"order-{n}", ("SKU-LAST", 1)) for n in range(ORDERS)]
        await asyncio.gather(*(send(broker, order) for order in orders))

        await eventually(
            lambda: _answered(watcher),
            until=lambda answered: answered >= ORDERS,
            timeout=60,
            what=f"an answer to each of the {ORDERS} orders",
        )
        level = await asker.ask(GetStock(sku="SKU-LAST"), StockView)
        assert await rabbit.depth(dlq_name("inventory")) == 0

    reserved = [StockReserved.parse(m.body).order_id for m in watcher.of_type(StockReserved.TYPE)]
    rejected = [StockRejected.parse(m.body).order_id for m in watcher.of_type(StockRejected.TYPE)]
    assert (len(reserved), len(rejected)) == (UNITS, ORDERS - UNITS)
    assert set(reserved) | set(rejected) == {order.order_id for order in orders}  # one answer each
    assert (level.on_hand, level.reserved, level.shipped, level.received) == (0, UNITS, 0, UNITS)
    assert level.on_hand + level.reserved + level.shipped == level.received


async def _answered(watcher: Tap) -> int:
    return len(watcher.of_type(StockReserved.TYPE)) + len(watcher.of_type(StockRejected.TYPE))


async def test_an_order_with_one_line_short_reserves_none_of_its_lines(start_host, broker, settings):
    await start_host("inventory")
    async with Tap(settings.rabbitmq_url) as watcher, requester(settings) as asker:
        await stock(broker, asker, "SKU-PLENTY", 5)
        await stock(broker, asker, "SKU-SCARCE", 1)

        await send(broker, order_placed("order-short", ("SKU-PLENTY", 2), ("SKU-SCARCE", 3)))
        [rejected] = await watcher.wait_for(StockRejected.TYPE)
        plenty = await asker.ask(GetStock(sku="SKU-PLENTY"), StockView)
        scarce = await asker.ask(GetStock(sku="SKU-SCARCE"), StockView)

    assert StockRejected.parse(rejected.body).shortages == [
        Shortage(sku="SKU-SCARCE", requested=3, available=1)
    ]
    assert watcher.of_type(StockReserved.TYPE) == []
    assert (plenty.on_hand, plenty.reserved) == (5, 0)
    assert (scarce.on_hand, scarce.reserved) == (1, 0)


async def test_a_burst_for_one_sku_is_drained_with_every_unit_reserved_once(settings):
    """The hot-SKU benchmark's run, small: 32 reservations at once queue for the one stock document
    (emporium bench hot-sku prints how fast; here: that every message is applied and none retried)."""
    with Progress(disable=True) as progress:
        figures = await drain_hot_sku(settings, orders=80, units=30, prefetch=32, progress=progress)
    assert (figures.orders, figures.reserved, figures.retried) == (80, 30, 0)


async def test_two_inventory_replicas_draining_one_sku_reserve_every_unit_once(settings):
    """Both replicas take from the one queue and write the one stock document: a conflict aborts a
    transaction and runs it again, and no unit is reserved twice or lost."""
    with Progress(disable=True) as progress:
        figures = await drain_hot_sku(
            settings, orders=80, units=30, prefetch=32, progress=progress, replicas=2
        )
    assert (figures.orders, figures.reserved, figures.replicas) == (80, 30, 2)
    assert figures.commits >= 1 and 0 <= figures.aborted_share < 1
