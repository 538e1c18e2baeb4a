"""Inventory's work in partitions by SKU, with two replicas, on the real RabbitMQ and MongoDB.

Each replica consumes every partition; RabbitMQ lets one consumer at a time take each (single
active consumer). So the messages about one SKU are applied in the order they were sent, never by
two replicas at once, and a partition whose consumer goes away is taken over by the other replica.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY

from actors.runtime.batches import Delivery
from actors.runtime.host import ActorHost
from actors.runtime.partitions import Partitions
from brokers.contracts.inventory import GetStock, Restock, StockView
from brokers.topology import dlq_name, work_queue_names
from tests.helpers import eventually, send
from tests.integration.support import amqp, product_created, requester

SKUS = [f"SKU-P{n}" for n in range(8)]
RESTOCKS = 10  # per SKU, of 1, 2, ... units: the order they are applied in shows in the quantities
RECEIVED = RESTOCKS * (RESTOCKS + 1) // 2


@dataclass
class Watch:
    """What each replica's runtime is handed, per SKU: the restocks' quantities in the order they
    arrived, and which replicas had one of the SKU's messages in hand at the same moment."""

    restocks: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    in_hand: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    most_replicas_at_once: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def replica(self, host: ActorHost, name: str) -> None:
        [consumer] = host.consumers
        apply = consumer.commits.apply

        async def watched(delivery: Delivery) -> Any:
            sku = delivery.payload.sku
            if isinstance(delivery.payload, Restock):
                self.restocks[sku].append((name, delivery.payload.quantity))
            self.in_hand[sku][name] += 1
            replicas = sum(1 for count in self.in_hand[sku].values() if count)
            self.most_replicas_at_once[sku] = max(self.most_replicas_at_once[sku], replicas)
            try:
                return await apply(delivery)
            finally:
                self.in_hand[sku][name] -= 1

        consumer.commits.apply = watched  # type: ignore[method-assign]


async def _received(asker, sku: str) -> int:
    return (await asker.ask(GetStock(sku=sku), StockView)).received


async def _send_restocks(broker, quantities: range) -> None:
    # Interleaved across SKUs, each sent once the one before it is confirmed: the sending order
    # per SKU is the quantities' order.
    for quantity in quantities:
        for sku in SKUS:
            await send(broker, Restock(sku=sku, quantity=quantity))


async def _two_replicas(start_host, watch: Watch, names: tuple[str, str]) -> tuple[ActorHost, ActorHost]:
    """Two inventory replicas, once the first has handed the second its share (no hand-over after)."""
    first, second = await start_host("inventory"), await start_host("inventory")
    for host, name in zip((first, second), names, strict=True):
        watch.replica(host, name)
    [partitions] = first.partitions
    half = len(work_queue_names("inventory")) // 2
    await eventually(
        lambda: _settled(partitions), until=lambda held: held == (half,), what="a share given up"
    )
    return first, second


async def _settled(*replicas: Partitions) -> tuple[int, ...]:
    return tuple(len(replica.held) for replica in replicas)


async def test_one_skus_messages_are_applied_in_order_and_by_one_replica_at_a_time(
    start_host, broker, settings
):
    watch = Watch()
    await _two_replicas(start_host, watch, ("a", "b"))

    async with requester(settings) as asker, amqp(settings) as rabbit:
        for sku in SKUS:
            # Partitioned by SKU too: the SKU is known before its restocks, which come after it.
            await send(broker, product_created(sku))
        await _send_restocks(broker, range(1, RESTOCKS + 1))
        for sku in SKUS:
            await eventually(lambda sku=sku: _received(asker, sku), until=lambda n: n == RECEIVED, what=sku)
        assert await rabbit.depth(dlq_name("inventory")) == 0  # no restock came before its SKU

    for sku in SKUS:
        assert [quantity for _, quantity in watch.restocks[sku]] == list(range(1, RESTOCKS + 1)), sku
        assert watch.most_replicas_at_once[sku] == 1, sku
    # The replicas shared the work: each took the SKUs of its partitions.
    assert {name for taken in watch.restocks.values() for name, _ in taken} == {"a", "b"}


async def test_a_replica_that_stops_hands_its_partitions_to_the_other_and_nothing_is_lost_or_applied_twice(
    start_host, broker, settings
):
    watch = Watch()
    first, _ = await _two_replicas(start_host, watch, ("first", "second"))

    async with requester(settings) as asker:
        for sku in SKUS:
            await send(broker, product_created(sku))
        half = RESTOCKS // 2
        await _send_restocks(broker, range(1, half + 1))
        await first.stop()  # waits for what it had in hand: committed, published and acked
        await _send_restocks(broker, range(half + 1, RESTOCKS + 1))
        for sku in SKUS:
            await eventually(lambda sku=sku: _received(asker, sku), until=lambda n: n == RECEIVED, what=sku)

    for sku in SKUS:
        taken = watch.restocks[sku]
        # Every restock once, in order, whoever took it; what came after the stop, the second took.
        assert [quantity for _, quantity in taken] == list(range(1, RESTOCKS + 1)), sku
        assert {name for name, quantity in taken if quantity > half} == {"second"}, sku


async def test_a_second_replica_is_given_its_share_of_the_partitions(start_host, broker):
    watch = Watch()
    first = await start_host("inventory")
    watch.replica(first, "first")
    [partitions] = first.partitions
    assert len(partitions.held) == len(work_queue_names("inventory"))  # alone: every partition
    second = await start_host("inventory")
    watch.replica(second, "second")

    for sku in SKUS:
        await send(broker, product_created(sku))

    # The first gives half up within a balancing round or two; the second learns what it holds
    # from the messages it is handed.
    async def restock_round() -> set[str]:
        await _send_restocks(broker, range(1, 2))
        return {taken[-1][0] for taken in watch.restocks.values()}

    await eventually(restock_round, until=lambda names: names == {"first", "second"}, timeout=30)
    [theirs] = second.partitions
    half = len(work_queue_names("inventory")) // 2

    async def held_after_a_round() -> tuple[int, ...]:
        await restock_round()  # a replica learns it holds a partition from a message of it
        return await _settled(partitions, theirs)

    await eventually(held_after_a_round, until=lambda held: held == (half, half), what="half each")
    assert not partitions.held & theirs.held
    handovers = REGISTRY.get_sample_value("emporium_partition_handovers_total", {"actor": "inventory"})
    assert handovers is not None and handovers >= half


async def test_a_partition_handed_over_while_its_messages_stream_in_loses_none_of_them(
    start_host, broker, settings
):
    # The hand-over cancels the consumer while RabbitMQ is still pushing the partition's messages
    # to it: every one delivered before the cancel took effect is still applied (and acked), none
    # is left in hand and forgotten.
    host = await start_host("inventory")
    [partitions] = host.partitions
    for sku in SKUS:
        await send(broker, product_created(sku))
    rounds = 40

    async def stream() -> None:
        for _ in range(rounds):
            await asyncio.gather(*(send(broker, Restock(sku=sku, quantity=1)) for sku in SKUS))

    async def hand_over_while(sending: asyncio.Task[None]) -> int:
        handovers = 0
        while not sending.done():
            for name in work_queue_names("inventory"):
                await partitions.hand_over(name)
                handovers += 1
        return handovers

    sending = asyncio.create_task(stream())
    handovers = await hand_over_while(sending)
    await sending
    assert handovers >= len(work_queue_names("inventory"))
    async with requester(settings) as asker:
        for sku in SKUS:
            await eventually(lambda sku=sku: _received(asker, sku), until=lambda n: n == rounds, what=sku)
