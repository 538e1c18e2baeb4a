from actors.catalog.handlers import catalog

__all__ = ["catalog"]
