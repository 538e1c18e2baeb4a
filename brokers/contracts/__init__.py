"""Every message contract; importing this package registers all wire types."""

from brokers.contracts import (
    analytics,
    catalog,
    common,
    identity,
    inventory,
    notifications,
    orders,
    payments,
    shipping,
)

# The actors, by name: each owns the contracts module of its name. A test checks this against
# actors.registry, so processes that must not import actor code (the edge) can still name them.
OWNERS = ("identity", "catalog", "inventory", "orders", "payments", "shipping", "notifications", "analytics")


def events_of(owner: str) -> tuple[str, ...]:
    """The event types an actor publishes: those whose contract is defined in its contracts module."""
    from brokers.envelope import REGISTRY, Kind

    module = f"brokers.contracts.{owner}"
    return tuple(
        sorted(
            t
            for t, contract in REGISTRY.items()
            if contract.KIND is Kind.EVENT and contract.__module__ == module
        )
    )


__all__ = [
    "OWNERS",
    "events_of",
    "analytics",
    "catalog",
    "common",
    "identity",
    "inventory",
    "notifications",
    "orders",
    "payments",
    "shipping",
]
