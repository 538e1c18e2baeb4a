"""Test helpers: polling with a deadline, sending contracts, watching events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from brokers.envelope import Envelope, Message
from brokers.factory import publish
from brokers.topology import EVENTS

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], *, until: Callable[[T], bool] = bool, timeout: float = 20.0, what: str = ""
) -> T:
    """Poll ``probe`` until ``until(result)`` holds; fail with the last result after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await probe()
            if until(last):
                return last
        except AssertionError:
            raise
        except Exception as exc:  # not there yet (e.g. a 404 from a query): keep polling
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}: last={last!r}")
        await asyncio.sleep(0.05)


async def send(broker, message: Message, *, message_id: str | None = None, correlation_id: str | None = None) -> Envelope:
    envelope = Envelope.first(message, correlation_id)
    if message_id is not None:
        envelope = envelope.model_copy(update={"message_id": message_id})
    await publish(broker, message, envelope)
    return envelope


class EventWatcher:
    """Collects every event published on the events exchange of the test's vhost."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.events: list[AbstractIncomingMessage] = []

    async def __aenter__(self) -> EventWatcher:
        self._connection = await aio_pika.connect_robust(self._url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(EVENTS.name, type="topic", durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="#")
        await queue.consume(self._collect, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._connection.close()

    async def _collect(self, message: AbstractIncomingMessage) -> None:
        self.events.append(message)

    def of_type(self, type_: str) -> list[AbstractIncomingMessage]:
        return [m for m in self.events if m.type == type_]

    async def wait_for(self, type_: str, count: int = 1, timeout: float = 20.0) -> list[AbstractIncomingMessage]:
        async def seen() -> list[AbstractIncomingMessage]:
            return self.of_type(type_)

        return await eventually(seen, until=lambda found: len(found) >= count, timeout=timeout, what=f"{count}x {type_}")
