"""MongoDB operator injection through the real edge, with catalog, inventory, orders and identity
running behind it.

Query operators (``{"$gt": ""}``, ``{"$where": ...}``, ``{"$ne": null}``, ``["$gt"]``, the string
``"$where"``) and keys with ``$`` or ``.`` go into every field of every write body, into path and
query parameters and into a header. Each is refused 422 (an application/problem+json naming the
field, no stack trace), nothing is sent to an actor and no document of any database changes. Where
a string is a legal value (a product named ``"$where"``), it is plain text: stored and read back
as it was written, and matched as text when listed by.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pymongo import AsyncMongoClient

from brokers.settings import Settings
from tests.e2e.orders_support import stocked_sku
from tests.e2e.support import PASSWORD, User, assert_problem, new_product, wait_for_json
from tests.helpers import Tap
from tests.integration.test_message_injection import snapshot, wait_until_quiet

ACTORS = ("identity", "catalog", "inventory", "orders")
OPERATOR_VALUES: tuple[Any, ...] = (
    {"$gt": ""},
    {"$where": "sleep(1000)"},
    {"$ne": None},
    ["$gt"],
    {"a.b": 1},
    {"$set": {"role": "admin"}},
)
WHERE = "$where"  # a legal value wherever free text is, refused anywhere else
OPERATOR_KEYS: tuple[dict[str, Any], ...] = (
    {"$where": "sleep(1000)"},
    {"a.b": 1},
    {"$set": {"price_cents": 0}},
)
PATH_SEGMENTS = ('{"$gt":""}', WHERE, "a.b", "[$ne]")
INTERNALS = ("Traceback", 'File "', "pymongo", "bson")


@dataclass(frozen=True)
class Shop:
    """What exists, as the edge names it, and who may write what."""

    admin: User
    customer: User
    product_id: str
    sku: str


@dataclass(frozen=True)
class Attempt:
    """One hostile request, and where its 422 must say the bad input is ("body.lines.0.sku")."""

    method: str
    path: str
    who: User
    location: str
    json: Any = None
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    async def send(self, edge: httpx.AsyncClient) -> httpx.Response:
        headers = {**self.who.headers, **self.headers}
        return await edge.request(self.method, self.path, json=self.json, params=self.params, headers=headers)


@dataclass(frozen=True)
class WriteBody:
    """A write route, a valid body for it, its fields, and those where any string is a legal value."""

    method: str
    path: str
    body: dict[str, Any]
    fields: tuple[str, ...]
    free_text: frozenset[str] = frozenset()
    # Fields a rule of the whole body checks (the password policy): such an error is the body's.
    checked_whole: frozenset[str] = frozenset()
    customer: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def attempt(self, shop: Shop, name: str, body: dict[str, Any]) -> Attempt:
        """This route with ``body``, refused because of the field ``name``."""
        who = shop.customer if self.customer else shop.admin
        location = "body" if name in self.checked_whole else f"body.{name}"
        return Attempt(self.method, self.path, who, location, body, headers=self.headers)


def write_bodies(shop: Shop) -> list[WriteBody]:
    product = f"/products/{shop.product_id}"
    return [
        WriteBody(
            "POST",
            "/products",
            new_product(),
            ("sku", "name", "description", "category", "price_cents", "currency"),
            frozenset({"name", "description", "category"}),
        ),
        WriteBody(
            "PATCH",
            product,
            {"name": "Renamed"},
            ("name", "description", "category"),
            frozenset({"name", "description", "category"}),
        ),
        WriteBody("PATCH", f"{product}/price", {"price_cents": 1499}, ("price_cents",)),
        WriteBody("POST", f"/inventory/{shop.sku}/restock", {"quantity": 5}, ("quantity",)),
        WriteBody(
            "POST",
            "/orders",
            {"lines": [{"sku": shop.sku, "quantity": 1}]},
            ("lines", "lines.0", "lines.0.sku", "lines.0.quantity"),
            customer=True,
            headers={"Idempotency-Key": "hostile-order-0001"},
        ),
        WriteBody(
            "POST",
            "/auth/register",
            {"email": "eve@example.com", "name": "Eve", "password": PASSWORD},
            ("email", "name", "password"),
            frozenset({"name"}),
            checked_whole=frozenset({"password"}),
        ),
        # A password is any string: "$where" is a wrong one (401), so it is left to the plain-text test.
        WriteBody(
            "POST",
            "/auth/login",
            {"email": shop.customer.email, "password": PASSWORD},
            ("email", "password"),
            frozenset({"password"}),
        ),
        WriteBody("POST", "/admin/dead-letters/orders.dlq/replay", {"message_id": "m-1"}, ("message_id",)),
        WriteBody(
            "PUT",
            "/dev/payment-provider",
            {"latency_ms": 0},
            ("decline_rate", "error_rate", "latency_ms", "decline_customers"),
        ),
        WriteBody("POST", "/dev/shipments/o-hostile/advance", {"to": "dispatched"}, ("to",)),
    ]


def _with(body: Any, path: str, value: Any) -> Any:
    """A copy of ``body`` with the field at the dotted ``path`` ("lines.0.sku") set to ``value``."""
    head, _, rest = path.partition(".")
    if isinstance(body, list):
        copy: Any = list(body)
        index = int(head)
        copy[index] = _with(copy[index], rest, value) if rest else value
        return copy
    return {**body, head: _with(body[head], rest, value) if rest else value}


def body_attempts(shop: Shop) -> list[Attempt]:
    attempts = []
    for write in write_bodies(shop):
        for name in write.fields:
            values = OPERATOR_VALUES if name in write.free_text else (*OPERATOR_VALUES, WHERE)
            attempts += [write.attempt(shop, name, _with(write.body, name, value)) for value in values]
        attempts += [write.attempt(shop, next(iter(key)), {**write.body, **key}) for key in OPERATOR_KEYS]
    return attempts


def path_attempts(shop: Shop) -> list[Attempt]:
    """Operators as path parameters of every route that has one."""
    routes = [
        ("GET", "/products/{}", None, "product_id", shop.admin),
        ("PATCH", "/products/{}", {"name": "x"}, "product_id", shop.admin),
        ("PATCH", "/products/{}/price", {"price_cents": 1}, "product_id", shop.admin),
        ("GET", "/inventory/{}", None, "sku", shop.admin),
        ("POST", "/inventory/{}/restock", {"quantity": 1}, "sku", shop.admin),
        ("GET", "/orders/{}", None, "order_id", shop.customer),
        ("POST", "/orders/{}/cancel", None, "order_id", shop.customer),
        ("GET", "/orders/{}/timeline", None, "order_id", shop.customer),
        ("GET", "/orders/{}/events", None, "order_id", shop.customer),
        ("GET", "/admin/users/{}", None, "user_id", shop.admin),
        ("POST", "/admin/users/{}/deactivate", None, "user_id", shop.admin),
        ("GET", "/admin/dead-letters/{}", None, "queue", shop.admin),
        ("DELETE", "/admin/dead-letters/{}", None, "queue", shop.admin),
        ("POST", "/admin/dead-letters/{}/replay", {}, "queue", shop.admin),
        ("POST", "/dev/shipments/{}/advance", {"to": "dispatched"}, "order_id", shop.admin),
    ]
    return [
        Attempt(method, template.format(quote(segment, safe="")), who, f"path.{name}", body)
        for method, template, body, name, who in routes
        for segment in PATH_SEGMENTS
    ]


def query_and_header_attempts(shop: Shop) -> list[Attempt]:
    """Operators in query parameters (PHP/Express-style ``name[$op]`` keys too) and in a header."""
    queries = [
        ("/products", {"category[$ne]": "x"}, "query.category[$ne]", shop.admin),
        ("/products", {"offset[$gt]": "0"}, "query.offset[$gt]", shop.admin),
        ("/products", {"limit": "$gt"}, "query.limit", shop.admin),
        ("/orders", {"limit[$ne]": "1"}, "query.limit[$ne]", shop.customer),
        ("/orders", {"offset": WHERE}, "query.offset", shop.customer),
        ("/admin/stats", {"top[$gt]": "1"}, "query.top[$gt]", shop.admin),
        ("/admin/dead-letters/orders.dlq", {"limit": WHERE}, "query.limit", shop.admin),
    ]
    idempotency_key = {"Idempotency-Key": f"{WHERE}-0001"}
    return [
        *(Attempt("GET", path, who, location, params=params) for path, params, location, who in queries),
        Attempt(
            "POST", "/products", shop.admin, "header.Idempotency-Key", new_product(), headers=idempotency_key
        ),
        Attempt(
            "POST",
            "/orders",
            shop.customer,
            "header.Idempotency-Key",
            {"lines": [{"sku": shop.sku, "quantity": 1}]},
            headers=idempotency_key,
        ),
    ]


def refusal_fault(attempt: Attempt, response: httpx.Response) -> str | None:
    """What is wrong with the answer to a hostile request, or None when it is a clean 422."""
    if response.status_code != 422 or any(internal in response.text for internal in INTERNALS):
        return f"{response.status_code} {response.text[:300]}"
    problem = assert_problem(response, 422)
    locations = [error["location"] for error in problem["errors"]]
    if not any(location.startswith(attempt.location) for location in locations):
        return f"422 names {locations}, not {attempt.location}"
    return None


@pytest.fixture
async def shop(admin: User, ann: User, edge: httpx.AsyncClient, start_host) -> Shop:
    """Catalog, inventory and orders besides identity; a product with stock on hand."""
    await start_host("catalog", "inventory", "orders")
    sku = await stocked_sku(edge, admin)
    [product] = (await edge.get("/products", params={"limit": 1})).json()["items"]
    return Shop(admin, ann, product["product_id"], sku)


async def test_operators_anywhere_in_a_request_are_refused_and_change_nothing(
    shop: Shop, edge: httpx.AsyncClient, mongo: AsyncMongoClient, settings: Settings, command_tap: Tap
):
    await wait_until_quiet(mongo, settings, ACTORS)
    before = await snapshot(mongo, settings, ACTORS)
    assert before["catalog.products"] and before["inventory.stock"] and before["identity.users"]
    attempts = [*body_attempts(shop), *path_attempts(shop), *query_and_header_attempts(shop)]

    faults = {}
    for attempt in attempts:
        response = await attempt.send(edge)
        if (fault := refusal_fault(attempt, response)) is not None:
            faults[f"{attempt.method} {attempt.path} {attempt.params or attempt.json}"] = fault

    assert not faults, "\n".join(f"{request}: {fault}" for request, fault in faults.items())
    assert await snapshot(mongo, settings, ACTORS) == before
    # Nothing was sent either: a restock sent now is the first command any actor gets.
    restock = await edge.post(
        f"/inventory/{shop.sku}/restock", json={"quantity": 1}, headers=shop.admin.headers
    )
    assert restock.status_code == 202, restock.text
    [first] = await command_tap.wait_for()
    assert first.message_id == restock.json()["message_id"]
    assert len(attempts) > 250  # every field, parameter and header above was tried


async def test_a_body_that_is_not_utf8_json_is_an_invalid_request(shop: Shop, edge: httpx.AsyncClient):
    response = await edge.post(
        "/products",
        content=b'{"name": "\xff\xfe"}',
        headers=shop.admin.with_headers(**{"Content-Type": "application/json"}),
    )

    problem = assert_problem(response, 422)
    assert [error["location"] for error in problem["errors"]] == ["body"]


async def test_logging_in_with_operators_gets_a_422_and_no_token(shop: Shop, edge: httpx.AsyncClient):
    for credentials in (
        {"email": {"$gt": ""}, "password": {"$gt": ""}},
        {"email": shop.customer.email, "password": {"$ne": None}},
        {"email": {"$regex": ".*"}, "password": PASSWORD},
    ):
        response = await edge.post("/auth/login", json=credentials)

        assert_problem(response, 422)
        assert "access_token" not in response.text


async def test_strings_that_look_like_operators_are_plain_text(shop: Shop, edge: httpx.AsyncClient):
    looks_like = {"name": WHERE, "description": '{"$ne": null}', "category": "$gt"}
    created = await edge.post("/products", json=new_product(**looks_like), headers=shop.admin.headers)
    assert created.status_code == 202, created.text
    path = created.headers["location"]

    product = await wait_for_json(edge, path)
    assert {name: product[name] for name in looks_like} == looks_like
    listed = (await edge.get("/products", params={"category": "$gt"})).json()
    assert [item["product_id"] for item in listed["items"]] == [product["product_id"]]
    assert (await edge.get("/products", params={"category": "$ne"})).json()["total"] == 0

    renamed = await edge.patch(path, json={"name": "a.b", "category": "$set"}, headers=shop.admin.headers)
    assert renamed.status_code == 202, renamed.text
    await wait_for_json(edge, path, until=lambda p: (p["name"], p["category"]) == ("a.b", "$set"))

    email = f"where-{uuid.uuid4().hex[:8]}@example.com"
    registered = await edge.post("/auth/register", json={"email": email, "name": WHERE, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    assert registered.json()["name"] == WHERE
    wrong_password = await edge.post("/auth/login", json={"email": email, "password": WHERE})
    assert_problem(wrong_password, 401)
    assert "access_token" not in wrong_password.text


def _fullwidth(text: str) -> str:
    """The text in full-width forms (ＡＢＣ＠...), which NFKC folds back to ASCII."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


async def test_values_of_another_json_type_are_refused_not_converted(
    shop: Shop, edge: httpx.AsyncClient, command_tap: Tap
):
    order = shop.customer.with_headers(**{"Idempotency-Key": f"strict-{uuid.uuid4().hex}"})
    attempts = (
        [
            Attempt(
                "POST",
                "/orders",
                shop.customer,
                "body.lines.0.quantity",
                {"lines": [{"sku": shop.sku, "quantity": q}]},
            )
            for q in ("2", 2.0, True)
        ]
        + [
            Attempt("POST", f"/inventory/{shop.sku}/restock", shop.admin, "body.quantity", {"quantity": q})
            for q in ("5", 5.0)
        ]
        + [
            Attempt(
                "PATCH",
                f"/products/{shop.product_id}/price",
                shop.admin,
                "body.price_cents",
                {"price_cents": p},
            )
            for p in ("1299", 1299.0)
        ]
        + [
            Attempt(
                "POST",
                "/auth/login",
                shop.customer,
                "body.password",
                {"email": shop.customer.email, "password": 42},
            )
        ]
    )

    faults = {}
    for attempt in attempts:
        headers = order if attempt.path == "/orders" else {}
        response = await edge.request(
            attempt.method, attempt.path, json=attempt.json, headers={**attempt.who.headers, **headers}
        )
        if (fault := refusal_fault(attempt, response)) is not None:  # was: 202, the value converted
            faults[f"{attempt.path} {attempt.json}"] = fault

    assert not faults, faults
    restock = await edge.post(
        f"/inventory/{shop.sku}/restock", json={"quantity": 1}, headers=shop.admin.headers
    )
    [first] = await command_tap.wait_for()
    assert first.message_id == restock.json()["message_id"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"quantity": ' + b"9" * 5_000 + b"}", "more than 4300 digits"),
        (b'{"quantity": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "nests arrays or objects too deeply"),
    ],
    ids=["a 5,000-digit integer", "5,000 nested arrays"],
)
async def test_json_pythons_parser_cannot_read_is_an_invalid_request(
    shop: Shop, edge: httpx.AsyncClient, body, says
):
    response = await edge.post(
        f"/inventory/{shop.sku}/restock",
        content=body,
        headers=shop.admin.with_headers(**{"Content-Type": "application/json"}),
    )

    problem = assert_problem(response, 422)  # was: 400
    assert [error["location"] for error in problem["errors"]] == ["body"]
    assert says in problem["detail"]


async def test_look_alike_emails_are_refused_and_full_width_ones_are_the_same_address(
    shop: Shop, edge: httpx.AsyncClient
):
    ann = shop.customer
    cyrillic_a = "\u0430"
    for look_alike in (f"p{cyrillic_a}ypal-{uuid.uuid4().hex[:6]}@example.com", f"x@ex{cyrillic_a}mple.com"):
        response = await edge.post(
            "/auth/register", json={"email": look_alike, "name": "Mallory", "password": PASSWORD}
        )
        problem = assert_problem(response, 422)  # was: 201, a second "paypal" beside the real one
        assert "mixes scripts (CYRILLIC and LATIN)" in problem["detail"]
        assert [error["location"] for error in problem["errors"]] == ["body.email"]

    full_width = _fullwidth(ann.email)
    again = await edge.post("/auth/register", json={"email": full_width, "name": "Ann", "password": PASSWORD})
    assert assert_problem(again, 409)["type"] == "urn:emporium:problem:email-taken"
    assert (
        await edge.post("/auth/login", json={"email": full_width, "password": PASSWORD})
    ).status_code == 200
