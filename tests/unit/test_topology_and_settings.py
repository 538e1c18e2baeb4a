import pytest
from faststream.rabbit import ExchangeType
from pydantic import ValidationError

from actors.registry import ACTORS
from actors.runtime.host import topology_of
from brokers.contracts.inventory import Restock
from brokers.contracts.orders import OrderCancelled, OrderLine, OrderPlaced
from brokers.envelope import PARTITION_KEY_HEADER, Envelope
from brokers.settings import Settings
from brokers.topology import COMMANDS, DEAD_LETTERS, EVENTS, MOVES, PARTITIONS, unpartitioned_queues


def test_an_actors_queues_bindings_and_retry_tiers():
    topology = topology_of(ACTORS["payments"], Settings(emporium_retry_delays_ms=(100, 1000)))
    assert [q.name for q in topology.queues] == [
        "payments",
        "payments.delay.100ms",
        "payments.delay.1000ms",
        "payments.reads",
        "payments.dlq",
    ]
    [work] = topology.work
    assert topology.exchanges == () and topology.entry == work and topology.work_address == "payments"
    assert "x-dead-letter-exchange" not in topology.queries.arguments
    assert (EVENTS.name, "stock.reserved") in work.bindings
    assert (MOVES.name, "payments") in work.bindings
    assert work.arguments["x-dead-letter-exchange"] == DEAD_LETTERS.name
    assert "x-single-active-consumer" not in work.arguments
    assert topology.delays[1].arguments["x-message-ttl"] == 1000
    assert topology.delays[1].arguments["x-dead-letter-exchange"] == ""
    assert topology.delays[1].arguments["x-dead-letter-routing-key"] == "payments"
    assert topology.retry_queue(1) == "payments.delay.100ms"
    assert topology.retry_queue(2) == "payments.delay.1000ms"
    assert topology.retry_queue(3) is None


def test_inventory_is_partitioned_by_key_through_a_consistent_hash_exchange():
    topology = topology_of(ACTORS["inventory"], Settings(emporium_retry_delays_ms=(100, 1000)))
    assert [q.name for q in topology.queues] == [
        *(f"inventory.partition.{n}" for n in range(PARTITIONS["inventory"])),
        "inventory.partitions.delay.100ms",
        "inventory.partitions.delay.1000ms",
        "inventory.reads",
        "inventory.replicas",
        "inventory.dlq",
    ]
    # Consumed by every replica to count them, and sent nothing.
    assert topology.replicas is not None and topology.replicas.bindings == ()
    assert topology.replicas.arguments["x-max-length"] == 0
    [partitions] = topology.exchanges
    assert topology.entry == partitions and topology.work_address == partitions.name == "inventory.partitions"
    assert partitions.type is ExchangeType.X_CONSISTENT_HASH
    assert partitions.arguments == {"hash-header": PARTITION_KEY_HEADER}
    # The partitions exchange takes the actor's types (and moves back to its work, such as replays).
    assert (COMMANDS.name, "inventory.restock") in partitions.bindings
    assert (EVENTS.name, "order.placed") in partitions.bindings
    assert (MOVES.name, "inventory.partitions") in partitions.bindings
    for n, queue in enumerate(topology.work):
        assert queue.bindings == ((partitions.name, "1"), (MOVES.name, f"inventory.partition.{n}"))
        assert queue.arguments["x-single-active-consumer"] is True
        assert queue.arguments["x-dead-letter-routing-key"] == "inventory"  # all into inventory.dlq
    # A retry or timer goes back through the exchange: to the partition of its key.
    assert topology.delays[0].arguments["x-dead-letter-exchange"] == partitions.name
    assert topology.retry_queue(1) == "inventory.partitions.delay.100ms"
    assert topology.dlq == "inventory.dlq"
    assert unpartitioned_queues(topology) == ("inventory.delay.100ms", "inventory.delay.1000ms", "inventory")


def test_messages_about_one_sku_carry_the_sku_as_their_partition_key():
    line = OrderLine(sku="B-2", quantity=1, unit_price_cents=100)
    placed = OrderPlaced(
        order_id="o-1",
        customer_id="c-1",
        lines=[line, line.model_copy(update={"sku": "A-1"})],
        total_cents=200,
        currency="EUR",
    )
    assert Envelope.first(placed, "o-1").amqp()["headers"][PARTITION_KEY_HEADER] == "A-1"
    assert Envelope.first(Restock(sku="C-3", quantity=1)).amqp()["headers"][PARTITION_KEY_HEADER] == "C-3"
    # A contract naming no key of its own is partitioned by its conversation.
    cancelled = OrderCancelled(order_id="o-1", customer_id="c-1", reason="customer")
    caused = Envelope.first(placed, "o-1").caused(cancelled)
    assert caused.partition_key is None and caused.amqp()["headers"][PARTITION_KEY_HEADER] == "o-1"


def test_production_refuses_dev_defaults():
    with pytest.raises(ValidationError, match="RABBITMQ_URL uses the guest account"):
        Settings(emporium_env="production")
    with pytest.raises(ValidationError, match="EMPORIUM_METRICS_TOKEN is not set"):
        Settings(emporium_env="production", rabbitmq_url="amqp://edge:pw@rabbit:5672/emporium")
    edge = Settings(
        emporium_env="production",
        rabbitmq_url="amqp://edge:pw@rabbit:5672/emporium",
        emporium_metrics_token="t" * 32,
    )
    assert edge.emporium_env == "production"  # no database and no management API: nothing else asked
    with pytest.raises(ValueError, match="MONGODB_URL is the development default"):
        edge.require_production_database()
    actor = edge.model_copy(update={"mongodb_url": "mongodb://inventory:pw@mongo:27017/emporium_inventory"})
    actor.require_production_database()
