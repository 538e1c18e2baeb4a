from actors.notifications.handlers import notifications

__all__ = ["notifications"]
