"""The live saga page (/saga) in a real headless Chromium, on a shop with every actor running."""

from __future__ import annotations

import os
from pathlib import Path

from brokers.management import queues_ui
from brokers.settings import Settings
from tests.e2e.browser import visiting
from tests.e2e.orders_support import stocked_sku
from tests.e2e.support import PASSWORD, User

# Where the page's picture goes (docs/saga-page.png is one, made with EMPORIUM_SCREENSHOT_DIR=docs).
SCREENSHOT_DIR = os.environ.get("EMPORIUM_SCREENSHOT_DIR")
STEPS = ["placed", "reserved", "confirmed", "shipped", "delivered"]


async def test_an_order_placed_through_the_api_appears_and_reaches_delivered_on_screen(
    open_shop, admin: User, ann: User, settings: Settings, tmp_path: Path
):
    shop = await open_shop(emporium_order_deadline_ms=60_000)
    sku = await stocked_sku(shop.edge, admin, quantity=3)
    base = str(shop.edge.base_url)
    async with visiting(base) as visit:
        page = visit.page
        await page.goto(f"{base}/saga")
        await page.fill("input[name=email]", ann.email)
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.locator("#no-orders").wait_for(timeout=10_000)

        # The provider refuses every charge until the page follows the order: the saga waits at
        # "reserved" (payments retries), and every step after it happens while the page watches.
        await shop.provider.behave(error_rate=1.0)
        order_id = await shop.order(ann, sku)
        order = page.locator(f'li.order[data-order-id="{order_id}"]')
        await page.locator(f'li.order[data-order-id="{order_id}"][data-following]').wait_for(timeout=15_000)
        await shop.provider.behave()
        await page.locator(f'li.order[data-order-id="{order_id}"][data-status="delivered"]').wait_for(
            timeout=60_000
        )

        steps = await order.locator(".steps li").evaluate_all("items => items.map(i => i.dataset.step)")
        assert steps == STEPS
        # Heard live over the stream, not only read back: the last steps came as events.
        events = await order.locator(".events li").evaluate_all("items => items.map(i => i.dataset.event)")
        assert {"payment.captured", "order.confirmed", "shipment.dispatched", "order.delivered"} <= set(
            events
        ), events
        # Each step links to the queue of the actor that took it, in this vhost, in the RabbitMQ UI.
        link = order.locator('li[data-event="order.delivered"] a')
        assert await link.get_attribute("href") == f"{queues_ui(settings)}/orders"
        assert not await page.locator("#problem").is_visible()
        await page.screenshot(path=Path(SCREENSHOT_DIR or tmp_path) / "saga-page.png", full_page=True)
        visit.assert_clean()
