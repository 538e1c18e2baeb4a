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


def events_of(owner: str) -> tuple[str, ...]:
    """The event types an actor publishes: those whose contract is defined in its contracts module."""
    from brokers.envelope import REGISTRY, Kind

    module = f"brokers.contracts.{owner}"
    return tuple(
        sorted(t for t, contract in REGISTRY.items() if contract.KIND is Kind.EVENT and contract.__module__ == module)
    )


__all__ = [
    "events_of",
    "analytics", "catalog", "common", "identity", "inventory", "notifications", "orders", "payments", "shipping",
]
