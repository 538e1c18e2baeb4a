"""Every dashboard panel shows data in a real Prometheus scraping a shop that took orders, with each
Grafana variable set to one value (as an operator looking at one actor or one vhost sets it)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from actors.registry import ACTORS
from brokers.management import vhost_of
from tests.e2e.orders_support import stocked_sku
from tests.e2e.prometheus import scraping
from tests.e2e.support import User, create_product, sign_up
from tests.helpers import eventually
from tests.unit.test_monitoring_assets import dashboards, panels

# (panel, actor) pairs with nothing to show, truthfully: "No data" is what Grafana should say.
NOTHING_TO_SHOW = {
    ("Events emitted per second by actor and type", "analytics"),  # analytics publishes no event
    ("Events published from the outbox per second", "analytics"),
}
# Grafana's own variables, as a dashboard showing the last minutes renders them.
_GRAFANA = {"__rate_interval": "1m", "__range": "15m", "__interval": "15s"}


def _rendered(expression: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m[1], m[0]), expression)


def _variable_choices(dashboard: dict, vhost: str) -> list[dict[str, str]]:
    """One rendering per single value of the dashboard's query variable (none: one rendering)."""
    names = {v["name"] for v in dashboard["templating"]["list"] if v["type"] == "query"}
    if "actor" in names:
        return [{**_GRAFANA, "actor": actor} for actor in sorted(ACTORS)]
    if "vhost" in names:
        return [{**_GRAFANA, "vhost": vhost}]
    return [dict(_GRAFANA)]


async def test_every_panel_has_data_with_each_variable_set_to_one_value(
    open_shop, admin: User, ann: User, bob: User, tmp_path: Path
):
    # Customers register all along here: more than one address's login budget of a real shop allows.
    shop = await open_shop(emporium_login_rate_limit="1000/minute")
    vhost = vhost_of(shop.settings.rabbitmq_url)
    plenty = await stocked_sku(shop.edge, admin, quantity=1_000)
    scarce = await stocked_sku(shop.edge, admin, quantity=1)
    await shop.provider.behave(decline_customers=[bob.user_id])

    async def shoppers() -> None:
        """Steady traffic, as on a live shop: customers registering, new products, delivered orders,
        out-of-stock and declined ones."""
        for customer in itertools.count():
            await sign_up(shop.edge, f"shopper{customer}")
            await create_product(shop.edge, admin)
            await shop.order(ann, plenty)
            await shop.order(ann, scarce, quantity=5)
            await shop.order(bob, plenty)
            await asyncio.sleep(0.5)  # a pace, not a wait for anything

    async with scraping(str(shop.edge.base_url), tmp_path) as prometheus, _running(shoppers()):
        views = [
            (
                f"{name}: {panel['title']} {values.get('actor', values.get('vhost', ''))}".strip(),
                panel,
                values,
            )
            for name, dashboard in dashboards().items()
            for values in _variable_choices(dashboard, vhost)
            for panel in panels(dashboard)
            if panel.get("targets") and (panel["title"], values.get("actor")) not in NOTHING_TO_SHOW
        ]

        async def panels_without_data() -> list[str]:
            empty = []
            for where, panel, values in views:
                found = [await prometheus.has_data(_rendered(t["expr"], values)) for t in panel["targets"]]
                if not any(found):
                    empty.append(where)
            return empty

        # Rates need two scrapes of a changing value: poll until every panel has data, or say which lack it.
        await eventually(
            panels_without_data, until=lambda empty: empty == [], timeout=90, what="data in every panel"
        )
    print(f"{len(views)} panel views, every one with data")


@asynccontextmanager
async def _running(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
