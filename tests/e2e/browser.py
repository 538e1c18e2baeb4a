"""A real headless Chromium (Debian's package, driven by Playwright) that may reach the edge only.

Every request to another origin is refused and recorded, so a page that needs the internet (a CDN)
shows it; console errors and uncaught exceptions are recorded too (a Content-Security-Policy
violation is a console error).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Page, Route, async_playwright

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str:
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    pytest.fail("no chromium on PATH: ops/dev.sh test installs it (apt-get install chromium)")


@dataclass
class Visit:
    page: Page
    refused: list[str] = field(default_factory=list)  # URLs of other origins the page asked for
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions

    def assert_clean(self) -> None:
        assert self.refused == [], f"the page asked other origins: {self.refused}"
        assert self.errors == [], f"the page logged errors: {self.errors}"


@asynccontextmanager
async def visiting(base_url: str) -> AsyncIterator[Visit]:
    """A fresh browser page allowed to reach ``base_url``'s origin and nothing else."""
    allowed = urlsplit(base_url).netloc
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(),
            # Tests run as root here, where Chromium's own sandbox cannot start.
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            page = await browser.new_page()
            visit = Visit(page)

            async def only_the_edge(route: Route) -> None:
                url = route.request.url
                if urlsplit(url).netloc == allowed:
                    await route.continue_()
                else:
                    visit.refused.append(url)
                    await route.abort("blockedbyclient")

            await page.route("**/*", only_the_edge)
            page.on("console", lambda m: visit.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: visit.errors.append(f"uncaught: {exc}"))
            yield visit
        finally:
            await browser.close()
