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

__all__ = [
    "analytics", "catalog", "common", "identity", "inventory", "notifications", "orders", "payments", "shipping",
]
