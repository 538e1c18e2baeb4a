"""The payment-provider simulator: charges and refunds over HTTP, for development, tests and chaos runs.

It behaves like a card processor where it matters to emporium:

- every charge and refund carries an idempotency key: the same key answers the same answer again and
  never charges twice; the same key with another request is a 409;
- a simulated outage (``error_rate``) answers 503 before anything happens, so a retry may succeed;
- latency is added after the outcome is decided and recorded, so a caller that gives up waiting does
  not know whether it was charged: exactly the case idempotency keys exist for;
- declines (``decline_rate``, or every charge of a customer in ``decline_customers``) are answers
  (402), recorded under their key like captures.

The behaviour is set at run time (PUT /control replaces it, GET /control reads it) and the counts of
what happened are at GET /stats. State is in memory: it is a simulator.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

IdempotencyKey = Annotated[str, Field(min_length=1, max_length=200)]
Cents = Annotated[int, Field(gt=0, le=100_000_000)]


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
    requests: int = 0  # charge and refund requests answered, whatever the answer
    charges: int = 0  # captures made
    refunds: int = 0  # refunds made
    declines: int = 0
    errors: int = 0  # simulated outages (503)
    conflicts: int = 0  # an idempotency key reused with another request (409)
    captured_cents: int = 0
    refunded_cents: int = 0


class Charge(BaseModel):
    charge_id: str
    idempotency_key: str
    status: Literal["captured", "refunded", "partially_refunded"]
    amount_cents: int
    currency: str
    customer_id: str
    refunded_cents: int = 0


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict[str, Any]


@dataclass(frozen=True)
class _Remembered:
    """An answer given under an idempotency key, and the request it answered."""

    request: Body
    answer: Answer


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


class Provider:
    """The simulator's state. One lock guards it; nothing waits while holding it."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.control = Control()
        self.stats = Stats()
        self._charges: dict[str, Charge] = {}
        self._answers: dict[tuple[str, str], _Remembered] = {}

    def set_control(self, control: Control) -> None:
        with self._lock:
            self.control = control

    def charge(self, request: ChargeRequest) -> Answer:
        with self._lock:
            return self._answer("charge", request, self._decide_charge)

    def refund(self, request: RefundRequest) -> Answer:
        with self._lock:
            return self._answer("refund", request, self._decide_refund)

    def find_charge(self, charge_id: str) -> Charge | None:
        with self._lock:
            return self._charges.get(charge_id)

    def snapshot(self) -> Stats:
        with self._lock:
            return self.stats.model_copy()

    def _answer(self, operation: str, request: Any, decide: Callable[[Any], Answer]) -> Answer:
        """The answer given before under this key (a 409 for another request), else a new decision."""
        self.stats.requests += 1
        key = (operation, request.idempotency_key)
        remembered = self._answers.get(key)
        if remembered is not None and remembered.request != request:
            self.stats.conflicts += 1
            detail = f"idempotency key {request.idempotency_key!r} was used for another {operation}"
            return Answer(409, {"status": "conflict", "detail": detail})
        if remembered is not None:
            return remembered.answer
        answer = decide(request)
        # Outages and refused requests changed nothing: only real outcomes are kept under the key.
        if answer.status_code in (201, 402):
            self._answers[key] = _Remembered(request, answer)
        return answer

    def _outage(self) -> bool:
        if self._random.random() < self.control.error_rate:
            self.stats.errors += 1
            return True
        return False

    def _decide_charge(self, request: ChargeRequest) -> Answer:
        if self._outage():
            return Answer(503, {"status": "error", "detail": "simulated provider outage"})
        declined_by_rate = self._random.random() < self.control.decline_rate
        if request.customer_id in self.control.decline_customers or declined_by_rate:
            self.stats.declines += 1
            return Answer(402, {"status": "declined", "reason": "card_declined"})
        charge = Charge(
            charge_id=_new_id("ch"), idempotency_key=request.idempotency_key, status="captured",
            amount_cents=request.amount_cents, currency=request.currency, customer_id=request.customer_id,
        )
        self._charges[charge.charge_id] = charge
        self.stats.charges += 1
        self.stats.captured_cents += charge.amount_cents
        return Answer(201, {"charge_id": charge.charge_id, "status": "captured"})

    def _decide_refund(self, request: RefundRequest) -> Answer:
        if self._outage():
            return Answer(503, {"status": "error", "detail": "simulated provider outage"})
        charge = self._charges.get(request.charge_id)
        if charge is None:
            return Answer(404, {"status": "not_found", "detail": f"no charge {request.charge_id}"})
        refundable = charge.amount_cents - charge.refunded_cents
        if request.amount_cents > refundable:
            detail = f"refund of {request.amount_cents} exceeds the {refundable} left on {charge.charge_id}"
            return Answer(422, {"status": "refused", "detail": detail})
        refunded = charge.refunded_cents + request.amount_cents
        status = "refunded" if refunded == charge.amount_cents else "partially_refunded"
        self._charges[charge.charge_id] = charge.model_copy(
            update={"refunded_cents": refunded, "status": status}
        )
        self.stats.refunds += 1
        self.stats.refunded_cents += request.amount_cents
        refund_id = _new_id("re")
        return Answer(
            201,
            {"refund_id": refund_id, "charge_id": charge.charge_id, "amount_cents": request.amount_cents,
             "status": "refunded"},
        )


def create_app(seed: int | None = None) -> FastAPI:
    """The simulator as an ASGI app; ``seed`` makes its declines and outages repeatable."""
    provider = Provider(seed)
    app = FastAPI(title="payment-provider simulator", docs_url=None, redoc_url=None)
    app.state.provider = provider

    async def answered(answer: Answer) -> JSONResponse:
        latency_ms = provider.control.latency_ms
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        return JSONResponse(answer.body, status_code=answer.status_code)

    @app.post("/charges")
    async def charge(request: ChargeRequest) -> JSONResponse:
        return await answered(provider.charge(request))

    @app.post("/refunds")
    async def refund(request: RefundRequest) -> JSONResponse:
        return await answered(provider.refund(request))

    @app.get("/charges/{charge_id}", response_model=Charge)
    async def get_charge(charge_id: str) -> Charge | JSONResponse:
        found = provider.find_charge(charge_id)
        if found is None:
            return JSONResponse({"status": "not_found", "detail": f"no charge {charge_id}"}, status_code=404)
        return found

    @app.put("/control")
    async def put_control(control: Control) -> Control:
        provider.set_control(control)
        return control

    @app.get("/control")
    async def get_control() -> Control:
        return provider.control

    @app.get("/stats")
    async def get_stats() -> Stats:
        return provider.snapshot()

    return app


class SimulatorControl:
    """Drives a running simulator over HTTP (tests, chaos runs, a dev route): behaviour and counts."""

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


def serve(host: str, port: int, *, seed: int | None = None) -> None:
    """Run the simulator until interrupted (the `emporium payment-provider` command)."""
    uvicorn.run(create_app(seed), host=host, port=port, log_level="warning")


@dataclass(frozen=True)
class RunningSimulator:
    url: str
    control: SimulatorControl


@asynccontextmanager
async def served(
    host: str = "127.0.0.1", port: int = 0, *, seed: int | None = None
) -> AsyncIterator[RunningSimulator]:
    """Run the simulator inside the running event loop while the block runs (port 0: a free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(create_app(seed), log_level="warning", lifespan="off"))
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
