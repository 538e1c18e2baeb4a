"""Test helpers: polling with a deadline, sending contracts, watching events."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import aio_pika
import prometheus_client
from aio_pika.abc import AbstractIncomingMessage
from circuitbreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN
from faststream.rabbit import RabbitExchange

from brokers.envelope import REGISTRY, Envelope, Kind, Message
from brokers.factory import publish
from brokers.topology import COMMANDS, EVENTS

T = TypeVar("T")
BREAKER_STATE = "emporium_payments_breaker_state"


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = bool,
    timeout: float = 20.0,
    what: str = "",
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


def samples_at_start(module: str, metric: str, label_sets: Iterable[dict[str, str]]) -> list[float | None]:
    """The samples of ``metric`` in a fresh interpreter that has only imported ``module``: what a
    process exports before its first event (in the suite's own process other tests have moved them)."""
    script = (
        "import importlib, json, sys\n"
        "from prometheus_client import REGISTRY\n"
        "importlib.import_module(sys.argv[1])\n"
        "print(json.dumps([REGISTRY.get_sample_value(sys.argv[2], labels) for labels in json.loads(sys.argv[3])]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, module, metric, json.dumps(list(label_sets))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


async def breaker_state(provider: str) -> str | None:
    """The state the payments breaker of ``provider`` (its short name) shows in this process."""
    for state in (STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN):
        labels = {"provider": provider, BREAKER_STATE: state}
        if prometheus_client.REGISTRY.get_sample_value(BREAKER_STATE, labels) == 1.0:
            return state
    return None


async def send(
    broker, message: Message, *, message_id: str | None = None, correlation_id: str | None = None
) -> Envelope:
    envelope = Envelope.first(message, correlation_id)
    if message_id is not None:
        envelope = envelope.model_copy(update={"message_id": message_id})
    await publish(broker, message, envelope)
    return envelope


class Tap:
    """A copy of every message published to an exchange (by default: every event), in routing order."""

    def __init__(
        self, url: str, exchange: RabbitExchange = EVENTS, routing_keys: Iterable[str] = ("#",)
    ) -> None:
        self._url = url
        self._exchange = exchange
        self._routing_keys = tuple(routing_keys)
        self.messages: list[AbstractIncomingMessage] = []

    @classmethod
    def commands(cls, url: str) -> Tap:
        return cls(url, COMMANDS, [t for t, contract in REGISTRY.items() if contract.KIND is Kind.COMMAND])

    async def __aenter__(self) -> Tap:
        self._connection = await aio_pika.connect_robust(self._url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            self._exchange.name,
            type=self._exchange.type.value,
            durable=True,
            arguments=self._exchange.arguments,
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for routing_key in self._routing_keys:
            await queue.bind(exchange, routing_key=routing_key)
        await queue.consume(self._collect, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._connection.close()

    async def _collect(self, message: AbstractIncomingMessage) -> None:
        self.messages.append(message)

    def of_type(self, type_: str) -> list[AbstractIncomingMessage]:
        """Messages of a type, one per message id: delivery is at least once, so a publisher may
        legitimately send a message again (the outbox sweeper after a slow confirm, say)."""
        distinct = {m.message_id: m for m in self.messages if m.type == type_}
        return list(distinct.values())

    async def wait_for(
        self, type_: str | None = None, count: int = 1, timeout: float = 20.0
    ) -> list[AbstractIncomingMessage]:
        async def seen() -> list[AbstractIncomingMessage]:
            return self.messages if type_ is None else self.of_type(type_)

        return await eventually(
            seen,
            until=lambda found: len(found) >= count,
            timeout=timeout,
            what=f"{count}x {type_ or 'message'}",
        )
