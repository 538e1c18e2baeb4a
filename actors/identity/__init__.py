from actors.identity.handlers import identity

__all__ = ["identity"]
