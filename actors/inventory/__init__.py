from actors.inventory.handlers import inventory

__all__ = ["inventory"]
