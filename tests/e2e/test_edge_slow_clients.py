"""Clients that hold the edge's connections: slow heads, slow bodies, too many connections.

Each test talks raw HTTP/1.1 over a socket to the real edge served as the `edge` command serves it.
The pauses between bytes are the slow client's behaviour under test, not waits for the system.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import httpx
import pytest

from brokers.settings import Settings
from edge.app import create_app
from edge.server import SLOW_REQUEST, TOO_MANY_CONNECTIONS
from tests.e2e.support import edge_settings, serving
from tests.helpers import eventually

READ_TIMEOUT_S = 1.0
# Far past the read deadline: a connection still open then was never cut off.
GIVE_UP_S = 15.0

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def edge_address(settings: Settings) -> AsyncIterator[Callable[..., object]]:
    @asynccontextmanager
    async def serve(**overrides: object) -> AsyncIterator[tuple[str, int]]:
        app = create_app(
            edge_settings(settings, **{"emporium_request_read_timeout_s": READ_TIMEOUT_S, **overrides})
        )
        async with serving(app) as base_url:
            url = urlsplit(base_url)
            yield url.hostname or "127.0.0.1", url.port or 80

    yield serve


async def _dribble_until_cut_off(address: tuple[str, int], first: bytes, more: bytes) -> tuple[bytes, float]:
    """Send ``first``, then ``more`` a byte at a time until the edge closes; what it said, and when."""
    reader, writer = await asyncio.open_connection(*address)
    started = time.monotonic()
    writer.write(first)
    answer = b""
    try:
        for byte in more * 1000:
            if time.monotonic() - started > GIVE_UP_S:
                pytest.fail(f"the edge kept a slow client's connection open for {GIVE_UP_S} s")
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(4096), 0.2)
            except TimeoutError:
                continue
            answer += chunk
            if not chunk:
                break
        answer += await asyncio.wait_for(reader.read(), 5)
    except ConnectionError:
        pass  # closed while we wrote: what it answered before that is in `answer`
    finally:
        writer.close()
    return answer, time.monotonic() - started


def _status_and_problem(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    return int(head.split(b" ")[1]), json.loads(body)


async def test_a_client_sending_its_headers_a_byte_at_a_time_is_answered_408_and_cut_off(edge_address):
    async with edge_address() as address:
        answer, took = await _dribble_until_cut_off(
            address, b"GET /health HTTP/1.1\r\nHost: edge\r\n", b"X-Slow: y\r\n"
        )
        # The edge still serves everyone else.
        async with httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as client:
            assert (await client.get("/health")).status_code == 200

    status, problem = _status_and_problem(answer)
    assert (status, problem["type"]) == (408, SLOW_REQUEST)
    assert took >= READ_TIMEOUT_S


async def test_a_client_sending_its_body_a_byte_at_a_time_is_answered_408_and_cut_off(edge_address):
    head = (
        b"POST /auth/login HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    async with edge_address(emporium_max_body_bytes=200_000) as address:
        answer, _ = await _dribble_until_cut_off(address, head, b'{"email": "a@example.com"')

    status, problem = _status_and_problem(answer)
    assert (status, problem["type"]) == (408, SLOW_REQUEST)


async def _health_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /health HTTP/1.1\r\nHost: edge\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length"))
    await asyncio.wait_for(reader.readexactly(int(length.split(b":")[1])), 5)
    return head


async def test_a_kept_alive_connection_gets_a_fresh_deadline_for_each_request(edge_address):
    async with edge_address() as address:
        reader, writer = await asyncio.open_connection(*address)
        try:
            for _ in range(3):  # 1.8 s in all, past one deadline; each request well within its own
                assert (await _health_on(reader, writer)).startswith(b"HTTP/1.1 200")
                await asyncio.sleep(READ_TIMEOUT_S * 0.6)
        finally:
            writer.close()


async def test_a_client_address_holds_at_most_its_share_of_connections(edge_address):
    async with edge_address(
        emporium_max_connections_per_client=4, emporium_request_read_timeout_s=30.0
    ) as address:
        held: list[Connection] = [await asyncio.open_connection(*address) for _ in range(4)]
        try:
            reader, writer = await asyncio.open_connection(*address)
            refused = await asyncio.wait_for(reader.read(), 5)  # answered and closed, unasked
            writer.close()
            for reader, writer in held:  # the four it holds still work
                assert (await _health_on(reader, writer)).startswith(b"HTTP/1.1 200")
        finally:
            for _, writer in held:
                writer.close()
        # Connections closed give their place back (once the edge has seen them close).
        async with httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as client:
            await eventually(lambda: client.get("/health"), until=lambda r: r.status_code == 200, timeout=10)

    status, problem = _status_and_problem(refused)
    assert (status, problem["type"]) == (429, TOO_MANY_CONNECTIONS)
    assert b"retry-after: 1" in refused.lower()
