"""Runs one or many actors in a process: the same code for the monolith and for one pod per actor."""

from __future__ import annotations

from typing import Any

import structlog
from faststream.rabbit import RabbitRouter
from pymongo.asynchronous.mongo_client import AsyncMongoClient

from actors.runtime.actor import Actor
from actors.runtime.consumers import QueryConsumer, WorkConsumer
from actors.runtime.metrics import load_actor_metrics, start_at_zero
from actors.runtime.outbox import OutboxRelay
from actors.runtime.partitions import Partitions
from brokers import tracing
from brokers.factory import make_broker, subscribe_raw
from brokers.settings import Settings
from brokers.topology import ActorTopology, actor_topology, declare

log = structlog.get_logger()


def topology_of(actor: Actor[Any], settings: Settings) -> ActorTopology:
    return actor_topology(
        actor.name,
        consumes=[contract for contract, _ in actor.handlers.values()],
        answers=[contract for contract, _ in actor.answers.values()],
        retry_delays_ms=settings.emporium_retry_delays_ms,
        delivery_limit=settings.emporium_delivery_limit,
        timer_delays_ms=tuple(timer.delay_ms(settings) for timer in actor.timers),
    )


class ActorHost:
    def __init__(
        self, actors: list[Actor[Any]], settings: Settings, *, app_name: str = "emporium-actors"
    ) -> None:
        settings.require_production_database()
        self.actors = actors
        self.settings = settings
        # One connection for every actor hosted: it consumes their queues and publishes for them.
        role = "work of " + ", ".join(actor.name for actor in actors)
        self.broker = make_broker(settings, app_name=app_name, role=role)
        # A message is acked once its transaction commits: the commit must be journaled by then
        # (majority journals on a replica set; the embedded one also runs with --sync-on-commit).
        self.client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True, w="majority")
        self.topologies = {actor.name: topology_of(actor, settings) for actor in actors}
        self.relays: dict[str, OutboxRelay] = {}
        self.consumers: list[WorkConsumer] = []
        self.partitions: list[Partitions] = []
        # Without permission to declare (production), the subscribers only check their queues exist.
        declares = settings.emporium_declare_topology
        for actor in actors:
            load_actor_metrics(actor.name)
            start_at_zero(actor.name, actor.handlers, actor.answers)
            db = self.client[settings.database_name(actor.name)]
            topology = self.topologies[actor.name]
            relay = OutboxRelay(actor.name, self.broker, db, sweep_s=settings.emporium_outbox_sweep_s)
            self.relays[actor.name] = relay
            consumer = WorkConsumer(actor, topology, self.broker, self.client, db, relay, settings)
            self.consumers.append(consumer)
            # A router per actor: the span of each message its subscribers take is the actor's.
            router = RabbitRouter(
                middlewares=tracing.subscriber_middlewares(tracing.actor_service(actor.name))
            )
            if topology.replicas is not None:  # partitioned: shared out among the replicas
                self.partitions.append(Partitions(topology, router, consumer.__call__, declare=declares))
            else:
                [work] = topology.work
                subscribe_raw(router, work.rabbit_queue(declare=declares), consumer.__call__)
            queries = topology.queries.rabbit_queue(declare=declares)
            subscribe_raw(router, queries, QueryConsumer(actor, self.broker, db).__call__)
            self.broker.include_router(router)

    async def start(self) -> None:
        for actor in self.actors:
            db = self.client[self.settings.database_name(actor.name)]
            await OutboxRelay.prepare(db, self.settings)
            await actor.store.prepare(db)
        await self.broker.connect()
        for topology in self.topologies.values():
            await declare(self.broker, topology, create=self.settings.emporium_declare_topology)
        # Republish what a previous run committed but did not publish before taking new work.
        for relay in self.relays.values():
            await relay.start()
        for partitions in self.partitions:
            await partitions.before_start(self.broker)
        await self.broker.start()
        for partitions in self.partitions:
            partitions.start()
        log.info("actors.started", actors=[a.name for a in self.actors])

    async def stop(self) -> None:
        for relay in self.relays.values():
            await relay.stop()
        for partitions in self.partitions:
            await partitions.stop()
        # Stopping the broker waits for in-flight handlers (their batches committed and published),
        # so nothing is half done.
        await self.broker.stop()
        for consumer in self.consumers:
            await consumer.commits.stop()
        for relay in self.relays.values():
            try:
                await relay.settle()
            except Exception as exc:  # left unsent in the outbox: the next start republishes them
                log.warning("outbox.settle_failed", actor=relay.actor, error=repr(exc))
        await self.client.close()
        log.info("actors.stopped", actors=[a.name for a in self.actors])

    async def broker_ready(self) -> bool:
        return await self.broker.ping(timeout=2.0)

    async def mongodb_ready(self) -> bool:
        await self.client.admin.command("ping")
        return True

    @property
    def checks(self) -> dict[str, Any]:
        return {"rabbitmq": self.broker_ready, "mongodb": self.mongodb_ready}
