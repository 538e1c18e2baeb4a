"""A real Prometheus (Debian's package) scraping the test's edge and RabbitMQ, for the dashboards."""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.helpers import eventually

SCRAPE_S = 1
RABBITMQ_PER_OBJECT = "127.0.0.1:15692"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Prometheus:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def query(self, expression: str) -> list[dict]:
        answer = await self.http.get("/api/v1/query", params={"query": expression})
        assert answer.status_code == 200, f"{expression}: {answer.text}"
        return answer.json()["data"]["result"]

    async def has_data(self, expression: str) -> bool:
        """At least one series with a number in it (not NaN: a ratio or quantile of nothing)."""
        return any(not math.isnan(float(series["value"][1])) for series in await self.query(expression))


@asynccontextmanager
async def scraping(edge_url: str, directory: Path) -> AsyncIterator[Prometheus]:
    """Prometheus scraping ``edge_url``/metrics (every actor of the test's process) and RabbitMQ's
    per-queue metrics every second, until the block ends."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("no prometheus on PATH: ops/dev.sh test installs it (apt-get install prometheus)")
    config = {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "scrape_configs": [
            {"job_name": "emporium", "static_configs": [{"targets": [urlsplit(edge_url).netloc]}]},
            {
                "job_name": "rabbitmq",
                "metrics_path": "/metrics/per-object",
                "static_configs": [{"targets": [RABBITMQ_PER_OBJECT]}],
            },
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(directory / "prometheus.log", "wb"),  # noqa: SIM115 (closed with the process)
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            prometheus = Prometheus(http)

            async def both_targets_up() -> bool:
                try:  # 503 while it starts
                    answer = await http.get("/api/v1/query", params={"query": "up == 1"})
                except httpx.HTTPError:
                    return False
                return answer.status_code == 200 and len(answer.json()["data"]["result"]) == 2

            await eventually(both_targets_up, timeout=30, what="Prometheus to scrape the edge and RabbitMQ")
            yield prometheus
    finally:
        process.terminate()
        process.wait(timeout=15)
