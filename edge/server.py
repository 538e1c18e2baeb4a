"""How emporium's HTTP servers run: uvicorn, guarded against clients that hold connections.

uvicorn bounds neither how long a request may take to arrive nor how many connections one client
may hold, so a client that sends its headers or body a byte at a time keeps a connection for as
long as it likes, and a few such clients hold them all. Each connection here has a read deadline:
a request's head and body must arrive within ``emporium_request_read_timeout_s`` of the
connection's start (or of the previous response), else it is answered 408 and closed. A client
address holds at most ``emporium_max_connections_per_client`` connections (the next ones are
answered 429 and closed), and the server at most ``emporium_max_connections`` (uvicorn answers 503).
Once a request has arrived, its answer may take as long as it takes (an SSE stream lives on).

The guard sits in uvicorn's h11 protocol (the one a plain ``pip install uvicorn`` uses): it sees
bytes before there is a request for the application to look at.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from brokers.settings import Settings

SLOW_REQUEST = "urn:emporium:problem:request-too-slow"
TOO_MANY_CONNECTIONS = "urn:emporium:problem:too-many-connections"
# The peer's states while its request has not fully arrived.
_ARRIVING = (h11.IDLE, h11.SEND_BODY)


def _problem_bytes(status: int, reason: str, type_: str, detail: str, extra: str = "") -> bytes:
    body = json.dumps({"type": type_, "title": reason, "status": status, "detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


def guarded_protocol(read_timeout_s: float, max_per_client: int) -> type[H11Protocol]:
    """An h11 protocol class for one server: its connections share one count per client address."""
    open_per_client: Counter[str] = Counter()
    too_slow = _problem_bytes(
        408, "Request Timeout", SLOW_REQUEST, f"the request did not arrive within {read_timeout_s:g} s"
    )
    too_many = _problem_bytes(
        429,
        "Too Many Requests",
        TOO_MANY_CONNECTIONS,
        f"this address holds {max_per_client} connections already; reuse one",
        "retry-after: 1\r\n",
    )

    class GuardedH11Protocol(H11Protocol):
        _peer: str | None = None
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._peer = self.client[0] if self.client else "unknown"
            open_per_client[self._peer] += 1
            if max_per_client and open_per_client[self._peer] > max_per_client:
                self._answer_and_close(too_many)
                return
            self._arm_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_deadline()
            if self._peer is not None:
                open_per_client[self._peer] -= 1
                if open_per_client[self._peer] <= 0:
                    del open_per_client[self._peer]
                self._peer = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state not in _ARRIVING:
                self._disarm_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Keep-alive: the next request on this connection has a deadline of its own.
            if not self.transport.is_closing() and self.conn.their_state in _ARRIVING:
                self._arm_deadline()

        def _arm_deadline(self) -> None:
            self._disarm_deadline()
            self._deadline = self.loop.call_later(read_timeout_s, self._request_too_slow)

        def _disarm_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _request_too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self.conn.their_state not in _ARRIVING:
                return
            if self.cycle is None or not self.cycle.response_started:
                self._answer_and_close(too_slow)
            else:
                self.transport.close()

        def _answer_and_close(self, answer: bytes) -> None:
            # An application waiting for the body hears of a disconnect (connection_lost).
            self.transport.write(answer)
            self.transport.close()

    return GuardedH11Protocol


def server_config(app: Any, settings: Settings, *, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for ``app``: the guarded h11 protocol and the connection cap. uvicorn
    installs no log handlers of its own: its records go to the process's JSON logs (brokers.logs)."""
    options.setdefault("log_config", None)
    protocol = guarded_protocol(
        settings.emporium_request_read_timeout_s, settings.emporium_max_connections_per_client
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        limit_concurrency=settings.emporium_max_connections,
        **options,
    )
