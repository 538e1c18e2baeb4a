from actors.orders.handlers import orders

__all__ = ["orders"]
