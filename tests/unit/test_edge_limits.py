"""Rate limits per caller and per login, and the cached queue depth that load shedding reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, get_args

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from prometheus_client import REGISTRY
from pydantic import BaseModel, ValidationError

from brokers.settings import Settings
from edge.auth import Principal, optional_principal
from edge.limits import (
    OVERLOADED,
    RATE_LIMITED,
    SAGA_WORK_QUEUES,
    Budget,
    RecentDepth,
    install_limits,
    limit_caller,
    shed_orders_load,
)
from edge.link import QueueMissing
from edge.observe import ObserveRequests
from edge.problems import PROBLEM_JSON, install_problem_handlers
from tests.helpers import samples_at_start

CALLER_BUDGET = 3
LOGIN_BUDGET = 2
FAILURES_PER_PAIR = 2
FAILURES_PER_ACCOUNT = 3
ALICE = "alice@example.com"
RIGHT = "right"


class Login(BaseModel):
    email: str
    password: str = RIGHT


async def _test_principal(x_test_user: Annotated[str | None, Header()] = None) -> Principal | None:
    return Principal(user_id=x_test_user, role="customer") if x_test_user else None


MISSING = -1


class FakeLink:
    """Stands in for the RabbitLink: queue depths to report (the orders queue's unless named), and
    how often it was asked."""

    def __init__(self, depth: int, **depths: int) -> None:
        self.depth, self.depths = depth, depths
        self.reads = 0

    async def queue_depth(self, queue: str) -> int:
        self.reads += 1
        await asyncio.sleep(0)  # let concurrent requests pile up behind this read
        if self.depths.get(queue) == MISSING:
            raise QueueMissing(f"RabbitMQ has no queue {queue}")
        return self.depths.get(queue, self.depth if queue == "orders" else 0)


def _app(depth: int = 0, bound: int = 10, login_budget: int = LOGIN_BUDGET, **depths: int) -> FastAPI:
    settings = Settings(
        emporium_rate_limit=f"{CALLER_BUDGET}/minute",
        emporium_login_rate_limit=f"{login_budget}/minute",
        emporium_login_failure_limit=f"{FAILURES_PER_PAIR}/15 minutes",
        emporium_account_failure_limit=f"{FAILURES_PER_ACCOUNT}/15 minutes",
        emporium_login_slowdown_s=0.01,
        emporium_saga_backlog_bound=bound,
    )
    app = FastAPI()
    app.state.settings = settings
    app.state.link = FakeLink(depth, **depths)
    install_problem_handlers(app)
    install_limits(app, settings)
    app.add_middleware(ObserveRequests)
    app.dependency_overrides[optional_principal] = _test_principal

    @app.get("/things", dependencies=[Depends(limit_caller)])
    async def things() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/auth/login")
    async def login(request: Request, body: Login) -> dict[str, str]:
        # As edge.routes.auth.login does, with a password check standing in for identity's.
        rate_limits = request.app.state.rate_limits
        await rate_limits.throttle_login(request, body.email)
        if body.password != RIGHT:
            await rate_limits.login_failed(request, body.email)
            raise HTTPException(401, "wrong email or password")
        await rate_limits.login_succeeded(request, body.email)
        return {"ok": "yes"}

    @app.post("/auth/register")
    async def register(request: Request, body: Login) -> dict[str, str]:
        await request.app.state.rate_limits.throttle_registration(request)
        return {"ok": "yes"}

    @app.post("/orders", status_code=202, dependencies=[Depends(shed_orders_load)])
    async def place() -> dict[str, str]:
        return {"status": "accepted"}

    return app


def _client(app: FastAPI, address: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://edge")


@pytest.fixture
def app() -> FastAPI:
    return _app()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as client:
        yield client


def _refused(response: httpx.Response, status: int, type_: str) -> tuple[dict, int]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["type"] == type_
    assert problem["request_id"] == response.headers["x-request-id"]
    return problem, int(response.headers["retry-after"])


def _refusals(budget: str) -> float:
    return REGISTRY.get_sample_value("emporium_edge_rate_limited_total", {"budget": budget}) or 0.0


async def _spend(client: httpx.AsyncClient, times: int, user: str | None = None) -> list[int]:
    headers = {"X-Test-User": user} if user else {}
    return [(await client.get("/things", headers=headers)).status_code for _ in range(times)]


def test_every_budget_is_a_series_at_zero_before_any_refusal():
    # Before the first refusal of a budget, a rate over it is 0, not "no data" (and the first
    # refusal is not lost to rate(), which needs two samples).
    budgets = get_args(Budget)
    exported = samples_at_start(
        "edge.limits", "emporium_edge_rate_limited_total", [{"budget": b} for b in budgets]
    )

    assert dict(zip(budgets, exported, strict=True)) == dict.fromkeys(budgets, 0.0)


# --- per caller -------------------------------------------------------------------------------


async def test_a_caller_past_its_budget_is_told_when_to_retry(client):
    before = _refusals("caller")
    assert await _spend(client, CALLER_BUDGET, user="u-1") == [200] * CALLER_BUDGET
    refused = await client.get("/things", headers={"X-Test-User": "u-1"})
    problem, retry_after = _refused(refused, 429, RATE_LIMITED)
    assert 1 <= retry_after <= 60
    assert "too many requests from this caller" in problem["detail"]
    assert f"at most {CALLER_BUDGET} in 60 s" in problem["detail"]
    assert _refusals("caller") == before + 1


async def test_another_caller_keeps_its_own_budget(client):
    await _spend(client, CALLER_BUDGET + 1, user="u-1")
    assert await _spend(client, CALLER_BUDGET, user="u-2") == [200] * CALLER_BUDGET


async def test_a_signed_in_caller_is_counted_by_user_and_an_anonymous_one_by_address(app, client):
    # The user spends its budget from one address ...
    assert await _spend(client, CALLER_BUDGET + 1, user="u-1") == [200] * CALLER_BUDGET + [429]
    # ... which leaves that address's anonymous budget whole,
    assert await _spend(client, CALLER_BUDGET) == [200] * CALLER_BUDGET
    assert await _spend(client, 1) == [429]
    # and the user stays refused from another address, where anonymous callers are still served.
    async with _client(app, address="10.0.0.2") as elsewhere:
        assert await _spend(elsewhere, 1, user="u-1") == [429]
        assert await _spend(elsewhere, 1) == [200]


# --- logins -----------------------------------------------------------------------------------


async def _login(client: httpx.AsyncClient, email: str, password: str = RIGHT) -> httpx.Response:
    return await client.post("/auth/login", json={"email": email, "password": password})


def _slowed() -> float:
    return REGISTRY.get_sample_value("emporium_edge_slowed_logins_total") or 0.0


async def test_logins_and_registrations_are_throttled_per_client_address(app, client):
    before = _refusals("login")
    assert (await _login(client, "ann@example.com")).status_code == 200
    assert (await client.post("/auth/register", json={"email": "bob@example.com"})).status_code == 200
    problem, retry_after = _refused(await _login(client, "someone-else@example.com"), 429, RATE_LIMITED)
    assert "too many attempts from this address" in problem["detail"]
    assert retry_after >= 1
    assert _refusals("login") == before + 1
    async with _client(app, address="10.0.0.2") as elsewhere:
        assert (await _login(elsewhere, "someone-else@example.com")).status_code == 200


async def test_wrong_passwords_from_one_address_refuse_that_address_for_that_account_only():
    app = _app(login_budget=100)
    async with _client(app) as guesser:
        assert [(await _login(guesser, ALICE, "guess")).status_code for _ in range(FAILURES_PER_PAIR)] == [
            401,
            401,
        ]
        problem, retry_after = _refused(await _login(guesser, ALICE), 429, RATE_LIMITED)
        assert "too many failed logins for this account from here" in problem["detail"]
        assert ALICE not in problem["detail"]
        assert 60 < retry_after <= 15 * 60
        # The guesser's other logins go on, and so do the owner's from anywhere else.
        assert (await _login(guesser, "bob@example.com")).status_code == 200
    async with _client(app, address="10.0.0.9") as owner:
        assert (await _login(owner, ALICE)).status_code == 200


async def test_registrations_for_someone_elses_email_do_not_lock_its_owner_out():
    app = _app(login_budget=100)
    async with _client(app) as stranger:
        for _ in range(20):
            assert (await stranger.post("/auth/register", json={"email": ALICE})).status_code == 200
        assert (await _login(stranger, ALICE)).status_code == 200


async def test_a_successful_login_forgets_its_addresses_earlier_failures():
    async with _client(_app(login_budget=100)) as owner:
        for _ in range(3):
            assert (await _login(owner, ALICE, "typo")).status_code == 401
            assert (await _login(owner, ALICE)).status_code == 200


async def test_guessing_spread_over_many_addresses_slows_the_account_down_without_locking_its_owner_out():
    app = _app()
    for n in range(FAILURES_PER_ACCOUNT):
        async with _client(app, address=f"10.0.1.{n}") as guesser:
            assert (await _login(guesser, ALICE, "guess")).status_code == 401
    slowed = _slowed()
    async with _client(app, address="10.0.2.1") as owner:
        assert (await _login(owner, ALICE)).status_code == 200
        assert _slowed() == slowed + 1
        # Other accounts are not slowed.
        assert (await _login(owner, "bob@example.com")).status_code == 200
        assert _slowed() == slowed + 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("emporium_rate_limit", "lots"),
        ("emporium_login_rate_limit", "10/fortnight"),
        ("emporium_login_failure_limit", "five"),
        ("emporium_account_failure_limit", "-1/minute"),
        ("emporium_rate_limit", "1/second; 100/minute"),
        ("emporium_rate_limit_storage", "postgres://db"),
    ],
)
def test_bad_limit_settings_are_refused_at_load(field, value):
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


# --- load shedding ----------------------------------------------------------------------------


async def test_orders_are_shed_while_the_queue_is_over_its_bound():
    async with _client(_app(depth=11, bound=10)) as client:
        problem, retry_after = _refused(await client.post("/orders"), 503, OVERLOADED)
    assert (
        problem["detail"]
        == "the orders queue holds 11 messages, above the saga's backlog bound 10; retry later"
    )
    assert retry_after >= 1


async def test_orders_are_shed_while_any_queue_before_the_confirmation_is_over_the_bound():
    # A partitioned actor's backlog is in its partitions: the deepest one counts.
    for slow in ("inventory.partition.2", "payments"):
        async with _client(_app(depth=0, bound=10, **{slow: 40})) as client:
            problem, _ = _refused(await client.post("/orders"), 503, OVERLOADED)
        assert problem["detail"].startswith(f"the {slow} queue holds 40 messages")


async def test_an_actor_not_deployed_has_no_backlog_but_a_missing_orders_queue_is_an_outage():
    async with _client(_app(depth=0, bound=10, payments=MISSING)) as client:
        assert (await client.post("/orders")).status_code == 202
    async with _client(_app(depth=0, bound=10, orders=MISSING)) as client:
        assert (await client.post("/orders")).status_code == 503


async def test_orders_pass_at_the_bound():
    async with _client(_app(depth=10, bound=10)) as client:
        assert (await client.post("/orders")).status_code == 202


async def test_a_burst_of_orders_reads_the_depth_once():
    app = _app(depth=3)
    async with _client(app) as client:
        answers = await asyncio.gather(*(client.post("/orders") for _ in range(20)))
    assert [a.status_code for a in answers] == [202] * 20
    assert app.state.link.reads == len(SAGA_WORK_QUEUES)  # once per saga queue


async def test_a_stale_depth_is_read_again():
    link = FakeLink(depth=5)
    depth = RecentDepth("orders", max_age_s=0)
    assert await depth.read(link) == 5
    link.depth = 50
    assert await depth.read(link) == 50
    assert link.reads == 2
