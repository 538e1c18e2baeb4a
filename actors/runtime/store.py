"""The seam between an actor and its MongoDB database."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from actors.runtime.errors import ConcurrentUpdate

V = TypeVar("V")


class Store:
    """The only code that touches an actor's data. Each actor subclasses it with named operations.

    Inside a handler the store is bound to the runtime's transaction (``session``); for queries it
    reads outside any transaction. One store serves every handler of a batch (actors.runtime.batches),
    in delivery order, so a store may read at once what the batch's messages are about (``preload``)
    and hold its writes back until they have all run (``flush``): a round trip per batch instead of
    one per message. What it holds back it must show to the handlers after (each reads what the one
    before it wrote).
    """

    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        self.db = db
        self.session = session
        # Set once the store serves a batch: what it reads it keeps, and it holds writes for flush.
        self.batched = False

    @classmethod
    async def prepare(cls, db: AsyncDatabase) -> None:
        """Create the collections and indexes the actor relies on; idempotent."""

    async def begin_batch(self, messages: Sequence[object]) -> None:
        """The runtime hands the store a batch's messages before their handlers run."""
        self.batched = True
        await self.preload(messages)

    async def preload(self, messages: Sequence[object]) -> None:
        """Before a batch's handlers run: read what they will ask for, in a few round trips."""

    async def flush(self) -> None:
        """After the batch's handlers ran, before the commit: write what was held back."""

    async def read_ids(
        self, collection: str, ids: Sequence[str], decode: Callable[[dict[str, Any]], V]
    ) -> dict[str, V]:
        """The documents of a collection with these ids, decoded, in one round trip (absent ones
        are left out)."""
        found = self.db[collection].find({"_id": {"$in": list(ids)}}, session=self.session)
        return {doc["_id"]: decode(doc) async for doc in found}

    async def read_held(
        self,
        held: Held[V | None],
        collection: str,
        ids: Sequence[str],
        decode: Callable[[dict[str, Any]], V],
    ) -> dict[str, V | None]:
        """As read_ids, None for the absent ones; in a batch, kept in ``held`` for the handlers after."""
        read: dict[str, V | None] = dict.fromkeys(ids)
        read.update(await self.read_ids(collection, ids, decode))
        if self.batched:
            held.loaded(read)
        return read


class Held(Generic[V]):
    """A batch's view of some documents by id: each as the database had it when first read, and as
    the batch's handlers have left it since (what ``flush`` writes, compared with what was read)."""

    def __init__(self) -> None:
        self.read: dict[str, V] = {}
        self.now: dict[str, V] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.now

    def __getitem__(self, key: str) -> V:
        return self.now[key]

    def __setitem__(self, key: str, value: V) -> None:
        self.now[key] = value

    def __delitem__(self, key: str) -> None:
        del self.now[key], self.read[key]

    def loaded(self, values: Mapping[str, V]) -> None:
        """Documents as just read from the database."""
        self.read.update(values)
        self.now.update(values)

    def update(self, values: Mapping[str, V]) -> None:
        self.now.update(values)

    def changed(self) -> list[tuple[V, V]]:
        """(as read, as now) of each document the batch changed, in key order."""
        return [(self.read[k], v) for k, v in sorted(self.now.items()) if v != self.read[k]]

    def written(self) -> None:
        """The changes are in the database now: what was read is what the batch left."""
        self.read.update(self.now)


def ids_named(messages: Sequence[object], field: str = "order_id") -> list[str]:
    """The ids a batch's messages name in a field (by default the orders they are about), sorted."""
    named = {getattr(message, field, None) for message in messages}
    return sorted(value for value in named if isinstance(value, str))


@dataclass(frozen=True)
class Versioned:
    """A document's new state, to be written only over the version it was read at (0: none was)."""

    id: str
    read_at: int
    document: dict[str, Any]


async def write_versions(
    collection: AsyncCollection,
    changes: Sequence[Versioned],
    *,
    session: AsyncClientSession | None,
    what: str,
) -> None:
    """Insert the new documents and update the others from the version they were read at, in one
    round trip; ConcurrentUpdate if any was written by someone else meanwhile."""
    if not changes:
        return
    writes: list[InsertOne | UpdateOne] = [
        InsertOne({"_id": c.id, **c.document})
        if c.read_at == 0
        else UpdateOne({"_id": c.id, "version": c.read_at}, {"$set": c.document})
        for c in changes
    ]
    meanwhile = ConcurrentUpdate(f"{what} of {', '.join(c.id for c in changes)} changed while being updated")
    try:
        result = await collection.bulk_write(writes, ordered=False, session=session)
    except BulkWriteError as exc:  # inserted meanwhile
        raise meanwhile from exc
    if result.inserted_count + result.matched_count != len(writes):
        raise meanwhile
