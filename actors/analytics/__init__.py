from actors.analytics.handlers import analytics

__all__ = ["analytics"]
