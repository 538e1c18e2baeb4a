"""Sharing a partitioned actor's partitions among its replicas.

Every replica consumes every partition queue (brokers.topology.PARTITIONS); each queue has a single
active consumer, so RabbitMQ hands a partition to one replica at a time and, when that one goes
away, to the next one waiting. What it does not do (RabbitMQ 3.10) is share them out: the replica
that subscribed first is active on all of them. So each replica counts the replicas (consumers of
``<actor>.replicas``, a queue every replica consumes and nothing is sent to) every few seconds and,
holding more than its share (partitions / replicas, rounded up), gives the rest up: it cancels its
consumer there and subscribes again, behind the others, so the replica waiting longest takes over.

A replica knows it holds a partition when it subscribed to it while nobody else did, or when it was
handed a message from it since it last subscribed. It may believe it holds less than it does (a
partition handed to it while idle); then it gives up nothing it should not. At a hand-over the old
holder finishes the messages it had in hand while the new one starts on the next: for those few,
the database's own rule (every decision about an entity writes its document) keeps them apart.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from faststream.rabbit import RabbitBroker, RabbitRouter
from faststream.rabbit.subscriber import RabbitSubscriber

from actors.runtime import metrics
from brokers.factory import consume_again, subscribe_raw
from brokers.topology import ActorTopology

log = structlog.get_logger()
# How often a replica counts the replicas and gives up what is beyond its share.
BALANCE_EVERY_S = 2.0

Take = Callable[[AbstractIncomingMessage], Awaitable[None]]


class Partitions:
    def __init__(self, topology: ActorTopology, router: RabbitRouter, take: Take, *, declare: bool) -> None:
        assert topology.replicas is not None, f"{topology.actor} is not partitioned"
        self.actor = topology.actor
        self._replicas = topology.replicas.name
        self._held: dict[str, bool] = {spec.name: False for spec in topology.work}
        self._subscribers: dict[str, RabbitSubscriber] = {}
        self._unconsumed: set[str] = set()  # partitions whose hand-over has not consumed again yet
        for spec in topology.work:
            self._subscribers[spec.name] = subscribe_raw(
                router, spec.rabbit_queue(declare=declare), self._taker(spec.name, take)
            )
        subscribe_raw(router, topology.replicas.rabbit_queue(declare=declare), self._stray)
        self._channel: AbstractChannel | None = None
        self._balancing: asyncio.Task[None] | None = None
        metrics.PARTITION_HANDOVERS.labels(self.actor)  # at 0 until the first hand-over

    @property
    def held(self) -> frozenset[str]:
        """The partition queues this replica knows it is the active consumer of."""
        return frozenset(name for name, held in self._held.items() if held)

    async def before_start(self, broker: RabbitBroker) -> None:
        """Before the subscribers start: the partitions nobody consumes yet are this replica's."""
        self._channel = await (await broker.connect()).channel(publisher_confirms=False)
        for name in self._held:
            self._held[name] = await self._consumers(name) == 0
        self._count_held()

    def start(self) -> None:
        self._balancing = asyncio.create_task(self._balance_forever(), name=f"{self.actor}-partitions")

    async def stop(self) -> None:
        if self._balancing is not None:
            self._balancing.cancel()
            await asyncio.gather(self._balancing, return_exceptions=True)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def balance(self) -> list[str]:
        """Give up the partitions beyond this replica's share; the ones given up."""
        for name in sorted(self._unconsumed):  # a hand-over RabbitMQ broke off between cancel and consume
            await self.hand_over(name)
        replicas = max(1, await self._consumers(self._replicas))
        share = math.ceil(len(self._held) / replicas)
        surplus = sorted(self.held)[share:]
        for name in surplus:
            await self.hand_over(name)
            log.info("partitions.handed_over", partition=name, replicas=replicas, share=share)
        return surplus

    async def hand_over(self, name: str) -> None:
        """Stop consuming a partition and consume it again, behind the replicas waiting for it."""
        self._held[name] = False
        self._count_held()
        self._unconsumed.add(name)
        await consume_again(self._subscribers[name])
        self._unconsumed.discard(name)
        metrics.PARTITION_HANDOVERS.labels(self.actor).inc()

    async def _balance_forever(self) -> None:
        while True:
            await asyncio.sleep(BALANCE_EVERY_S)
            try:
                await self.balance()
            except Exception as exc:  # RabbitMQ away for a moment: counted again next time
                log.warning("partitions.balance_failed", error=repr(exc))

    async def _consumers(self, queue: str) -> int:
        assert self._channel is not None, "before_start first"
        if self._channel.is_closed:
            await self._channel.reopen()
        declared = await self._channel.declare_queue(queue, passive=True)
        return declared.declaration_result.consumer_count or 0

    def _taker(self, name: str, take: Take) -> Take:
        async def take_from_partition(message: AbstractIncomingMessage) -> None:
            if not self._held[name]:  # handed a message: this replica is the partition's consumer
                self._held[name] = True
                self._count_held()
            await take(message)

        return take_from_partition

    def _count_held(self) -> None:
        metrics.PARTITIONS_HELD.labels(self.actor).set(len(self.held))

    async def _stray(self, message: AbstractIncomingMessage) -> None:
        # Nothing is sent to the replicas queue (it holds none: x-max-length 0); drop what is.
        log.warning("partitions.stray_message", queue=self._replicas, message_id=message.message_id)
        await message.reject(requeue=False)
