from actors.shipping.handlers import shipping

__all__ = ["shipping"]
