"""The RabbitMQ topology, as the management API shows it after every actor has started.

Two views are compared with the broker: what the code declares (``topology_of`` for each actor), and
what the design requires of each kind of queue, written out here independently of topology.py.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from aiormq.exceptions import ChannelPreconditionFailed

from actors.catalog import catalog
from actors.registry import ACTORS
from actors.runtime.host import ActorHost, topology_of
from brokers.management import vhost_of
from brokers.settings import Settings
from brokers.topology import UNROUTED_EVENTS, ExchangeSpec, QueueSpec
from tests.integration.support import running

REQUIRED_EXCHANGES = {
    "emporium.unrouted": "fanout",
    "emporium.commands": "direct",
    "emporium.events": "topic",
    "emporium.queries": "direct",
    "emporium.dead-letters": "direct",
    "emporium.moves": "topic",
    # Inventory's work is partitioned by SKU.
    "inventory.partitions": "x-consistent-hash",
}
PARTITIONED = {"inventory": 4}


def live_topology(management: httpx.Client, settings: Settings) -> dict[str, Any]:
    vhost = quote(vhost_of(settings.rabbitmq_url), safe="")

    def get(what: str) -> list[dict[str, Any]]:
        response = management.get(f"/api/{what}/{vhost}")
        response.raise_for_status()
        return response.json()

    return {
        "queues": {q["name"]: q for q in get("queues")},
        # The default exchange's implicit binding of every queue is RabbitMQ's, not ours.
        "bindings": {
            (b["source"], b["routing_key"], b["destination"]) for b in get("bindings") if b["source"] != ""
        },
        "exchanges": {
            e["name"]: e for e in get("exchanges") if e["name"] and not e["name"].startswith("amq.")
        },
    }


def declared_specs(settings: Settings) -> list[QueueSpec | ExchangeSpec]:
    return [
        UNROUTED_EVENTS,
        *(spec for actor in ACTORS.values() for spec in topology_of(actor, settings).routed_to),
    ]


def declared_queues(settings: Settings) -> dict[str, dict[str, Any]]:
    return {spec.name: spec.arguments for spec in declared_specs(settings) if isinstance(spec, QueueSpec)}


def declared_bindings(settings: Settings) -> set[tuple[str, str, str]]:
    return {
        (exchange, routing_key, spec.name)
        for spec in declared_specs(settings)
        for exchange, routing_key in spec.bindings
    }


def required_arguments(queue: str, settings: Settings) -> dict[str, Any]:
    """What the design asks of a queue, by the kind its name tells."""
    quorum = {"x-queue-type": "quorum"}
    if queue == "unrouted-events":
        # A parking lot for events nobody subscribes to: bounded, and kept for a day.
        return {**quorum, "x-message-ttl": 86_400_000, "x-max-length": 100_000}
    if queue.endswith(".dlq"):
        return quorum
    if queue.endswith(".replicas"):
        # Counts a partitioned actor's replicas (its consumers); holds nothing.
        return {**quorum, "x-max-length": 0, "x-overflow": "drop-head"}
    if queue.endswith(".reads"):
        # Never dead-lettered: queries carry secrets, and an expired one has been answered 504.
        return {**quorum, "x-delivery-limit": settings.emporium_delivery_limit}
    # At-least-once dead-lettering: a message leaves only once its dead-letter copy is confirmed.
    safe = {**quorum, "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    work, _, tier = queue.partition(".delay.")
    if tier:
        # Waits out its TTL, then goes back to the work queue through the default exchange (or,
        # partitioned, through the partitions exchange, to its key's partition).
        return {
            **safe,
            "x-message-ttl": int(tier.removesuffix("ms")),
            "x-dead-letter-exchange": work if work.endswith(".partitions") else "",
            "x-dead-letter-routing-key": work,
        }
    actor, _, partition = queue.partition(".partition.")
    return {
        **safe,
        "x-dead-letter-exchange": "emporium.dead-letters",
        "x-dead-letter-routing-key": actor,
        "x-delivery-limit": settings.emporium_delivery_limit,
        # A partition is taken by one consumer at a time across replicas.
        **({"x-single-active-consumer": True} if partition else {}),
    }


def required_queue_names(settings: Settings) -> set[str]:
    names = {"unrouted-events"}
    for name, actor in ACTORS.items():
        names |= {f"{name}.dlq", f"{name}.reads"}
        partitions = PARTITIONED.get(name, 0)
        names |= (
            {f"{name}.partition.{n}" for n in range(partitions)} | {f"{name}.replicas"}
            if partitions
            else {name}
        )
        delays = {*settings.emporium_retry_delays_ms, *(timer.delay_ms(settings) for timer in actor.timers)}
        work = f"{name}.partitions" if partitions else name
        names |= {f"{work}.delay.{delay}ms" for delay in delays}
    return names


async def test_the_broker_holds_exactly_the_declared_topology(start_host, management, settings):
    await start_host()
    live = live_topology(management, settings)

    assert set(live["queues"]) == set(declared_queues(settings)) == required_queue_names(settings)
    for name, queue in live["queues"].items():
        assert (queue["type"], queue["durable"], queue["auto_delete"]) == ("quorum", True, False), name
        assert queue["arguments"] == declared_queues(settings)[name] == required_arguments(name, settings), (
            name
        )

    assert live["bindings"] == declared_bindings(settings)
    for actor in ACTORS:
        assert ("emporium.dead-letters", actor, f"{actor}.dlq") in live["bindings"]
        # The runtime moves messages into an actor's own queues by name, never via the default exchange.
        work = f"{actor}.partitions" if actor in PARTITIONED else actor
        for queue in (
            work,
            f"{actor}.dlq",
            *(f"{work}.delay.{d}ms" for d in settings.emporium_retry_delays_ms),
        ):
            assert ("emporium.moves", queue, queue) in live["bindings"]
    # A partitioned actor's types reach its partitions exchange, which feeds each partition equally.
    assert ("emporium.events", "order.placed", "inventory.partitions") in live["bindings"]
    assert ("emporium.commands", "inventory.restock", "inventory.partitions") in live["bindings"]
    for n in range(PARTITIONED["inventory"]):
        assert ("inventory.partitions", "1", f"inventory.partition.{n}") in live["bindings"]
    assert live["exchanges"]["inventory.partitions"]["arguments"] == {"hash-header": "partition_key"}

    assert {name: e["type"] for name, e in live["exchanges"].items()} == REQUIRED_EXCHANGES
    assert live["exchanges"]["emporium.events"]["arguments"] == {"alternate-exchange": "emporium.unrouted"}
    assert all(e["durable"] and not e["auto_delete"] for e in live["exchanges"].values())


async def test_a_second_host_redeclares_the_same_topology_without_error(start_host, management, settings):
    await start_host()
    first = live_topology(management, settings)

    await start_host()

    again = live_topology(management, settings)
    assert again["bindings"] == first["bindings"]
    assert again["exchanges"].keys() == first["exchanges"].keys()
    assert {n: q["arguments"] for n, q in again["queues"].items()} == {
        n: q["arguments"] for n, q in first["queues"].items()
    }


async def test_a_changed_queue_argument_is_refused_not_applied_silently(start_host, management, settings):
    await start_host("catalog")
    changed = settings.model_copy(update={"emporium_delivery_limit": settings.emporium_delivery_limit + 1})

    with pytest.raises(ChannelPreconditionFailed, match="x-delivery-limit"):
        async with running(ActorHost([catalog], changed)):
            pass

    catalog_queue = live_topology(management, settings)["queues"]["catalog"]
    assert catalog_queue["arguments"]["x-delivery-limit"] == settings.emporium_delivery_limit


async def test_queues_of_the_earlier_topology_are_removed_with_what_they_parked(
    start_host, management, settings
):
    """An earlier version dead-lettered expired queries from `<actor>.queries` into
    `<actor>.queries.dlq`, logins with their passwords included: a host that may declare removes both."""
    vhost = quote(vhost_of(settings.rabbitmq_url), safe="")
    for name in ("identity.queries", "identity.queries.dlq"):
        management.put(
            f"/api/queues/{vhost}/{name}", json={"durable": True, "arguments": {"x-queue-type": "quorum"}}
        ).raise_for_status()
    management.post(
        f"/api/exchanges/{vhost}/amq.default/publish",
        json={
            "routing_key": "identity.queries.dlq",
            "payload": '{"password": "x"}',
            "payload_encoding": "string",
            "properties": {"delivery_mode": 2},
        },
    ).raise_for_status()

    await start_host("identity")

    for name in ("identity.queries", "identity.queries.dlq"):
        assert management.get(f"/api/queues/{vhost}/{name}").status_code == 404
    assert management.get(f"/api/queues/{vhost}/identity.reads").status_code == 200
