"""Request/reply for queries over RabbitMQ's direct reply-to.

FastStream's ``broker.request`` holds a lock for the whole round trip, so one process can only have
one query in flight. This requester keeps one reply consumer open and matches each reply to its
waiting caller by the query's message id (the actor sends it back as the reply's correlation id), so
any number of queries run concurrently and the conversation's correlation id stays untouched.

RabbitMQ refuses a publish whose reply-to is direct reply-to on a channel that has no such consumer
("fast reply consumer does not exist"). So the reply "queue" is declared (passively) on the robust
channel, not only named: aio-pika then restores its consumer with the channel after a reconnect.
Between losing the channel and that restore the requester is not ``connected``: asking fails at
once, and queries waiting for a reply fail too, since a reply can only come to the channel that
asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, Generic, TypeVar

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError
from pydantic import BaseModel, ConfigDict

from brokers.envelope import Envelope, Query
from brokers.factory import named_url
from brokers.settings import Settings
from brokers.topology import QUERIES
from brokers.tracing import current_carrier

REPLY_TO = "amq.rabbitmq.reply-to"
T = TypeVar("T")
log = structlog.get_logger()


class Problem(BaseModel):
    """An RFC 9457 style problem, as carried in a failed reply."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: int
    title: str
    detail: str

    @classmethod
    def of(cls, status: int, detail: str) -> Problem:
        return cls(status=status, title=HTTPStatus(status).phrase, detail=detail)


class Reply(BaseModel, Generic[T]):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ok: bool
    data: T | None = None
    problem: Problem | None = None


class QueryFailed(Exception):
    """The actor answered with a problem (not found, invalid query, ...)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


class QueryTimeout(TimeoutError):
    """No reply in time: the actor is slow or not running."""


class BrokerUnavailable(ConnectionError):
    """The query could not be sent: no connection, or nothing answers that query type."""


class Requester:
    def __init__(self, url: str, *, timeout_s: float, app_name: str) -> None:
        self._url = named_url(url, app_name, "queries")
        self._timeout_s = timeout_s
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._waiting: dict[str, asyncio.Future[AbstractIncomingMessage]] = {}
        # The reply consumer is on the current channel (lost with the channel, back with its restore).
        self._replying = False

    async def start(self) -> None:
        connection = await aio_pika.connect_robust(self._url)
        try:
            # Publishing and consuming direct reply-to must share a channel.
            # Opened by initialize(), not by awaiting it: awaiting types the channel as not robust.
            channel = connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.initialize()
            # Declared, so that the robust channel restores it and its consumer (see the module's note).
            reply_queue = await channel.declare_queue(REPLY_TO, passive=True)
            await reply_queue.consume(self._on_reply, no_ack=True)
        except BaseException:
            await connection.close()
            raise
        channel.close_callbacks.add(self._reply_consumer_lost)
        channel.reopen_callbacks.add(self._reply_consumer_restored)
        self._connection, self._channel, self._replying = connection, channel, True

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection, self._channel, self._replying = None, None, False

    @property
    def connected(self) -> bool:
        """Queries can be sent and their replies received now."""
        return self._replying

    def _reply_consumer_lost(self, _channel: Any, exc: BaseException | None = None) -> None:
        self._replying = False
        why = "the channel closed" if exc is None else str(exc) or type(exc).__name__
        if self._connection is not None and not self._connection.close_called:  # not our own stop
            log.warning("rpc.reply_consumer_lost", waiting=len(self._waiting), error=why)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(
                    BrokerUnavailable(f"RabbitMQ went away before the reply came ({why}); ask again")
                )

    def _reply_consumer_restored(self, _channel: Any) -> None:
        # aio-pika calls this once the channel is open again with its reply consumer restored.
        self._replying = True
        log.info("rpc.reply_consumer_restored")

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(message)

    async def ask(
        self,
        query: Query,
        data_type: type[T],
        *,
        correlation_id: str | None = None,
        timeout_s: float | None = None,
    ) -> T:
        """Send a query and return the reply's data, validated as ``data_type``."""
        if self._channel is None or not self.connected:
            raise BrokerUnavailable("not connected to RabbitMQ (reconnecting); nothing was sent")
        timeout_s = timeout_s or self._timeout_s
        envelope = Envelope.first(query, correlation_id)
        # The actor answers with correlation_id = the query's message id.
        reply_key = envelope.message_id
        future: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()
        self._waiting[reply_key] = future
        try:
            exchange = await self._channel.get_exchange(QUERIES.name, ensure=False)
            try:
                await exchange.publish(
                    aio_pika.Message(
                        query.body(),
                        content_type="application/json",
                        message_id=envelope.message_id,
                        correlation_id=envelope.correlation_id,
                        type=envelope.type,
                        # The asker's trace goes on in the actor that answers.
                        headers={**envelope.amqp()["headers"], **current_carrier()},
                        reply_to=REPLY_TO,
                        # A query nobody picked up in time is worthless: let the queue drop it.
                        expiration=timeout_s,
                    ),
                    routing_key=query.TYPE,
                    mandatory=True,
                )
            except DeliveryError as exc:
                raise BrokerUnavailable(f"no actor answers {query.TYPE}") from exc
            except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
                raise BrokerUnavailable(f"RabbitMQ is unreachable: {exc}") from exc
            try:
                message = await asyncio.wait_for(future, timeout_s)
            except TimeoutError as exc:
                raise QueryTimeout(f"no reply to {query.TYPE} within {timeout_s:g}s") from exc
        finally:
            self._waiting.pop(reply_key, None)
        # Parametrized at run time, which mypy cannot follow (it takes only static types in brackets).
        reply: Reply[T] = Reply[data_type].model_validate_json(message.body)  # type: ignore[valid-type]
        if not reply.ok:
            raise QueryFailed(reply.problem or Problem.of(500, "the actor sent an empty problem"))
        if reply.data is None:
            raise QueryFailed(Problem.of(500, f"the actor answered {query.TYPE} without data"))
        return reply.data


@asynccontextmanager
async def requesting(settings: Settings, *, app_name: str) -> AsyncIterator[Requester]:
    """A started requester for these settings (its connection named after ``app_name``), stopped
    when the block ends."""
    requester = Requester(
        settings.rabbitmq_url, timeout_s=settings.emporium_query_timeout_s, app_name=app_name
    )
    await requester.start()
    try:
        yield requester
    finally:
        await requester.stop()
