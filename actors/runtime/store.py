"""The seam between an actor and its MongoDB database."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase


class Store:
    """The only code that touches an actor's data. Each actor subclasses it with named operations.

    Inside a handler the store is bound to the handler's transaction (``session``); for queries it
    reads outside any transaction.
    """

    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        self.db = db
        self.session = session

    @classmethod
    async def prepare(cls, db: AsyncDatabase) -> None:
        """Create the collections and indexes the actor relies on; idempotent."""
