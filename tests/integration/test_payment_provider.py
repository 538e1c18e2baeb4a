"""The payment-provider simulator, served over HTTP by uvicorn on a free port, its ledger in MongoDB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from ops.payment_provider import served


@pytest.fixture
async def provider() -> AsyncIterator[httpx.AsyncClient]:
    async with served() as simulator, httpx.AsyncClient(base_url=simulator.url, timeout=5) as client:
        yield client


def charge(key: str = "order-1", amount: int = 2_500, customer: str = "c1") -> dict:
    return {"idempotency_key": key, "amount_cents": amount, "currency": "EUR", "customer_id": customer}


async def stats(client: httpx.AsyncClient) -> dict:
    response = await client.get("/stats")
    response.raise_for_status()
    return response.json()


async def control(client: httpx.AsyncClient, **behaviour) -> None:
    (await client.put("/control", json=behaviour)).raise_for_status()


async def test_a_charge_is_captured_once_per_idempotency_key(provider):
    first = await provider.post("/charges", json=charge())
    again = await provider.post("/charges", json=charge())

    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert first.json()["status"] == "captured"
    found = (await provider.get(f"/charges/{first.json()['charge_id']}")).json()
    assert (found["status"], found["amount_cents"], found["idempotency_key"]) == (
        "captured",
        2_500,
        "order-1",
    )
    assert await stats(provider) == {
        "requests": 2,
        "lookups": 0,
        "charges": 1,
        "refunds": 0,
        "declines": 0,
        "errors": 0,
        "conflicts": 0,
        "captured_cents": 2_500,
        "refunded_cents": 0,
    }


async def test_the_same_key_with_another_amount_is_a_conflict_and_charges_nothing_more(provider):
    await provider.post("/charges", json=charge(amount=2_500))
    conflict = await provider.post("/charges", json=charge(amount=9_999))

    assert conflict.status_code == 409
    assert "order-1" in conflict.json()["detail"]
    counts = await stats(provider)
    assert (counts["charges"], counts["conflicts"], counts["captured_cents"]) == (1, 1, 2_500)


async def test_concurrent_requests_with_one_key_make_one_charge(provider):
    answers = await asyncio.gather(*(provider.post("/charges", json=charge()) for _ in range(20)))

    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["charge_id"] for a in answers}) == 1
    assert (await stats(provider))["charges"] == 1
    assert len((await provider.get("/ledger")).json()["items"]) == 1


async def test_concurrent_requests_with_one_key_get_one_answer_though_each_would_decide_apart(provider):
    # Half the decisions are declines: rivals that each decided for themselves would answer apart.
    await control(provider, decline_rate=0.5)
    answers = await asyncio.gather(*(provider.post("/charges", json=charge()) for _ in range(20)))

    assert len({(a.status_code, a.text) for a in answers}) == 1
    (kept,) = (await provider.get("/ledger/order-1")).json()["items"]
    assert kept["status"] in {"captured", "declined"}


async def test_a_listed_customer_is_declined_and_the_decline_is_the_keys_answer(provider):
    await control(provider, decline_customers=["c-blocked"])

    declined = await provider.post("/charges", json=charge(customer="c-blocked"))
    again = await provider.post("/charges", json=charge(customer="c-blocked"))
    other = await provider.post("/charges", json=charge(key="order-2"))

    assert declined.status_code == again.status_code == 402
    assert declined.json() == {"status": "declined", "reason": "card_declined"}
    assert other.status_code == 201
    counts = await stats(provider)
    assert (counts["declines"], counts["charges"]) == (1, 1)


async def test_an_outage_answers_503_remembers_nothing_and_the_retry_can_succeed(provider):
    await control(provider, error_rate=1.0)
    outage = await provider.post("/charges", json=charge())
    await control(provider)
    retry = await provider.post("/charges", json=charge())

    assert outage.status_code == 503
    assert retry.status_code == 201
    counts = await stats(provider)
    assert (counts["errors"], counts["charges"]) == (1, 1)


async def test_a_caller_that_times_out_was_charged_all_the_same_and_its_retry_gets_that_charge(provider):
    await control(provider, latency_ms=400)
    with pytest.raises(httpx.ReadTimeout):
        await provider.post("/charges", json=charge(), timeout=0.1)
    await control(provider)
    retry = await provider.post("/charges", json=charge())

    assert retry.status_code == 201
    assert (await stats(provider))["charges"] == 1


async def test_a_refund_gives_back_a_charge_once(provider):
    charge_id = (await provider.post("/charges", json=charge())).json()["charge_id"]
    refund = {"idempotency_key": "refund-order-1", "charge_id": charge_id, "amount_cents": 2_500}

    first = await provider.post("/refunds", json=refund)
    again = await provider.post("/refunds", json=refund)

    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert first.json()["refund_id"].startswith("re_")
    assert (await provider.get(f"/charges/{charge_id}")).json()["status"] == "refunded"
    counts = await stats(provider)
    assert (counts["refunds"], counts["refunded_cents"]) == (1, 2_500)


async def test_refunds_that_cannot_be_made_are_refused_and_change_nothing(provider):
    charge_id = (await provider.post("/charges", json=charge())).json()["charge_id"]

    def refund(key: str, charge: str, amount: int) -> dict:
        return {"idempotency_key": key, "charge_id": charge, "amount_cents": amount}

    await provider.post("/refunds", json=refund("r1", charge_id, 1_000))

    too_much = await provider.post("/refunds", json=refund("r2", charge_id, 2_000))
    unknown = await provider.post("/refunds", json=refund("r3", "ch_nope", 1))
    reused = await provider.post("/refunds", json=refund("r1", charge_id, 500))

    assert (too_much.status_code, unknown.status_code, reused.status_code) == (422, 404, 409)
    assert "exceeds the 1500 left" in too_much.json()["detail"]
    assert (await provider.get(f"/charges/{charge_id}")).json()["status"] == "partially_refunded"
    counts = await stats(provider)
    assert (counts["refunds"], counts["refunded_cents"]) == (1, 1_000)


async def test_control_is_replaced_by_put_and_refused_when_out_of_range(provider):
    await control(provider, decline_rate=0.25, latency_ms=5)
    bad = await provider.put("/control", json={"error_rate": 2})
    unknown_field = await provider.put("/control", json={"eror_rate": 1})

    assert (bad.status_code, unknown_field.status_code) == (422, 422)
    assert (await provider.get("/control")).json() == {
        "decline_rate": 0.25,
        "error_rate": 0.0,
        "latency_ms": 5,
        "decline_customers": [],
    }


@pytest.mark.parametrize(
    "body",
    [
        charge(amount=0),
        charge() | {"currency": "euro"},
        charge() | {"idempotency_key": ""},
        charge() | {"surprise": True},
        {"amount_cents": 100},
    ],
)
async def test_a_malformed_charge_is_refused_and_changes_nothing(provider, body):
    answer = await provider.post("/charges", json=body)

    assert answer.status_code == 422
    assert (await stats(provider))["requests"] == 0
    assert (await provider.get("/charges/anything")).status_code == 404


async def test_a_seed_makes_declines_repeatable():
    async def outcomes(seed: int) -> list[int]:
        async with served(seed=seed) as simulator, httpx.AsyncClient(base_url=simulator.url) as client:
            await control(client, decline_rate=0.5)
            return [(await client.post("/charges", json=charge(key=f"k{i}"))).status_code for i in range(30)]

    first, second = await outcomes(7), await outcomes(7)
    assert first == second
    assert set(first) == {201, 402}


async def test_concurrent_refunds_of_one_charge_never_give_back_more_than_it_took(provider):
    charge_id = (await provider.post("/charges", json=charge(amount=2_500))).json()["charge_id"]
    refunds = [{"idempotency_key": f"r{i}", "charge_id": charge_id, "amount_cents": 1_000} for i in range(8)]
    same_key = [{"idempotency_key": "r-same", "charge_id": charge_id, "amount_cents": 500}] * 8

    answers = await asyncio.gather(*(provider.post("/refunds", json=r) for r in refunds + same_key))

    # 2 x 1,000 and the 500 fit in 2,500 whatever the order they commit in; a third 1,000 never does.
    codes = [a.status_code for a in answers]
    assert sorted(codes[:8]) == [201, 201] + [422] * 6
    assert set(codes[8:]) == {201} and len({a.json()["refund_id"] for a in answers[8:]}) == 1
    (kept,) = (await provider.get("/ledger/order-1")).json()["items"]
    assert (kept["status"], kept["refunded_cents"], len(kept["refunds"])) == ("refunded", 2_500, 3)


async def test_the_ledger_and_its_keys_answers_survive_a_restart(settings, mongo):
    async with served(settings=settings) as simulator, httpx.AsyncClient(base_url=simulator.url) as client:
        await control(client, decline_customers=["c-blocked"])
        captured = (await client.post("/charges", json=charge(key="o-1"))).json()
        refund = {"idempotency_key": "refund-o-1", "charge_id": captured["charge_id"], "amount_cents": 2_500}
        refunded = (await client.post("/refunds", json=refund)).json()
        await client.post("/charges", json=charge(key="o-2", customer="c-blocked"))

    async with served(settings=settings) as simulator, httpx.AsyncClient(base_url=simulator.url) as client:
        again = await client.post("/charges", json=charge(key="o-1"))
        refund_again = await client.post("/refunds", json=refund)
        declined_again = await client.post("/charges", json=charge(key="o-2", customer="c-blocked"))
        ledger = await simulator.control.ledger()
        counts = await stats(client)

    assert (again.status_code, again.json()) == (201, captured)
    assert (refund_again.status_code, refund_again.json()) == (201, refunded)
    assert declined_again.status_code == 402  # the answer under the key, though no customer is blocked now
    assert [(c.idempotency_key, c.status, c.refunded_cents) for c in ledger] == [
        ("o-1", "refunded", 2_500),
        ("o-2", "declined", 0),
    ]
    assert [r.refund_id for r in ledger[0].refunds] == [refunded["refund_id"]]
    assert (counts["charges"], counts["refunds"], counts["declines"]) == (0, 0, 0)


async def test_the_ledger_is_read_page_by_page_and_per_key(provider):
    for key in ("o-3", "o-1", "o-2"):
        await provider.post("/charges", json=charge(key=key))

    first = (await provider.get("/ledger", params={"limit": 2})).json()
    rest = (await provider.get("/ledger", params={"offset": 2, "limit": 2})).json()
    one = (await provider.get("/ledger/o-2")).json()
    too_big = await provider.get("/ledger", params={"limit": 501})

    assert [c["idempotency_key"] for c in first["items"] + rest["items"]] == ["o-1", "o-2", "o-3"]
    assert (first["total"], rest["offset"]) == (3, 2)
    assert [c["idempotency_key"] for c in one["items"]] == ["o-2"] and one["total"] == 1
    assert too_big.status_code == 422


async def test_the_simulator_is_ready_once_its_ledger_answers(provider):
    assert (await provider.get("/health")).json() == {"status": "ok"}
    ready = await provider.get("/ready")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
