import pytest
from pydantic import ValidationError

from actors.registry import ACTORS
from actors.runtime.host import topology_of
from brokers.settings import Settings
from brokers.topology import COMMANDS, DEAD_LETTERS, EVENTS


def test_inventory_queues_bindings_and_retry_tiers():
    topology = topology_of(ACTORS["inventory"], Settings(emporium_retry_delays_ms=(100, 1000)))
    assert [q.name for q in topology.queues] == [
        "inventory",
        "inventory.delay.100ms",
        "inventory.delay.1000ms",
        "inventory.reads",
        "inventory.dlq",
    ]
    assert "x-dead-letter-exchange" not in topology.queries.arguments
    assert (COMMANDS.name, "inventory.restock") in topology.work.bindings
    assert (EVENTS.name, "order.placed") in topology.work.bindings
    assert topology.work.arguments["x-dead-letter-exchange"] == DEAD_LETTERS.name
    assert topology.delays[1].arguments["x-message-ttl"] == 1000
    assert topology.delays[1].arguments["x-dead-letter-routing-key"] == "inventory"
    assert topology.retry_queue(1) == "inventory.delay.100ms"
    assert topology.retry_queue(2) == "inventory.delay.1000ms"
    assert topology.retry_queue(3) is None


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
