"""Operators' routes through the edge: analytics figures and the development simulator controls."""

from __future__ import annotations

import httpx

from brokers.contracts.shipping import AdvanceShipment
from brokers.settings import Settings
from edge.app import create_app
from ops.payment_provider import served
from tests.e2e.orders_support import place, placed_order, priced_sku
from tests.e2e.support import User, assert_problem, assert_unauthenticated, edge_settings, serving
from tests.helpers import Tap, eventually

WELL_BEHAVED = {"decline_rate": 0.0, "error_rate": 0.0, "latency_ms": 0}


async def test_stats_are_for_administrators_and_count_orders(
    start_host, edge: httpx.AsyncClient, admin: User, ann: User
) -> None:
    await start_host("catalog", "inventory", "orders", "analytics")
    await placed_order(edge, ann, [{"sku": await priced_sku(edge, admin), "quantity": 1}])

    anonymous = await edge.get("/admin/stats")
    customer = await edge.get("/admin/stats", headers=ann.headers)
    counted = await eventually(
        lambda: edge.get("/admin/stats", params={"top": 3}, headers=admin.headers),
        until=lambda r: r.status_code == 200 and sum(r.json()["orders_by_status"].values()) == 1,
        what="analytics to count the order",
    )

    assert_unauthenticated(anonymous)
    assert "administrators" in assert_problem(customer, 403)["detail"]
    assert set(counted.json()) >= {
        "orders_by_status",
        "cancellations_by_reason",
        "revenue_cents",
        "top_products",
    }
    assert_problem(await edge.get("/admin/stats", params={"top": 0}, headers=admin.headers), 422)


async def test_the_payment_provider_controls_are_proxied_to_the_simulator(
    serve_edge, admin: User, ann: User
) -> None:
    async with served() as simulator:
        edge = await serve_edge(emporium_payment_provider_url=simulator.url)

        changed = await edge.put(
            "/dev/payment-provider", json={"decline_rate": 0.25, "latency_ms": 5}, headers=admin.headers
        )
        read = await edge.get("/dev/payment-provider", headers=admin.headers)
        out_of_range = await edge.put(
            "/dev/payment-provider", json={"error_rate": 1.5}, headers=admin.headers
        )
        unknown = await edge.put("/dev/payment-provider", json={"colour": "blue"}, headers=admin.headers)
        anonymous = await edge.put("/dev/payment-provider", json=WELL_BEHAVED)
        customer = await edge.put("/dev/payment-provider", json=WELL_BEHAVED, headers=ann.headers)
        async with httpx.AsyncClient(base_url=simulator.url) as direct:
            its_own_view = (await direct.get("/control")).json()

    assert changed.status_code == 200, changed.text
    # Refused requests changed nothing: the simulator still has what the first PUT set.
    assert changed.json() == read.json() == its_own_view
    assert (read.json()["decline_rate"], read.json()["error_rate"]) == (0.25, 0.0)
    assert [e["location"] for e in assert_problem(out_of_range, 422)["errors"]] == ["body.error_rate"]
    assert [e["location"] for e in assert_problem(unknown, 422)["errors"]] == ["body.colour"]
    assert_unauthenticated(anonymous)
    assert_problem(customer, 403)


async def test_an_unreachable_simulator_is_a_503(serve_edge, admin: User) -> None:
    edge = await serve_edge(emporium_payment_provider_url="http://127.0.0.1:9")  # the discard port: refused

    problem = assert_problem(await edge.get("/dev/payment-provider", headers=admin.headers), 503)

    assert "unreachable" in problem["detail"]


async def test_advancing_a_shipment_sends_the_carrier_command_in_the_orders_saga(
    edge: httpx.AsyncClient, command_tap: Tap, start_host, admin: User
) -> None:
    await start_host("shipping")
    advance = "/dev/shipments/order-1/advance"

    response = await edge.post(advance, json={"to": "dispatched"}, headers=admin.headers)
    invalid = await edge.post(advance, json={"to": "lost"}, headers=admin.headers)

    assert response.status_code == 202, response.text
    assert response.json()["order_id"] == "order-1" and response.json()["correlation_id"] == "order-1"
    [sent] = await command_tap.wait_for(AdvanceShipment.TYPE)
    assert (sent.message_id, sent.correlation_id) == (response.json()["message_id"], "order-1")
    assert AdvanceShipment.parse(sent.body) == AdvanceShipment(order_id="order-1", to="dispatched")
    assert [e["location"] for e in assert_problem(invalid, 422)["errors"]] == ["body.to"]


async def test_dev_routes_do_not_exist_in_production(
    settings: Settings, edge: httpx.AsyncClient, admin: User, ann: User
) -> None:
    production = create_app(edge_settings(settings, emporium_env="production"))
    async with serving(production) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        controls = await client.get("/dev/payment-provider", headers=admin.headers)
        advance = await client.post(
            "/dev/shipments/order-1/advance", json={"to": "delivered"}, headers=admin.headers
        )
        documented = (await client.get("/openapi.json")).json()["paths"]
        orders = await place(client, ann, [{"sku": "MUG-1", "quantity": 1}])

    assert_problem(controls, 404)
    assert_problem(advance, 404)
    assert not any(path.startswith("/dev") for path in documented)
    assert orders.status_code not in (401, 404)  # the rest of the edge is there, tokens honoured
    assert (
        "/dev/payment-provider" in (await edge.get("/openapi.json")).json()["paths"]
    )  # and outside production
