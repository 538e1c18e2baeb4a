"""`emporium dlq`: look at dead letters, send them back to where they failed, or drop them.

Every function here takes the settings it works with, so the same code serves the CLI (settings from
the environment, ``--vhost`` to look elsewhere) and the tests (a vhost of their own).

Depths come from a passive queue declaration, which RabbitMQ answers from the queue itself; the
management API only finds the queues (its message counts lag by a statistics interval).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika
import httpx
import typer
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError, ChannelNotFoundEntity
from faststream.rabbit import RabbitBroker
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from brokers.deadletters import DeadLetter
from brokers.deadletters import replay as replay_message
from brokers.factory import make_broker
from brokers.settings import Settings, get_settings
from brokers.topology import declare_exchanges

DLQ_SUFFIX = ".dlq"
_BASIC_GET_TIMEOUT_S = 5.0
T = TypeVar("T")

app = typer.Typer(help="Inspect, replay and purge dead-letter queues.", no_args_is_help=True)
console = Console()


class DlqError(Exception):
    """An operation on a dead-letter queue that cannot be done; nothing was changed by it."""


class NoSuchDeadLetter(DlqError):
    """The dead letter asked for is not in the queue."""


@dataclass(frozen=True)
class QueueDepth:
    name: str
    messages: int


# --- where: vhost and management API -------------------------------------------------------------


def vhost_of(amqp_url: str) -> str:
    """The vhost an AMQP URL connects to, read the way aiormq reads it ("/" when the path is empty)."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def with_vhost(amqp_url: str, vhost: str) -> str:
    return urlunsplit(urlsplit(amqp_url)._replace(path="/" + quote(vhost, safe="")))


def management_client(settings: Settings) -> httpx.AsyncClient:
    """A client of the management API, with the credentials of its URL moved into basic auth."""
    if settings.emporium_env == "production" and "guest:guest@" in settings.rabbitmq_management_url:
        raise DlqError("refusing in production: RABBITMQ_MANAGEMENT_URL uses the guest account")
    parts = urlsplit(settings.rabbitmq_management_url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return httpx.AsyncClient(
        base_url=urlunsplit(parts._replace(netloc=netloc)),
        auth=(unquote(parts.username or "guest"), unquote(parts.password or "guest")),
        timeout=10.0,
    )


def require_dlq_name(queue: str) -> None:
    """Refuse to replay or purge anything but a dead-letter queue (a typo must not empty a work queue)."""
    if not queue.endswith(DLQ_SUFFIX) or queue == DLQ_SUFFIX:
        raise DlqError(f"{queue!r} is not a dead-letter queue: their names end with {DLQ_SUFFIX!r}")


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
    connection = await aio_pika.connect(settings.rabbitmq_url)
    async with connection:
        yield await _declared(await connection.channel(), settings, queue)


async def _take(queue: AbstractQueue) -> AbstractIncomingMessage | None:
    return await queue.get(no_ack=False, fail=False, timeout=_BASIC_GET_TIMEOUT_S)


async def dead_letter_queues(settings: Settings) -> list[QueueDepth]:
    """Every dead-letter queue of the settings' vhost with the messages it holds, by name."""
    vhost = vhost_of(settings.rabbitmq_url)
    async with management_client(settings) as management:
        response = await management.get(f"/api/queues/{quote(vhost, safe='')}", params={"columns": "name"})
    if response.status_code == 404:
        raise DlqError(f"there is no vhost {vhost!r}")
    response.raise_for_status()
    return await depths(
        settings, sorted(q["name"] for q in response.json() if q["name"].endswith(DLQ_SUFFIX))
    )


async def depths(settings: Settings, queues: list[str]) -> list[QueueDepth]:
    """How many messages each of these dead-letter queues holds, in the order given; a queue that
    does not exist (its actor was never deployed here) is left out."""
    found = []
    connection = await aio_pika.connect(settings.rabbitmq_url)
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
    broker = make_broker(settings, app_name="emporium-dlq")
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


# --- display --------------------------------------------------------------------------------------


def pretty_body(body: bytes) -> str:
    """A body as an operator wants to read it: indented JSON, else text, else its size."""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:  # not JSON (a UnicodeDecodeError is a ValueError too)
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return f"<{len(body)} bytes, not UTF-8 text>"


def describe(letter: DeadLetter) -> list[tuple[str, str]]:
    """The fields of a dead letter, labelled, in the order an operator reads them."""
    return [
        ("origin queue", letter.origin_queue),
        ("reason", letter.reason),
        ("attempts", str(letter.attempts)),
        ("error", letter.error),
        ("type", letter.type or "-"),
        ("message id", letter.message_id or "-"),
        ("correlation id", letter.correlation_id or "-"),
        ("dead-lettered at", letter.dead_lettered_at or "-"),
        *([("removed", letter.redacted)] if letter.redacted else []),
        ("body", pretty_body(letter.body)),
    ]


def _letter_table(position: int, letter: DeadLetter) -> Table:
    table = Table(title=f"dead letter {position}", show_header=False, title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for label, value in describe(letter):
        table.add_row(label, Text(value))  # Text: no rich markup inside error texts and bodies
    return table


def _replayed_table(letters: list[DeadLetter]) -> Table:
    table = Table("message id", "type", "sent back to", "reason it was dead-lettered")
    for letter in letters:
        row = (letter.message_id or "-", letter.type or "-", letter.origin_queue, letter.reason)
        table.add_row(*(Text(value) for value in row))
    return table


# --- commands -------------------------------------------------------------------------------------


def _dlq_argument(queue: str) -> str:
    try:
        require_dlq_name(queue)
    except DlqError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return queue


Vhost = Annotated[str | None, typer.Option(help="RabbitMQ vhost; default: the one in RABBITMQ_URL.")]
Queue = Annotated[
    str,
    typer.Argument(metavar="QUEUE", help="A dead-letter queue, e.g. inventory.dlq.", callback=_dlq_argument),
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _settings(vhost: str | None) -> Settings:
    settings = get_settings()
    if vhost is None:
        return settings
    return settings.model_copy(update={"rabbitmq_url": with_vhost(settings.rabbitmq_url, vhost)})


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; a refusal or an unreachable RabbitMQ becomes a red message and exit code 1."""
    try:
        return asyncio.run(work)
    except DlqError as exc:
        _fail(str(exc), exc)
    except (httpx.HTTPError, AMQPError, OSError) as exc:  # OSError: connection refused, DNS, ...
        _fail(f"RabbitMQ did not answer as expected: {type(exc).__name__}: {exc}", exc)


def _fail(problem: str, cause: Exception) -> NoReturn:
    console.print(Text(f"error: {problem}", style="red"))
    raise typer.Exit(1) from cause


@app.command("list")
def list_queues(vhost: Vhost = None) -> None:
    """Every dead-letter queue with the messages it holds."""
    settings = _settings(vhost)
    queues = _run(dead_letter_queues(settings))
    table = Table("dead-letter queue", "messages", title=f"vhost {vhost_of(settings.rabbitmq_url)}")
    for queue in queues:
        table.add_row(queue.name, str(queue.messages), style="yellow" if queue.messages else None)
    console.print(table)


@app.command()
def show(
    queue: Queue,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, from the head of the queue.")] = 10,
    vhost: Vhost = None,
) -> None:
    """The messages in a dead-letter queue, without removing them."""
    letters = _run(peek(_settings(vhost), queue, limit))
    if not letters:
        console.print(f"{queue} is empty")
    for position, letter in enumerate(letters, start=1):
        console.print(_letter_table(position, letter))


@app.command("replay")
def replay_command(
    queue: Queue,
    message_id: Annotated[str | None, typer.Option(help="Replay only the message with this id.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every message in the queue.")] = False,
    yes: Yes = False,
    vhost: Vhost = None,
) -> None:
    """Send dead letters back to the queue they failed in, acking each only once it is there."""
    if (message_id is not None) == all_:  # exactly one of the two
        raise typer.BadParameter("give either --message-id ID or --all")
    what = f"message {message_id}" if message_id else f"every message in {queue}"
    if not yes:
        typer.confirm(f"Send {what} back to its origin queue?", abort=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"replaying {queue}", total=None)
        replayed = _run(
            replay(
                _settings(vhost),
                queue,
                message_id=message_id,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        )
    console.print(_replayed_table(replayed))
    console.print(f"replayed {len(replayed)} message(s) from {queue}")


@app.command("purge")
def purge_command(queue: Queue, yes: Yes = False, vhost: Vhost = None) -> None:
    """Drop every message in a dead-letter queue."""
    settings = _settings(vhost)
    if not yes:
        typer.confirm(f"Drop every message in {queue} (vhost {vhost_of(settings.rabbitmq_url)})?", abort=True)
    purged = _run(purge(settings, queue))
    console.print(f"purged {purged} message(s) from {queue}")
