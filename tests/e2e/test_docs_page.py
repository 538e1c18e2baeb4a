"""The edge's API docs render in a real browser with no internet: Swagger UI comes from the edge."""

from __future__ import annotations

import httpx

from tests.e2e.browser import visiting


async def test_the_docs_page_shows_every_operation_without_the_internet(edge: httpx.AsyncClient):
    operations = sum(len(methods) for methods in (await edge.get("/openapi.json")).json()["paths"].values())
    async with visiting(str(edge.base_url)) as visit:
        await visit.page.goto(f"{edge.base_url}/docs")
        blocks = visit.page.locator(".opblock")
        await blocks.first.wait_for(timeout=15_000)
        assert await blocks.count() == operations
        assert await visit.page.locator(".opblock-summary-path", has_text="/orders/{order_id}/events").count()
        assert "emporium edge" in await visit.page.locator(".title").inner_text()
        visit.assert_clean()
