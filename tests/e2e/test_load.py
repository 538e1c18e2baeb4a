"""`emporium load` against the real edge, every actor and the payment-provider simulator, in-process."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

from brokers.settings import Settings
from ops.invariants import check
from ops.load import Cancel, Cancels, LoadConfig, LoadResult, OrderRecord, SkuMix, run_load
from ops.load_report import FIGURE_NAME, summarise, write_report
from ops.payment_provider import served
from tests.helpers import eventually

# 24 orders: 40% want the one hot SKU (stocked for half of it), 10% the out-of-stock one; customer 0
# of 4 has a card the provider declines; 2 orders each are cancelled at once, meanwhile, after dispatch.
CONFIG = LoadConfig(
    orders=24,
    concurrency=8,
    customers=4,
    declined_customers=1,
    mix=SkuMix(hot=1, normal=2, out_of_stock=1, hot_share=0.4, out_of_stock_share=0.1, hot_fill=0.5),
    cancels=Cancels(at_once=2 / 24, meanwhile=2 / 24, after_dispatch=2 / 24, window_s=1.0),
    duration_s=30,
    settle_s=40,
    setup_s=40,
    seed=11,
)
FAST_SAGA = {"emporium_carrier_step_ms": 200, "emporium_order_deadline_ms": 20_000}
# Tighter than the 2 x 4 + 1 sign-ins the set-up makes at once: the load must wait out the 429s.
LOGIN_BUDGET = "3/second"


def _first_kind(result: LoadResult, order: OrderRecord) -> str:
    return result.skus[order.planned.lines[0][0]]


async def test_a_load_follows_every_accepted_order_to_its_end(
    settings: Settings, start_host, serve_edge, tmp_path: Path
):
    async with served() as provider:
        overrides = {"emporium_payment_provider_url": provider.url, **FAST_SAGA}
        await start_host(**overrides)
        edge = await serve_edge(**overrides, emporium_login_rate_limit=LOGIN_BUDGET)

        result = await run_load(str(edge.base_url), CONFIG, settings=settings)
        # The checker compares payments with the provider's ledger: ask while the simulator runs.
        report = await eventually(
            lambda: check(settings.model_copy(update=overrides), grace=timedelta(seconds=5)),
            until=lambda r: r.clean,
            what="a clean invariant check",
        )
    assert report.orders >= CONFIG.orders

    summary = summarise(result)
    assert summary.rate_limited > 0, summary.answers  # ... and every customer got in all the same:
    assert summary.accepted == CONFIG.orders, summary.not_accepted
    assert summary.ended == summary.accepted, summary.outcomes
    assert sum(summary.outcomes.values()) == summary.accepted
    assert sorted(result.accepted_ids) == sorted({order.order_id for order in result.orders})
    assert summary.outcomes.get("delivered", 0) > 0

    for order in result.orders:
        if _first_kind(result, order) == "out_of_stock":
            assert order.outcome in {"cancelled: out_of_stock", "cancelled: customer"}, order
        if order.planned.cancel is Cancel.AFTER_DISPATCH:
            assert order.cancel.answer == 409, order  # dispatched or already ended: too late
            assert order.outcome != "cancelled: customer", order
        if order.planned.cancel is Cancel.AT_ONCE:
            assert order.cancel.answer in {202, 409}, order  # 409: it ended before the cancel came

    declined = [order for order in result.orders if order.planned.customer == 0]
    assert all(order.outcome != "delivered" for order in declined)
    surely_declined = [
        order
        for order in declined
        if _first_kind(result, order) == "normal" and order.planned.cancel is Cancel.NONE
    ]
    assert surely_declined, "the seed's plan gives the declined customer a plain order of a normal SKU"
    assert all(order.outcome == "cancelled: payment_declined" for order in surely_declined)

    delivered_units: Counter[str] = Counter()
    for order in result.orders:
        if order.outcome == "delivered":
            delivered_units.update({sku: quantity for sku, quantity in order.planned.lines})
    assert all(delivered_units[sku] <= units for sku, units in result.stock.items()), (
        delivered_units,
        result.stock,
    )

    paths = write_report(result, tmp_path / "load")
    assert paths.figure.name == FIGURE_NAME
    assert paths.figure.read_bytes().startswith(b"\x89PNG")
    markdown = paths.markdown.read_text()
    assert f"]({FIGURE_NAME})" in markdown
    assert f"| accepted | {CONFIG.orders} |" in markdown
