"""`emporium demo` against a running shop: its three journeys end as it says they should."""

from __future__ import annotations

import asyncio
import io

from rich.console import Console

from ops.demo import run_demo
from tests.e2e.orders_support import OpenShop


async def test_the_demo_run_twice_in_a_row_waits_out_the_login_budget_and_ends_each_journey_as_expected(
    open_shop: OpenShop,
):
    # One login a second from an address: the demo's second login, right after its first, is
    # refused 429 and waited out, as a demo run again and again within a minute is.
    shop = await open_shop(emporium_login_rate_limit="1/second")
    printed = io.StringIO()
    console = Console(file=printed, width=200)
    base_url = str(shop.edge.base_url)

    for _ in range(2):
        outcomes = await asyncio.to_thread(run_demo, base_url, shop.settings, console, 30)
        assert [status for _, status in outcomes] == [expected for expected, _ in outcomes], (
            printed.getvalue()
        )

    assert [expected for expected, _ in outcomes] == ["delivered", "cancelled", "cancelled"]
    assert "/auth/login: the edge's budget is spent, waiting 1 s" in printed.getvalue()
