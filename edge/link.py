"""The edge's link to RabbitMQ: a confirming publisher for commands, a requester for queries, and
the subscription to the saga's events that Server-Sent Events are fanned out from.

The edge starts even when RabbitMQ is unreachable: it keeps connecting in the background with a
growing pause, ``/ready`` reports not ready, and every request that needs RabbitMQ is answered 503
meanwhile. Once connected, aio-pika's robust connections reconnect on their own (every few seconds)
and restore their channels and consumers: the publisher's channel, the requester's reply consumer
and the saga events' queue. Each of the three says whether it is restored yet; until all are,
``/ready`` is false and what needs the missing one is answered 503 at once, nothing sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

import structlog
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, ChannelNotFoundEntity, DeliveryError
from aiormq import spec
from faststream.rabbit import RabbitBroker

from brokers.envelope import Command, Envelope, Query
from brokers.factory import make_broker, publish
from brokers.rpc import BrokerUnavailable, Requester
from brokers.settings import Settings
from brokers.topology import declare_exchanges
from edge.events import SagaEvents

log = structlog.get_logger()
T = TypeVar("T")

APP_NAME = "emporium-edge"
FIRST_RECONNECT_PAUSE_S = 0.5
LONGEST_RECONNECT_PAUSE_S = 5.0
# A silently dropped connection attempt must not hold the edge's start (or a reconnect) forever.
CONNECT_TIMEOUT_S = 10.0
UNREACHABLE_DETAIL = "RabbitMQ is unreachable (the edge keeps reconnecting); nothing was sent"
# Everything that means "RabbitMQ cannot take this now" (ConnectionError and TimeoutError are OSErrors).
_UNREACHABLE = (AMQPError, ChannelInvalidStateError, OSError)


class RabbitLink:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Three connections, each named for what it carries: commands (and queue depths), queries
        # and their replies, the saga's events.
        self._broker: RabbitBroker = make_broker(settings, app_name=APP_NAME, role="commands")
        self._requester = Requester(
            settings.rabbitmq_url, timeout_s=settings.emporium_query_timeout_s, app_name=APP_NAME
        )
        self.saga_events = SagaEvents(settings.rabbitmq_url, app_name=APP_NAME)
        self._connected = False
        # The broker's connection, and with it the channel commands are published on, is up.
        self._publishing = False
        self._connecting: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Connect now if RabbitMQ answers, else keep trying in the background."""
        if not await self._try_connect():
            self._connecting = asyncio.create_task(self._keep_connecting(), name="edge-rabbitmq-connect")

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
            self._connecting = None
        await self._disconnect()

    async def _try_connect(self) -> bool:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                self._watch_publisher(await self._broker.connect())
                # Only checked, not declared, where the edge may not declare (production); a missing
                # exchange is TopologyMissing, a ConnectionError: logged and retried like an outage.
                await declare_exchanges(self._broker, create=self._settings.emporium_declare_topology)
                await self._requester.start()
                await self.saga_events.start()
        except _UNREACHABLE as exc:
            log.warning("edge.rabbitmq_unreachable", error=str(exc) or type(exc).__name__)
            await self._disconnect()
            return False
        except asyncio.CancelledError:
            await self._disconnect()
            raise
        self._connected = True
        log.info("edge.rabbitmq_connected")
        return True

    async def _keep_connecting(self) -> None:
        pause = FIRST_RECONNECT_PAUSE_S
        while True:
            await asyncio.sleep(pause)
            if await self._try_connect():
                return
            pause = min(pause * 2, LONGEST_RECONNECT_PAUSE_S)

    async def _disconnect(self) -> None:
        self._connected = False
        await self.saga_events.stop()
        await self._requester.stop()
        await self._broker.stop()

    def _watch_publisher(self, connection: AbstractRobustConnection) -> None:
        connection.close_callbacks.add(self._publisher_lost)
        # Called once every channel of the connection, the publisher's included, is restored.
        connection.reconnect_callbacks.add(self._publisher_restored)
        self._publishing = True

    def _publisher_lost(self, _connection: Any, exc: BaseException | None = None) -> None:
        self._publishing = False
        if self._connected:  # not the edge's own stop
            log.warning("edge.rabbitmq_lost", error=str(exc or ""))

    def _publisher_restored(self, _connection: Any) -> None:
        self._publishing = True
        log.info("edge.rabbitmq_reconnected")

    async def ready(self) -> bool:
        """Every connection is up, with its channels and consumers (the readiness check)."""
        restored = self._publishing and self._requester.connected and self.saga_events.connected
        return self._connected and restored

    def _require(self, restored: bool) -> None:
        """Refuse at once, nothing sent, while what a request needs is not (back) up."""
        if not (self._connected and restored):
            raise BrokerUnavailable(UNREACHABLE_DETAIL)

    async def send(self, command: Command, envelope: Envelope) -> None:
        """Publish a command and return once RabbitMQ confirmed it is queued for its actor."""
        self._require(self._publishing)
        timeout_s = self._settings.emporium_query_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await publish(self._broker, command, envelope)
        except TimeoutError as exc:
            raise BrokerUnavailable(_uncertain(command, f"no confirm within {timeout_s:g}s")) from exc
        except DeliveryError as exc:
            raise BrokerUnavailable(_refusal(command, exc)) from exc
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(_uncertain(command, str(exc) or type(exc).__name__)) from exc

    async def ask(
        self, query: Query, data_type: type[T], *, correlation_id: str, timeout_s: float | None = None
    ) -> T:
        """Ask the actor that answers ``query``; its problems and timeouts propagate as they are.

        It waits ``timeout_s``, by default the settings' query timeout.
        """
        self._require(self._requester.connected)
        return await self._requester.ask(query, data_type, correlation_id=correlation_id, timeout_s=timeout_s)

    async def queue_depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (waiting for a consumer), read by a passive declaration."""
        self._require(self._publishing)
        timeout_s = self._settings.emporium_query_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                # The broker's connection, already open: connect() returns it.
                connection = await self._broker.connect()
                # A channel of its own: RabbitMQ closes the channel of a passive declaration that
                # finds no queue, and that must not be the channel commands are published on.
                # (Not bound by ``as``: entering it types it as a channel that is not robust.)
                channel = connection.channel(publisher_confirms=False)
                async with channel:
                    declared = await channel.declare_queue(queue, passive=True, robust=False)
        except ChannelNotFoundEntity as exc:
            raise QueueMissing(
                f"RabbitMQ has no queue {queue} (the actor that consumes it was never deployed)"
            ) from exc
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"RabbitMQ did not report the depth of {queue} within {timeout_s:g}s"
            ) from exc
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(f"the depth of {queue} is unknown: {exc or type(exc).__name__}") from exc
        # pamqp types the count optional (frames are built field by field); RabbitMQ always sends it.
        return declared.declaration_result.message_count or 0


class QueueMissing(BrokerUnavailable):
    """RabbitMQ has no such queue: its actor was never deployed (or its topology not imported)."""


def _refusal(command: Command, exc: DeliveryError) -> str:
    if isinstance(exc.frame, spec.Basic.Return):
        return (
            f"no queue takes {command.TYPE} (the actor that handles it is not deployed); nothing was queued"
        )
    return f"RabbitMQ refused {command.TYPE} (the queue of its actor may be full); nothing was queued"


def _uncertain(command: Command, what_happened: str) -> str:
    # The command may have reached its queue before the confirm was lost.
    return (
        f"RabbitMQ did not confirm {command.TYPE} ({what_happened}); it may or may not be queued: "
        "retry with the same Idempotency-Key and it is applied at most once"
    )
