"""Every MongoDB feature emporium relies on, one small test each.

Runs against ``MONGODB_URL`` (the embedded SecantusDB by default), so pointing it at a real mongod
replica set shows whether the code would behave the same there. Each test gets a database of its
own and drops it. Keep this list in step with what actors/ and brokers/ use.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from brokers.settings import Settings


class Deliberate(Exception):
    """Raised by a test to make a transaction fail."""


@pytest.fixture
async def client() -> AsyncIterator[AsyncMongoClient]:
    client: AsyncMongoClient = AsyncMongoClient(Settings().mongodb_url, tz_aware=True)
    yield client
    await client.close()


@pytest.fixture
async def db(client: AsyncMongoClient) -> AsyncIterator[AsyncDatabase]:
    name = f"conformance_{uuid.uuid4().hex[:12]}"
    yield client[name]
    await client.drop_database(name)


async def in_transaction(client: AsyncMongoClient, work) -> object:
    async with client.start_session() as session:
        return await session.with_transaction(work)


# --- transactions ---------------------------------------------------------------------------------


async def test_a_committed_transaction_writes_to_every_collection(client, db):
    async def work(session: AsyncClientSession) -> None:
        await db["inbox"].insert_one({"_id": "m-1"}, session=session)
        await db["state"].insert_one({"_id": "s-1"}, session=session)

    await in_transaction(client, work)

    assert await db["inbox"].count_documents({}) == await db["state"].count_documents({}) == 1


async def test_an_aborted_transaction_leaves_nothing(client, db):
    await db["state"].insert_one({"_id": "s-1", "value": 1})
    async with client.start_session() as session:
        await session.start_transaction()
        await db["state"].update_one({"_id": "s-1"}, {"$set": {"value": 2}}, session=session)
        await db["inbox"].insert_one({"_id": "m-1"}, session=session)
        await session.abort_transaction()

    assert await db["state"].find_one({"_id": "s-1"}) == {"_id": "s-1", "value": 1}
    assert await db["inbox"].count_documents({}) == 0


async def test_an_exception_in_with_transaction_aborts_and_propagates(client, db):
    async def work(session: AsyncClientSession) -> None:
        await db["state"].insert_one({"_id": "s-1"}, session=session)
        raise Deliberate("the handler failed after writing")

    with pytest.raises(Deliberate):
        await in_transaction(client, work)
    assert await db["state"].count_documents({}) == 0


async def test_a_collection_is_created_by_its_first_write_inside_a_transaction(client, db):
    # The runtime's inbox and outbox may first be written inside a handler's transaction.
    async def work(session: AsyncClientSession) -> None:
        await db["brand_new"].insert_one({"_id": 1}, session=session)

    await in_transaction(client, work)
    assert "brand_new" in await db.list_collection_names()


async def test_insert_many_inside_a_transaction(client, db):
    async def work(session: AsyncClientSession) -> None:
        await db["outbox"].insert_many([{"_id": n} for n in range(3)], session=session)

    await in_transaction(client, work)
    assert sorted(await db["outbox"].distinct("_id")) == [0, 1, 2]


async def test_reads_inside_a_transaction_see_its_own_writes_and_others_do_not(client, db):
    async with client.start_session() as session:
        await session.start_transaction()
        await db["state"].insert_one({"_id": "s-1"}, session=session)
        inside = await db["state"].find_one({"_id": "s-1"}, session=session)
        outside = await db["state"].find_one({"_id": "s-1"})
        await session.commit_transaction()

    assert inside == {"_id": "s-1"}
    assert outside is None


async def test_with_transaction_retries_a_write_conflict_so_no_update_is_lost(client, db):
    """Two transactions read the same counter, then both write it: one conflicts and runs again."""
    counters = db["counters"]
    await counters.insert_one({"_id": "c", "value": 0})
    both_have_read = asyncio.Event()
    first_reads = 0
    runs = 0

    async def increment(session: AsyncClientSession) -> None:
        nonlocal first_reads, runs
        runs += 1
        counter = await counters.find_one({"_id": "c"}, session=session)
        if not both_have_read.is_set():
            first_reads += 1
            if first_reads == 2:
                both_have_read.set()
            await both_have_read.wait()
        await counters.update_one({"_id": "c"}, {"$set": {"value": counter["value"] + 1}}, session=session)

    await asyncio.gather(in_transaction(client, increment), in_transaction(client, increment))

    assert (await counters.find_one({"_id": "c"}))["value"] == 2
    assert runs >= 3


async def test_a_duplicate_id_inside_a_transaction_raises_duplicate_key_error_and_aborts(client, db):
    # How the runtime recognises a message it has applied before.
    await db["inbox"].insert_one({"_id": "m-1"})

    async def work(session: AsyncClientSession) -> None:
        await db["state"].insert_one({"_id": "s-1"}, session=session)
        await db["inbox"].insert_one({"_id": "m-1"}, session=session)

    with pytest.raises(DuplicateKeyError):
        await in_transaction(client, work)
    assert await db["state"].count_documents({}) == 0


async def test_a_unique_index_violated_inside_a_transaction_raises_duplicate_key_error(client, db):
    await db["products"].create_index("sku", unique=True)
    await db["products"].insert_one({"_id": "p-1", "sku": "SKU-1"})

    async def work(session: AsyncClientSession) -> None:
        await db["products"].insert_one({"_id": "p-2", "sku": "SKU-1"}, session=session)

    with pytest.raises(DuplicateKeyError):
        await in_transaction(client, work)
    assert await db["products"].distinct("_id") == ["p-1"]


# --- indexes -------------------------------------------------------------------------------------


async def test_a_unique_index_refuses_a_second_document_with_the_same_key(db):
    await db["products"].create_index("sku", unique=True)
    await db["products"].insert_one({"_id": "p-1", "sku": "SKU-1"})

    with pytest.raises(DuplicateKeyError):
        await db["products"].insert_one({"_id": "p-2", "sku": "SKU-1"})
    assert (await db["products"].index_information())["sku_1"]["unique"] is True


async def test_a_compound_index_is_created_idempotently(db):
    keys = [("category", ASCENDING), ("_id", ASCENDING)]
    first = await db["products"].create_index(keys)
    again = await db["products"].create_index(keys)

    assert first == again == "category_1__id_1"
    assert (await db["products"].index_information())[first]["key"] == keys


# --- writes --------------------------------------------------------------------------------------


async def test_set_on_insert_upsert_inserts_once_and_then_leaves_the_document_alone(db):
    async def add_sku() -> tuple[int, int]:
        result = await db["stock"].update_one({"_id": "SKU-1"}, {"$setOnInsert": {"on_hand": 0}}, upsert=True)
        return result.matched_count, int(result.upserted_id is not None)

    assert await add_sku() == (0, 1)
    await db["stock"].update_one({"_id": "SKU-1"}, {"$set": {"on_hand": 7}})
    assert await add_sku() == (1, 0)
    assert await db["stock"].find_one({"_id": "SKU-1"}) == {"_id": "SKU-1", "on_hand": 7}


async def test_replace_one_with_upsert_inserts_then_replaces(db):
    await db["products"].replace_one({"_id": "p-1"}, {"name": "Lamp", "price": 1}, upsert=True)
    await db["products"].replace_one({"_id": "p-1"}, {"name": "Lamp"}, upsert=True)

    assert await db["products"].find({}).to_list() == [{"_id": "p-1", "name": "Lamp"}]


async def test_a_guarded_update_matches_nothing_when_the_guard_fails(db):
    # Optimistic concurrency: write only if the document is still what the decision was based on.
    await db["stock"].insert_one({"_id": "SKU-1", "on_hand": 5, "reserved": 0})

    stale = await db["stock"].update_one(
        {"_id": "SKU-1", "on_hand": 6, "reserved": 0}, {"$set": {"on_hand": 5}}
    )
    fresh = await db["stock"].update_one(
        {"_id": "SKU-1", "on_hand": 5, "reserved": 0}, {"$set": {"on_hand": 4}}
    )

    assert (stale.matched_count, stale.modified_count) == (0, 0)
    assert (fresh.matched_count, fresh.modified_count) == (1, 1)


async def test_find_one_and_update_returns_the_document_after_the_update(db):
    after = await db["counters"].find_one_and_update(
        {"_id": "orders"}, {"$inc": {"value": 1}}, upsert=True, return_document=ReturnDocument.AFTER
    )
    before = await db["counters"].find_one_and_update({"_id": "orders"}, {"$inc": {"value": 1}})

    assert after == {"_id": "orders", "value": 1}
    assert before == {"_id": "orders", "value": 1}


async def test_inc_adds_to_a_number_atomically(db):
    await db["counters"].insert_one({"_id": "c", "value": 10})
    await asyncio.gather(
        *(db["counters"].update_one({"_id": "c"}, {"$inc": {"value": -1}}) for _ in range(5))
    )

    assert (await db["counters"].find_one({"_id": "c"}))["value"] == 5


async def test_update_many_and_delete_many_by_filter(db):
    now = datetime.now(UTC)
    await db["outbox"].insert_many([{"_id": n, "sent_at": None, "created_at": now} for n in range(4)])

    marked = await db["outbox"].update_many(
        {"_id": {"$in": [0, 1, 2]}}, {"$set": {"sent_at": now - timedelta(days=2)}}
    )
    deleted = await db["outbox"].delete_many({"sent_at": {"$lt": now - timedelta(days=1)}})

    assert (marked.modified_count, deleted.deleted_count) == (3, 3)
    assert await db["outbox"].distinct("_id") == [3]


# --- queries -------------------------------------------------------------------------------------


async def test_in_query(db):
    await db["stock"].insert_many([{"_id": sku} for sku in ("A", "B", "C")])

    found = await db["stock"].find({"_id": {"$in": ["A", "C", "missing"]}}).to_list()

    assert sorted(doc["_id"] for doc in found) == ["A", "C"]


async def test_null_matches_both_null_and_missing_fields(db):
    # The outbox finds unsent entries with {"sent_at": None}.
    await db["outbox"].insert_many(
        [{"_id": 1, "sent_at": None}, {"_id": 2}, {"_id": 3, "sent_at": datetime.now(UTC)}]
    )

    assert sorted(await db["outbox"].distinct("_id", {"sent_at": None})) == [1, 2]


async def test_sort_skip_and_limit(db):
    await db["products"].insert_many(
        [{"_id": f"p-{n}", "category": "c" if n % 2 else "d"} for n in range(10)]
    )

    page = await db["products"].find({"category": "c"}).sort("_id", ASCENDING).skip(1).limit(2).to_list()
    newest = await db["products"].find({}, sort=[("_id", DESCENDING)]).to_list(3)

    assert [doc["_id"] for doc in page] == ["p-3", "p-5"]
    assert [doc["_id"] for doc in newest] == ["p-9", "p-8", "p-7"]


async def test_count_documents_with_a_filter_and_inside_a_session(client, db):
    await db["products"].insert_many([{"_id": n, "category": "c" if n < 3 else "d"} for n in range(5)])

    async with client.start_session() as session:
        in_session = await db["products"].count_documents({"category": "c"}, session=session)

    assert in_session == 3
    assert await db["products"].count_documents({}) == 5


async def test_find_one_with_a_projection(db):
    await db["products"].insert_one({"_id": "p-1", "sku": "SKU-1", "name": "Lamp"})

    assert await db["products"].find_one({"sku": "SKU-1"}, {"_id": 1}) == {"_id": "p-1"}


async def test_range_query_on_datetimes_sorted_oldest_first(db):
    now = datetime.now(UTC)
    await db["outbox"].insert_many([{"_id": n, "created_at": now - timedelta(seconds=n)} for n in range(4)])

    older = (
        await db["outbox"]
        .find({"created_at": {"$lte": now - timedelta(seconds=1)}}, sort=[("created_at", ASCENDING)])
        .to_list()
    )

    assert [doc["_id"] for doc in older] == [3, 2, 1]


# --- types ---------------------------------------------------------------------------------------


async def test_tz_aware_datetimes_round_trip_to_the_millisecond(db):
    moment = datetime(2026, 3, 1, 12, 30, 15, 123_456, tzinfo=UTC)
    await db["events"].insert_one({"_id": 1, "at": moment})

    stored = (await db["events"].find_one({"_id": 1}))["at"]

    assert stored.tzinfo is not None
    assert stored == moment.replace(microsecond=123_000)  # BSON dates keep milliseconds


async def test_bytes_round_trip_as_bytes(db):
    body = b'{"sku": "SKU-1"}\x00\xff'
    await db["outbox"].insert_one({"_id": 1, "body": body})

    stored = (await db["outbox"].find_one({"_id": 1}))["body"]

    assert isinstance(stored, bytes)
    assert stored == body


# --- databases -----------------------------------------------------------------------------------


async def test_list_database_names_and_drop_database(client):
    name = f"conformance_{uuid.uuid4().hex[:12]}"
    await client[name]["c"].insert_one({"_id": 1})
    assert name in await client.list_database_names()

    await client.drop_database(name)

    assert name not in await client.list_database_names()
