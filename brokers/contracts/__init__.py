"""Every message contract; importing this package registers all wire types."""

from brokers.contracts import catalog, common, inventory, orders, shipping

__all__ = ["catalog", "common", "inventory", "orders", "shipping"]
