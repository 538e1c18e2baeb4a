"""What the embedded MongoDB acknowledged is still there after kill -9.

The runtime acks a message only after its transaction committed; a database that forgets a commit
it acknowledged loses that message for good. The server here is one of the test's own
(ops/servers.py), started the way `emporium chaos` and ops/dev.sh start theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession

from ops.servers import EmbeddedMongo, scratch_directory

pytestmark = pytest.mark.integration

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
