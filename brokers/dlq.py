"""Operators' work on the queues where messages are parked: every actor's dead-letter queue and
``unrouted-events`` (events no queue was bound for). List them, read them, send them back, drop them.

The same operations serve ``emporium dlq`` (ops/dlq.py), the edge's admin routes and the tests; each
takes the settings it works with (their vhost is the one worked in).

Depths come from a passive queue declaration, which RabbitMQ answers from the queue itself; the
management API only finds the queues (its message counts lag by a statistics interval).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError, ChannelNotFoundEntity
from faststream.rabbit import RabbitBroker

from brokers.deadletters import DeadLetter, publish_again
from brokers.deadletters import replay as replay_message
from brokers.factory import make_broker, named_url
from brokers.management import management_client, vhost_of
from brokers.settings import Settings
from brokers.topology import UNROUTED_EVENTS, declare_exchanges

DLQ_SUFFIX = ".dlq"
# Its connections' name in the RabbitMQ UI, whether the CLI or the edge's admin routes use it.
APP_NAME = "emporium-dlq"
_BASIC_GET_TIMEOUT_S = 5.0


class DlqError(Exception):
    """An operation on a dead-letter queue that cannot be done; nothing was changed by it."""


class NoSuchDeadLetter(DlqError):
    """The dead letter asked for is not in the queue."""


@dataclass(frozen=True)
class QueueDepth:
    name: str
    messages: int


def is_parking_queue(queue: str) -> bool:
    return queue == UNROUTED_EVENTS.name or (queue.endswith(DLQ_SUFFIX) and queue != DLQ_SUFFIX)


def require_dlq_name(queue: str) -> None:
    """Refuse to replay or purge anything but a queue of parked messages (a typo must not empty a
    work queue)."""
    if not is_parking_queue(queue):
        raise DlqError(
            f"{queue!r} is not a dead-letter queue: their names end with {DLQ_SUFFIX!r} "
            f"(or it is {UNROUTED_EVENTS.name!r})"
        )


# --- reading --------------------------------------------------------------------------------------


async def _declared(channel: AbstractChannel, settings: Settings, queue: str) -> tuple[AbstractQueue, int]:
    """The queue and its depth. Closing the channel returns every message taken and not acked."""
    require_dlq_name(queue)
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except ChannelNotFoundEntity as exc:
        raise DlqError(f"there is no queue {queue!r} in vhost {vhost_of(settings.rabbitmq_url)!r}") from exc
    return declared, declared.declaration_result.message_count or 0


@asynccontextmanager
async def _opened(settings: Settings, queue: str) -> AsyncIterator[tuple[AbstractQueue, int]]:
    """One queue and its depth, on a connection of its own."""
    connection = await _connect(settings, "inspection")
    async with connection:
        yield await _declared(await connection.channel(), settings, queue)


async def _connect(settings: Settings, role: str) -> aio_pika.abc.AbstractConnection:
    return await aio_pika.connect(named_url(settings.rabbitmq_url, APP_NAME, role))


async def _take(queue: AbstractQueue) -> AbstractIncomingMessage | None:
    return await queue.get(no_ack=False, fail=False, timeout=_BASIC_GET_TIMEOUT_S)


async def dead_letter_queues(settings: Settings) -> list[QueueDepth]:
    """Every dead-letter queue of the settings' vhost (and unrouted-events) with the messages it
    holds, by name."""
    vhost = vhost_of(settings.rabbitmq_url)
    async with management_client(settings) as management:
        response = await management.get(f"/api/queues/{quote(vhost, safe='')}", params={"columns": "name"})
    if response.status_code == 404:
        raise DlqError(f"there is no vhost {vhost!r}")
    response.raise_for_status()
    return await depths(settings, sorted(q["name"] for q in response.json() if is_parking_queue(q["name"])))


async def depths(settings: Settings, queues: list[str]) -> list[QueueDepth]:
    """How many messages each of these dead-letter queues holds, in the order given; a queue that
    does not exist (its actor was never deployed here) is left out."""
    found = []
    connection = await _connect(settings, "depths")
    async with connection:
        for name in queues:
            channel = await connection.channel()
            try:
                _, depth = await _declared(channel, settings, name)
            except DlqError:  # no such queue; RabbitMQ closed the channel with it
                continue
            await channel.close()
            found.append(QueueDepth(name, depth))
    return found


async def peek(settings: Settings, queue: str, limit: int) -> list[DeadLetter]:
    """Up to ``limit`` dead letters from the head of ``queue``, left where they are.

    They are taken unacked and handed back when the channel closes. A DLQ has no delivery limit, so
    being looked at does not count against them.
    """
    if limit < 1:
        raise DlqError("limit must be at least 1")
    letters: list[DeadLetter] = []
    async with _opened(settings, queue) as (dlq, _):
        while len(letters) < limit and (message := await _take(dlq)) is not None:
            letters.append(DeadLetter.read(message, queue))
    return letters


# --- changing -------------------------------------------------------------------------------------

OnProgress = Callable[[int, int], None]  # (replayed so far, total)


async def replay(
    settings: Settings, queue: str, *, message_id: str | None = None, on_progress: OnProgress | None = None
) -> list[DeadLetter]:
    """Send dead letters back to their origin queue: the one with ``message_id``, or all of them.

    Dead letters parked without their secret fields stay where they are.
    Each is acked from the DLQ only once its copy is confirmed in the origin queue; a copy that
    cannot be published leaves its original (and every one not yet replayed) in the DLQ. Only the
    messages present at the start are replayed, so one that fails again and comes back is not
    replayed a second time by the same run.
    """
    broker = make_broker(settings, app_name=APP_NAME, role="replays")
    replayed: list[DeadLetter] = []
    async with _opened(settings, queue) as (dlq, depth):
        await broker.connect()
        try:
            # Replays go through emporium.moves (only checked where this user may not declare).
            await declare_exchanges(broker, create=settings.emporium_declare_topology)
            for _ in range(depth):
                message = await _take(dlq)
                if message is None:
                    break
                letter = DeadLetter.read(message, queue)
                if message_id is not None and letter.message_id != message_id:
                    continue  # not acked: back in the DLQ when the channel closes
                if letter.redacted:
                    # Parked without its secrets: replayed, it could only fail again. Its sender
                    # must send it anew; the operator purges it.
                    if message_id is not None:
                        raise DlqError(
                            f"message {message_id} was parked without its {letter.redacted}; it cannot "
                            "be replayed (its sender must send it again)"
                        )
                    continue
                await _send_back(broker, message, letter, queue, len(replayed))
                replayed.append(letter)
                if on_progress is not None:
                    on_progress(len(replayed), 1 if message_id is not None else depth)
                if message_id is not None:
                    break
        finally:
            await broker.stop()
    if message_id is not None and not replayed:
        raise NoSuchDeadLetter(f"no dead letter with message id {message_id!r} in {queue}")
    return replayed


async def _send_back(
    broker: RabbitBroker, message: AbstractIncomingMessage, letter: DeadLetter, queue: str, done: int
) -> None:
    try:
        if queue == UNROUTED_EVENTS.name:
            await publish_again(broker, message)
        else:
            await replay_message(broker, message, letter.origin_queue)
    except (AMQPError, ConnectionError) as exc:
        raise DlqError(
            f"could not replay message {letter.message_id} to {letter.origin_queue!r} ({exc}); "
            f"it stays in {queue}, as does every message not yet replayed ({done} replayed before it)"
        ) from exc
    await message.ack()


async def purge(settings: Settings, queue: str) -> int:
    """Drop every message in a dead-letter queue; returns how many were dropped."""
    async with _opened(settings, queue) as (dlq, _):
        purged = await dlq.purge()
    return purged.message_count or 0


def pretty_body(body: bytes) -> str:
    """A body as an operator wants to read it: indented JSON, else text, else its size."""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:  # not JSON (a UnicodeDecodeError is a ValueError too)
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return f"<{len(body)} bytes, not UTF-8 text>"
