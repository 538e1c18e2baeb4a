"""The payment-provider simulator: charges and refunds over HTTP, for development, tests and chaos runs.

It behaves like a card processor where it matters to emporium:

- every charge and refund carries an idempotency key: the same key answers the same answer again and
  never charges twice, even for requests arriving at the same moment (a unique index on the key
  decides, not a read before the write); the same key with another request is a 409;
- a simulated outage (``error_rate``) answers 503 before anything happens, so a retry may succeed;
  it takes lookups down too (GET /charges/by-key/{key}: what is held under a charge's key);
- latency is added after the outcome is decided and recorded, so a caller that gives up waiting does
  not know whether it was charged: exactly the case idempotency keys exist for;
- declines (``decline_rate``, or every charge of a customer in ``decline_customers``) are answers
  (402), recorded under their key like captures.

Its ledger (charges, declines included, and refunds) is the provider's own data, kept in MongoDB in
``<EMPORIUM_DB_PREFIX>_provider`` (a collection per kind), so it survives a restart of the simulator
and can be compared with what payments recorded: GET /ledger pages through it, GET /ledger/{key}
is one idempotency key's (emporium's key is the order id). The behaviour is set at run time
(PUT /control replaces it, GET /control reads it) and the counts of what this process answered are
at GET /stats; both live in memory and start afresh with the process.
"""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from brokers.settings import Settings, get_settings

IdempotencyKey = Annotated[str, Field(min_length=1, max_length=200)]
Cents = Annotated[int, Field(gt=0, le=100_000_000)]
LEDGER_PAGE_LIMIT = 500


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChargeRequest(Body):
    idempotency_key: IdempotencyKey
    amount_cents: Cents
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    customer_id: str = Field(min_length=1, max_length=64)


class RefundRequest(Body):
    idempotency_key: IdempotencyKey
    charge_id: str = Field(min_length=1, max_length=64)
    amount_cents: Cents


class Control(Body):
    """How the provider behaves; every field left out takes its well-behaved default."""

    decline_rate: float = Field(0.0, ge=0.0, le=1.0)
    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    latency_ms: int = Field(0, ge=0, le=60_000)
    decline_customers: list[str] = Field(default_factory=list, max_length=1_000)


class Stats(BaseModel):
    requests: int = 0  # charge, refund and lookup requests answered, whatever the answer
    lookups: int = 0  # of which lookups by idempotency key
    charges: int = 0  # captures made
    refunds: int = 0  # refunds made
    declines: int = 0
    errors: int = 0  # simulated outages (503)
    conflicts: int = 0  # an idempotency key reused with another request (409)
    captured_cents: int = 0
    refunded_cents: int = 0


class Refund(BaseModel):
    refund_id: str
    idempotency_key: str
    charge_id: str
    amount_cents: int
    at: datetime


class Charge(BaseModel):
    """A charge as the ledger holds it: a capture (refunded in part or whole, or not) or a decline."""

    charge_id: str
    idempotency_key: str
    status: Literal["captured", "refunded", "partially_refunded", "declined"]
    amount_cents: int
    currency: str
    customer_id: str
    refunded_cents: int = 0
    at: datetime
    refunds: list[Refund] = Field(default_factory=list)

    @property
    def captured(self) -> bool:
        return self.status != "declined"


class LedgerPage(BaseModel):
    """Charges ordered by idempotency key (then time), each with its refunds."""

    items: list[Charge]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict[str, Any]


class NoSuchCharge(Exception):
    """A refund names no capture of this ledger."""


class RefundExceedsCharge(Exception):
    """A refund asks for more than is left on its charge."""


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _now() -> datetime:
    return datetime.now(UTC)


def _charge(doc: dict[str, Any], refunds: list[Refund]) -> Charge:
    """A charge document as the API shows it; its status follows from what is left to refund."""
    if doc["outcome"] == "declined":
        status, refunded = "declined", 0
    else:
        refunded = doc["amount_cents"] - doc["refundable_cents"]
        left = doc["refundable_cents"]
        status = "captured" if refunded == 0 else "refunded" if left == 0 else "partially_refunded"
    return Charge(
        charge_id=doc["_id"],
        idempotency_key=doc["idempotency_key"],
        status=status,
        amount_cents=doc["amount_cents"],
        currency=doc["currency"],
        customer_id=doc["customer_id"],
        refunded_cents=refunded,
        at=doc["at"],
        refunds=refunds,
    )


def _refund(doc: dict[str, Any]) -> Refund:
    return Refund(refund_id=doc["_id"], **{k: v for k, v in doc.items() if k != "_id"})


def ledger_database(settings: Settings) -> str:
    return settings.database_name("provider")


class Ledger:
    """The provider's books: ``charges`` (captures and declines) and ``refunds``, each unique by key.

    A capture's ``refundable_cents`` goes down with each refund, in the refund's transaction and only
    if enough is left, so refunds racing on one charge never give back more than it took.
    """

    def __init__(self, client: AsyncMongoClient, db: AsyncDatabase) -> None:
        self._client = client
        self._charges = db["charges"]
        self._refunds = db["refunds"]

    @classmethod
    @asynccontextmanager
    async def opened(cls, settings: Settings) -> AsyncIterator[Ledger]:
        # retryWrites=false: the single writes here are outside transactions, and the embedded
        # MongoDB slows down 30x once it holds ~10k retryable-write records.
        client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, retryWrites=False, tz_aware=True)
        try:
            db = client[ledger_database(settings)]
            await db["charges"].create_index("idempotency_key", unique=True)
            await db["refunds"].create_index("idempotency_key", unique=True)
            await db["refunds"].create_index("charge_id")
            yield cls(client, db)
        finally:
            await client.close()

    async def reachable(self) -> bool:
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    async def charge_under(self, key: str) -> dict[str, Any] | None:
        return await self._charges.find_one({"idempotency_key": key})

    async def refund_under(self, key: str) -> dict[str, Any] | None:
        return await self._refunds.find_one({"idempotency_key": key})

    async def record_charge(self, doc: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The charge kept under the document's key: this one (True), or a rival's that came first."""
        try:
            await self._charges.insert_one(doc)
        except DuplicateKeyError:
            return await self._winner(self.charge_under, doc["idempotency_key"]), False
        return doc, True

    async def record_refund(self, doc: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Like ``record_charge``, taking the amount off its charge; NoSuchCharge, RefundExceedsCharge."""
        async with self._client.start_session() as session:
            try:
                await session.with_transaction(lambda s: self._refund_within(s, doc))
            except DuplicateKeyError:
                return await self._winner(self.refund_under, doc["idempotency_key"]), False
        return doc, True

    async def _refund_within(self, session: AsyncClientSession, doc: dict[str, Any]) -> None:
        charge_id, amount = doc["charge_id"], doc["amount_cents"]
        # The key first: a rival with the same key that committed meanwhile makes this a duplicate,
        # answered with the rival's refund, rather than a refusal for lack of money left.
        await self._refunds.insert_one(doc, session=session)
        taken = await self._charges.update_one(
            {"_id": charge_id, "outcome": "captured", "refundable_cents": {"$gte": amount}},
            {"$inc": {"refundable_cents": -amount}},
            session=session,
        )
        if taken.matched_count == 1:
            return
        charge = await self._charges.find_one({"_id": charge_id, "outcome": "captured"}, session=session)
        if charge is None:
            raise NoSuchCharge(f"no charge {charge_id}")
        left = charge["refundable_cents"]
        raise RefundExceedsCharge(f"refund of {amount} exceeds the {left} left on {charge_id}")

    @staticmethod
    async def _winner(find: Any, key: str) -> dict[str, Any]:
        winner = await find(key)
        if winner is None:  # a duplicate key is a committed document: this is a bug
            raise RuntimeError(f"idempotency key {key!r} was taken, yet nothing is recorded under it")
        return winner

    async def charge(self, charge_id: str) -> Charge | None:
        return await self._shown(await self._charges.find_one({"_id": charge_id}))

    async def charge_of_key(self, key: str) -> Charge | None:
        return await self._shown(await self.charge_under(key))

    async def _shown(self, doc: dict[str, Any] | None) -> Charge | None:
        return None if doc is None else (await self._with_refunds([doc]))[0]

    async def page(self, *, offset: int, limit: int, key: str | None = None) -> LedgerPage:
        """Charges (of one key, or all), by key then time, with their refunds."""
        chosen = {} if key is None else {"idempotency_key": key}
        in_order = [("idempotency_key", ASCENDING), ("at", ASCENDING), ("_id", ASCENDING)]
        docs = await self._charges.find(chosen).sort(in_order).skip(offset).limit(limit).to_list()
        total = await self._charges.count_documents(chosen)
        return LedgerPage(items=await self._with_refunds(docs), total=total, offset=offset, limit=limit)

    async def _with_refunds(self, docs: list[dict[str, Any]]) -> list[Charge]:
        refunds: dict[str, list[Refund]] = {doc["_id"]: [] for doc in docs}
        found = self._refunds.find({"charge_id": {"$in": list(refunds)}})
        async for refund in found.sort([("at", ASCENDING), ("_id", ASCENDING)]):
            refunds[refund["charge_id"]].append(_refund(refund))
        return [_charge(doc, refunds[doc["_id"]]) for doc in docs]


class Provider:
    """The simulator's decisions over its ledger; behaviour and counts are this process's own."""

    def __init__(self, ledger: Ledger, seed: int | None = None) -> None:
        self.ledger = ledger
        self._random = random.Random(seed)
        self.control = Control()
        self.stats = Stats()

    async def charge(self, request: ChargeRequest) -> Answer:
        self.stats.requests += 1
        kept = await self.ledger.charge_under(request.idempotency_key)
        if kept is None:
            if self._outage():
                return _OUTAGE
            kept, fresh = await self.ledger.record_charge(self._decide_charge(request))
            if fresh:
                self._count_charge(kept)
        return self._charge_answer(request, kept)

    async def refund(self, request: RefundRequest) -> Answer:
        self.stats.requests += 1
        kept = await self.ledger.refund_under(request.idempotency_key)
        if kept is None:
            if self._outage():
                return _OUTAGE
            refund = {
                "_id": _new_id("re"),
                "idempotency_key": request.idempotency_key,
                "charge_id": request.charge_id,
                "amount_cents": request.amount_cents,
                "at": _now(),
            }
            try:
                kept, fresh = await self.ledger.record_refund(refund)
            except NoSuchCharge as exc:
                return Answer(404, {"status": "not_found", "detail": str(exc)})
            except RefundExceedsCharge as exc:
                return Answer(422, {"status": "refused", "detail": str(exc)})
            if fresh:
                self.stats.refunds += 1
                self.stats.refunded_cents += request.amount_cents
        return self._refund_answer(request, kept)

    async def lookup(self, key: str) -> Answer:
        """The charge held under a key, refunds included; a read, yet down with the rest of the provider."""
        self.stats.requests += 1
        self.stats.lookups += 1
        if self._outage():
            return _OUTAGE
        found = await self.ledger.charge_of_key(key)
        if found is None:
            return Answer(404, {"status": "not_found", "detail": f"no charge under key {key!r}"})
        return Answer(200, found.model_dump(mode="json"))

    def _outage(self) -> bool:
        if self._random.random() < self.control.error_rate:
            self.stats.errors += 1
            return True
        return False

    def _decide_charge(self, request: ChargeRequest) -> dict[str, Any]:
        declined_by_rate = self._random.random() < self.control.decline_rate
        declined = request.customer_id in self.control.decline_customers or declined_by_rate
        return {
            "_id": _new_id("ch"),
            "idempotency_key": request.idempotency_key,
            "outcome": "declined" if declined else "captured",
            "amount_cents": request.amount_cents,
            "refundable_cents": 0 if declined else request.amount_cents,
            "currency": request.currency,
            "customer_id": request.customer_id,
            "at": _now(),
        }

    def _count_charge(self, doc: dict[str, Any]) -> None:
        if doc["outcome"] == "declined":
            self.stats.declines += 1
        else:
            self.stats.charges += 1
            self.stats.captured_cents += doc["amount_cents"]

    def _conflict(self, key: str, operation: str) -> Answer:
        self.stats.conflicts += 1
        detail = f"idempotency key {key!r} was used for another {operation}"
        return Answer(409, {"status": "conflict", "detail": detail})

    def _charge_answer(self, request: ChargeRequest, kept: dict[str, Any]) -> Answer:
        asked = (request.amount_cents, request.currency, request.customer_id)
        if asked != (kept["amount_cents"], kept["currency"], kept["customer_id"]):
            return self._conflict(request.idempotency_key, "charge")
        if kept["outcome"] == "declined":
            return Answer(402, {"status": "declined", "reason": "card_declined"})
        return Answer(201, {"charge_id": kept["_id"], "status": "captured"})

    def _refund_answer(self, request: RefundRequest, kept: dict[str, Any]) -> Answer:
        if (request.charge_id, request.amount_cents) != (kept["charge_id"], kept["amount_cents"]):
            return self._conflict(request.idempotency_key, "refund")
        return Answer(
            201,
            {
                "refund_id": kept["_id"],
                "charge_id": kept["charge_id"],
                "amount_cents": kept["amount_cents"],
                "status": "refunded",
            },
        )


_OUTAGE = Answer(503, {"status": "error", "detail": "simulated provider outage"})


def _provider(request: Request) -> Provider:
    return request.app.state.provider


Simulated = Annotated[Provider, Depends(_provider)]
Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=LEDGER_PAGE_LIMIT)]


def create_app(settings: Settings | None = None, *, seed: int | None = None) -> FastAPI:
    """The simulator as an ASGI app over the ledger the settings name (default: the environment's);
    ``seed`` makes its declines and outages repeatable. The ledger is opened by the app's lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Ledger.opened(settings) as ledger:
            app.state.provider = Provider(ledger, seed)
            yield

    app = FastAPI(title="payment-provider simulator", docs_url=None, redoc_url=None, lifespan=lifespan)

    async def answered(provider: Provider, answer: Answer) -> JSONResponse:
        latency_ms = provider.control.latency_ms
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        return JSONResponse(answer.body, status_code=answer.status_code)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(provider: Simulated) -> JSONResponse:
        # Ready once its ledger answers: a charge it cannot record must not be taken.
        if await provider.ledger.reachable():
            return JSONResponse({"status": "ready"})
        return JSONResponse(
            {"status": "not ready", "detail": "the ledger's MongoDB does not answer"}, status_code=503
        )

    @app.post("/charges")
    async def charge(request: ChargeRequest, provider: Simulated) -> JSONResponse:
        return await answered(provider, await provider.charge(request))

    @app.post("/refunds")
    async def refund(request: RefundRequest, provider: Simulated) -> JSONResponse:
        return await answered(provider, await provider.refund(request))

    @app.get("/charges/by-key/{idempotency_key}", response_model=Charge)
    async def get_charge_of_key(idempotency_key: str, provider: Simulated) -> JSONResponse:
        return await answered(provider, await provider.lookup(idempotency_key))

    @app.get("/charges/{charge_id}", response_model=Charge)
    async def get_charge(charge_id: str, provider: Simulated) -> Charge | JSONResponse:
        found = await provider.ledger.charge(charge_id)
        if found is None:
            return JSONResponse({"status": "not_found", "detail": f"no charge {charge_id}"}, status_code=404)
        return found

    @app.get("/ledger")
    async def get_ledger(provider: Simulated, offset: Offset = 0, limit: Limit = 100) -> LedgerPage:
        return await provider.ledger.page(offset=offset, limit=limit)

    @app.get("/ledger/{idempotency_key}")
    async def get_key_ledger(
        idempotency_key: str, provider: Simulated, offset: Offset = 0, limit: Limit = 100
    ) -> LedgerPage:
        return await provider.ledger.page(offset=offset, limit=limit, key=idempotency_key)

    @app.put("/control")
    async def put_control(control: Control, provider: Simulated) -> Control:
        provider.control = control
        return control

    @app.get("/control")
    async def get_control(provider: Simulated) -> Control:
        return provider.control

    @app.get("/stats")
    async def get_stats(provider: Simulated) -> Stats:
        return provider.stats.model_copy()

    return app


class SimulatorControl:
    """Drives a running simulator over HTTP (tests, chaos runs, a dev route, the invariant checker):
    behaviour, counts and the ledger."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def behave(self, **control: Any) -> Control:
        """Replace the simulator's behaviour; what is left out takes its well-behaved default."""
        response = await self._http.put("/control", json=Control(**control).model_dump())
        response.raise_for_status()
        return Control.model_validate(response.json())

    async def stats(self) -> Stats:
        response = await self._http.get("/stats")
        response.raise_for_status()
        return Stats.model_validate(response.json())

    async def ledger(self, key: str | None = None) -> list[Charge]:
        """Every charge of the ledger (or of one idempotency key) with its refunds, page by page."""
        path = "/ledger" if key is None else f"/ledger/{quote(key, safe='')}"
        charges: list[Charge] = []
        while True:
            asked = {"offset": len(charges), "limit": LEDGER_PAGE_LIMIT}
            response = await self._http.get(path, params=asked)
            response.raise_for_status()
            page = LedgerPage.model_validate(response.json())
            charges.extend(page.items)
            if not page.items or len(charges) >= page.total:
                return charges


def serve(host: str, port: int, *, seed: int | None = None) -> None:
    """Run the simulator until interrupted (the `emporium payment-provider` command), its ledger in
    the database the environment's settings name."""
    uvicorn.run(create_app(seed=seed), host=host, port=port, log_level="warning")


@dataclass(frozen=True)
class RunningSimulator:
    url: str
    control: SimulatorControl


@asynccontextmanager
async def served(
    host: str = "127.0.0.1", port: int = 0, *, seed: int | None = None, settings: Settings | None = None
) -> AsyncIterator[RunningSimulator]:
    """Run the simulator inside the running event loop while the block runs (port 0: a free port).

    Its ledger is in the database ``settings`` name; without settings, in a scratch database of its
    own that is dropped afterwards (callers that do not look at the ledger share nothing).
    """
    scratch = settings is None
    if settings is None:
        settings = get_settings().model_copy(update={"emporium_db_prefix": f"sim{uuid.uuid4().hex[:12]}"})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    app = create_app(settings, seed=seed)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    url = f"http://{host}:{sock.getsockname()[1]}"
    try:
        while not server.started:
            if task.done():
                await task  # raises what stopped it, if anything did
                raise RuntimeError("the payment-provider simulator did not start")
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as http:
            yield RunningSimulator(url, SimulatorControl(http))
    finally:
        server.should_exit = True
        await task
        sock.close()
        if scratch:
            await _drop_ledger(settings)


async def _drop_ledger(settings: Settings) -> None:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, retryWrites=False)
    try:
        await client.drop_database(ledger_database(settings))
    finally:
        await client.close()
