"""The embedded MongoDB as emporium runs it (ops/embedded_mongodb.py) through a client's kill -9.

- What it acknowledged is still there after its own kill -9: the runtime acks a message only after
  its transaction committed, and a database that forgot that commit would lose the message for good.
- A transaction whose client died is aborted within seconds, not after 60: until then the documents
  it wrote stay locked, and every message about them waits.

The server is one of the test's own (ops/servers.py), started the way `emporium chaos` and ops/dev.sh
start theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession

from ops.embedded_mongodb import TRANSACTION_LIFETIME_S
from ops.servers import EmbeddedMongo, scratch_directory

COMMITS = 300


@pytest.fixture
def mongo() -> Iterator[EmbeddedMongo]:
    with scratch_directory("emporium-test-mongodb-") as directory:
        server = EmbeddedMongo(directory / "mongodb")
        server.start()
        try:
            yield server
        finally:
            server.stop()


async def _commit_one_by_one(url: str, count: int) -> None:
    async with AsyncMongoClient(url, serverSelectionTimeoutMS=30_000) as client:
        for number in range(count):

            async def insert(session: AsyncClientSession, number: int = number) -> None:
                await client.durability.commits.insert_one({"_id": number}, session=session)

            async with client.start_session() as session:
                await session.with_transaction(insert)


async def _count(url: str) -> int:
    async with AsyncMongoClient(url, serverSelectionTimeoutMS=30_000) as client:
        return await client.durability.commits.count_documents({})


async def test_every_acknowledged_commit_survives_kill_9_right_after_it(mongo: EmbeddedMongo) -> None:
    await _commit_one_by_one(mongo.url, COMMITS)
    await asyncio.to_thread(mongo.kill)  # at once: the last commits are milliseconds old
    await asyncio.to_thread(mongo.start)

    assert await _count(mongo.url) == COMMITS


async def test_a_transaction_its_client_abandoned_stops_locking_its_document_within_seconds(
    mongo: EmbeddedMongo,
) -> None:
    async with (
        AsyncMongoClient(mongo.url) as dead,
        AsyncMongoClient(mongo.url, serverSelectionTimeoutMS=30_000) as alive,
    ):
        stock = alive.durability.stock
        await stock.insert_one({"_id": "LAMP-1", "reserved": 0})
        # The client that will "die": it writes inside a transaction and is never heard of again
        # (no commit, no abort, no endSessions), as a process killed there.
        abandoned = dead.start_session()
        await abandoned.start_transaction()
        await dead.durability.stock.update_one(
            {"_id": "LAMP-1"}, {"$inc": {"reserved": 1}}, session=abandoned
        )

        async def reserve(session: AsyncClientSession) -> None:
            await stock.update_one({"_id": "LAMP-1"}, {"$inc": {"reserved": 2}}, session=session)

        async with alive.start_session() as session:
            # Before: 60 s, the server's default lifetime of a transaction.
            await asyncio.wait_for(session.with_transaction(reserve), TRANSACTION_LIFETIME_S + 20)

        assert (await stock.find_one({"_id": "LAMP-1"}))["reserved"] == 2  # the abandoned write is gone
