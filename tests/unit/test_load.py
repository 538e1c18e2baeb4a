"""The load generator's pure parts: where it may go, its plan (SKU mix, cancels), reading saga events."""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter

import httpx
import pytest

from edge.guard import IDEMPOTENCY_KEY_CHARS
from ops.load import (
    Cancel,
    Cancels,
    Edge,
    LoadConfig,
    LoadFailed,
    SkuMix,
    _declining,
    apportion,
    plan_orders,
    require_loopback,
    retry_after_s,
    status_after,
    units_wanted,
)
from ops.sse import ServerEvent, SseReader


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "http://127.9.9.9"]
)
def test_a_loopback_edge_may_be_loaded(url: str):
    require_loopback(url)


@pytest.mark.parametrize(
    "url", ["http://10.0.0.7:8000", "https://shop.example", "http://localhost.example.com"]
)
def test_any_other_edge_is_refused_unless_allowed(url: str):
    with pytest.raises(LoadFailed, match="not a loopback address"):
        require_loopback(url)
    require_loopback(url, allow_remote=True)


@pytest.mark.parametrize(
    ("total", "shares", "parts"),
    [
        (10, {"a": 0.5, "b": 0.5}, {"a": 5, "b": 5}),
        (7, {"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 4, "b": 2, "c": 1}),
        (25, {"hot": 0.5, "normal": 0.45, "oos": 0.05}, {"hot": 13, "normal": 11, "oos": 1}),
        (3, {"a": 1.0, "b": 0.0}, {"a": 3, "b": 0}),
    ],
)
def test_apportion_splits_exactly_in_proportion(total, shares, parts):
    assert apportion(total, shares) == parts
    assert sum(parts.values()) == total


def test_apportion_refuses_what_cannot_be_split():
    with pytest.raises(ValueError):
        apportion(5, {"a": 0.0})
    with pytest.raises(ValueError):
        apportion(5, {"a": 1.0, "b": -0.5})


def test_the_mix_names_its_skus_after_the_run_by_kind():
    skus = SkuMix(hot=2, normal=3, out_of_stock=1).skus("AB12CD")
    assert Counter(skus.values()) == {"hot": 2, "normal": 3, "out_of_stock": 1}
    assert all(re.fullmatch(r"LOAD-AB12CD-(HOT|STD|OOS)-\d", sku) for sku in skus)


def test_first_lines_follow_the_mix_exactly_and_second_lines_are_other_normal_skus():
    mix = SkuMix(
        hot=2, normal=4, out_of_stock=1, hot_share=0.5, out_of_stock_share=0.1, second_line_share=0.5
    )
    skus = mix.skus("RUN")
    orders = mix.lines(40, skus, random.Random(7))
    firsts = Counter(skus[lines[0][0]] for lines in orders)
    assert firsts == {"hot": 20, "normal": 16, "out_of_stock": 4}
    seconds = [lines[1] for lines in orders if len(lines) == 2]
    assert seconds, "half the orders should have a second line"
    assert all(skus[sku] == "normal" and quantity == 1 for sku, quantity in seconds)
    assert all(lines[0][0] != lines[1][0] for lines in orders if len(lines) == 2)
    assert all(1 <= quantity <= 2 for lines in orders for _, quantity in lines)


def test_hot_skus_are_stocked_short_normal_ones_plenty_and_the_others_not_at_all():
    mix = SkuMix(hot=1, normal=1, out_of_stock=1, hot_fill=0.5)
    skus = mix.skus("RUN")
    hot, normal, oos = sorted(skus, key=lambda sku: ("HOT" not in sku, "STD" not in sku))
    orders = [((hot, 2),), ((hot, 2), (normal, 1)), ((normal, 2),), ((oos, 1),)]
    assert units_wanted(orders) == {hot: 4, normal: 3, oos: 1}
    stock = mix.stock(skus, orders)
    assert stock[hot] == 2
    assert stock[normal] > 3
    assert stock[oos] == 0


@pytest.mark.parametrize(
    "broken",
    [
        {"hot": 0, "hot_share": 0.5},
        {"out_of_stock": 0, "out_of_stock_share": 0.1},
        {"hot_share": 0.8, "out_of_stock_share": 0.3},
        {"hot_fill": 1.5},
        {"normal": -1},
    ],
)
def test_a_mix_that_cannot_be_ordered_is_refused(broken):
    with pytest.raises(ValueError):
        SkuMix(**broken)


def test_cancels_come_in_exact_shares_and_random_ones_within_their_window():
    plans = Cancels(at_once=0.1, meanwhile=0.2, after_dispatch=0.1, window_s=3.0).plans(50, random.Random(1))
    assert Counter(plan for plan, _ in plans) == {
        Cancel.NONE: 30,
        Cancel.AT_ONCE: 5,
        Cancel.MEANWHILE: 10,
        Cancel.AFTER_DISPATCH: 5,
    }
    assert all(0 <= delay <= 3.0 for plan, delay in plans if plan is Cancel.MEANWHILE)
    assert all(delay == 0 for plan, delay in plans if plan is not Cancel.MEANWHILE)


def test_cancel_shares_above_one_are_refused():
    with pytest.raises(ValueError):
        Cancels(at_once=0.5, meanwhile=0.4, after_dispatch=0.2)


def test_the_plan_spreads_orders_over_customers_with_unique_valid_keys():
    config = LoadConfig(orders=12, customers=5)
    plan = plan_orders(config, config.mix.skus("RUN"), random.Random(3), "RUN")
    assert [order.customer for order in plan] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert len({order.key for order in plan}) == 12
    assert all(re.fullmatch(IDEMPOTENCY_KEY_CHARS, order.key) for order in plan)


def test_the_same_seed_makes_the_same_plan():
    config = LoadConfig(orders=30)
    skus = config.mix.skus("RUN")
    assert plan_orders(config, skus, random.Random(5), "RUN") == plan_orders(
        config, skus, random.Random(5), "RUN"
    )


@pytest.mark.parametrize(
    "broken",
    [{"orders": 0}, {"declined_customers": 30, "customers": 20}, {"rate_per_s": 0.0}, {"settle_s": 0.0}],
)
def test_a_config_that_cannot_run_is_refused(broken):
    with pytest.raises(ValueError):
        LoadConfig(**broken)


def test_saga_events_tell_the_status_and_the_reason_of_a_cancel():
    snapshot = ServerEvent("snapshot", '{"status": "cancelled", "cancel_reason": "timeout"}')
    assert status_after(snapshot) == ("cancelled", "timeout")
    assert status_after(ServerEvent("order.shipped", '{"order_id": "o1"}')) == ("shipped", None)
    cancelled = ServerEvent("order.cancelled", '{"order_id": "o1", "reason": "out_of_stock"}')
    assert status_after(cancelled) == ("cancelled", "out_of_stock")
    assert status_after(ServerEvent("payment.captured", '{"order_id": "o1"}')) is None
    assert status_after(ServerEvent("dropped", '{"reason": "slow"}')) is None


def test_the_sse_reader_completes_an_event_at_each_blank_line():
    reader = SseReader()
    lines = [": heartbeat", "", "event: order.placed", "id: m1", 'data: {"a":', "data: 1}", "", ""]
    events = [event for line in lines if (event := reader.feed(line)) is not None]
    assert events == [ServerEvent("order.placed", '{"a":\n1}', "m1")]
    assert events[0].json() == {"a": 1}


@pytest.mark.parametrize(
    ("status", "headers", "wait"),
    [
        (429, {"Retry-After": "7"}, 7.0),
        (503, {"Retry-After": "5"}, 5.0),
        (503, {}, None),
        (504, {}, 1.0),
        (202, {"Retry-After": "5"}, None),
        (429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
    ],
)
def test_only_admission_control_and_timeouts_are_asked_again(status, headers, wait):
    assert retry_after_s(httpx.Response(status, headers=headers)) == wait


async def test_the_load_puts_back_only_its_declines_and_leaves_an_outage_begun_meanwhile():
    # The provider's controls behind the edge's dev route; a chaos fault starts an outage mid-load.
    controls = {"decline_rate": 0.0, "error_rate": 0.0, "latency_ms": 0, "decline_customers": ["x"]}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            controls.clear()
            controls.update(json.loads(request.content))
        return httpx.Response(200, json=controls)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://127.0.0.1") as http:
        edge = Edge(http)
        async with _declining(edge, {}, ["c1", "c2"], deadline=time.monotonic() + 5):
            assert controls["decline_customers"] == ["c1", "c2", "x"]
            controls["error_rate"] = 1.0  # the fault, set behind the load's back

    assert controls == {"decline_rate": 0.0, "error_rate": 1.0, "latency_ms": 0, "decline_customers": ["x"]}
