"""Every metric the dashboards and alert rules name is one that something really exports.

emporium's and FastStream's metrics are read from the edge's /metrics after a saga run through every
actor (one order delivered, one cancelled after its capture and refunded, one request over its rate
limit); RabbitMQ's from its prometheus plugin while actors consume. A metric only counts once it has
a sample: a name that was declared but never observed would leave its panel empty.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from brokers.contracts.catalog import CreateProduct
from brokers.envelope import new_id
from brokers.settings import Settings
from ops.payment_provider import served
from tests.e2e.orders_support import placed_order, stocked_sku, wait_for_order
from tests.e2e.support import User
from tests.helpers import eventually, send
from tests.unit.test_monitoring_assets import alert_rules, named_metrics

RABBITMQ_METRICS_URL = "http://127.0.0.1:15692/metrics/per-object"
# The parcel waits for the test to move it, so that the second order can be cancelled after capture.
CARRIER_WAITS_MS = 60_000


def sample_names(exposition: str) -> set[str]:
    """The names of the samples in a Prometheus text exposition (x_total, x_bucket, ...)."""
    return {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}


def named_with(*prefixes: str) -> set[str]:
    return {name for name in named_metrics() if name.startswith(prefixes)}


async def missing_from(fetch: Callable[[], Awaitable[httpx.Response]], wanted: set[str]) -> set[str]:
    response = await fetch()
    response.raise_for_status()
    return wanted - sample_names(response.text)


async def deliver_one_and_cancel_one(edge: httpx.AsyncClient, admin: User, ann: User) -> None:
    sku = await stocked_sku(edge, admin, quantity=5)
    lines = [{"sku": sku, "quantity": 1}]
    delivered, cancelled = (await placed_order(edge, ann, lines), await placed_order(edge, ann, lines))
    for order in (delivered, cancelled):
        await wait_for_order(edge, ann, order["order_id"], until=lambda o: o["status"] == "confirmed")

    advance = await edge.post(
        f"/dev/shipments/{delivered['order_id']}/advance", json={"to": "delivered"}, headers=admin.headers
    )
    assert advance.status_code == 202, advance.text
    cancel = await edge.post(f"/orders/{cancelled['order_id']}/cancel", headers=ann.headers)
    assert cancel.status_code == 202, cancel.text

    await wait_for_order(edge, ann, delivered["order_id"], until=lambda o: o["status"] == "delivered")
    await wait_for_order(edge, ann, cancelled["order_id"], until=lambda o: o["status"] == "cancelled")


async def spend_a_rate_limit(serve_edge) -> None:
    stingy = await serve_edge(emporium_rate_limit="1/minute")
    answers = [(await stingy.get("/products")).status_code for _ in range(2)]
    assert answers == [200, 429]


async def test_every_emporium_and_faststream_metric_named_is_exported_after_a_saga(
    start_host, serve_edge, admin: User, ann: User
):
    wanted = named_with("emporium_", "faststream_")
    assert len(wanted) > 20
    async with served() as provider:
        overrides = {
            "emporium_payment_provider_url": provider.url,
            "emporium_carrier_step_ms": CARRIER_WAITS_MS,
        }
        await start_host(**overrides)
        edge = await serve_edge(**overrides)
        await deliver_one_and_cancel_one(edge, admin, ann)
        await spend_a_rate_limit(serve_edge)

        # The refund and the last projections land a moment after the order reads cancelled.
        await eventually(
            lambda: missing_from(lambda: edge.get("/metrics"), wanted),
            until=lambda missing: not missing,
            what="every metric the dashboards and alerts name to have a sample on /metrics (last=missing ones)",
        )


@pytest.fixture
async def rabbitmq_metrics() -> httpx.AsyncClient:
    async with httpx.AsyncClient(timeout=10.0) as client:
        try:
            (await client.get(RABBITMQ_METRICS_URL)).raise_for_status()
        except httpx.HTTPError as exc:
            pytest.skip(f"RabbitMQ's prometheus plugin does not answer at {RABBITMQ_METRICS_URL}: {exc!r}")
        yield client


def dead_letter_queue_pattern() -> re.Pattern[str]:
    """The queue regex of the DeadLettersPresent alert (PromQL regexes match whole values)."""
    (rule,) = [r for r in alert_rules() if r["alert"] == "DeadLettersPresent"]
    quoted = re.search(r'queue=~"((?:\\.|[^"\\])*)"', rule["expr"])[1]
    return re.compile(quoted.replace("\\\\", "\\"))


def ready_queues(exposition: str, vhost: str) -> set[str]:
    return {
        sample.labels["queue"]
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "rabbitmq_queue_messages_ready" and sample.labels["vhost"] == vhost
    }


async def test_every_rabbitmq_metric_named_is_served_by_its_plugin(
    rabbitmq_metrics: httpx.AsyncClient, start_host, broker, settings: Settings
):
    wanted = named_with("rabbitmq_")
    assert len(wanted) > 15
    actors = ("catalog", "orders", "inventory")
    # Consumers that take messages: the per-channel delivery series exist only while they do.
    await start_host(*actors)
    await send(
        broker,
        CreateProduct(product_id=new_id(), sku="MON-1", name="Gauge", category="tools", price_cents=100),
    )

    # Channel series appear with the node's next statistics emission (every 5 s by default).
    await eventually(
        lambda: missing_from(lambda: rabbitmq_metrics.get(RABBITMQ_METRICS_URL), wanted),
        until=lambda missing: not missing,
        timeout=20.0,
        what="every rabbitmq_* metric the dashboards and alerts name (last=missing ones)",
    )
    # The dead-letter alert's matcher picks exactly the actors' dead-letter queues (a new queue's
    # series also wait for the next statistics emission).
    vhost = unquote(urlsplit(settings.rabbitmq_url).path.removeprefix("/"))
    pattern = dead_letter_queue_pattern()

    async def dead_letter_queues() -> set[str]:
        exposition = (await rabbitmq_metrics.get(RABBITMQ_METRICS_URL)).text
        return {queue for queue in ready_queues(exposition, vhost) if pattern.fullmatch(queue)}

    expected = {f"{actor}.dlq" for actor in actors}
    await eventually(
        dead_letter_queues, until=lambda queues: queues == expected, timeout=20.0, what=str(expected)
    )
