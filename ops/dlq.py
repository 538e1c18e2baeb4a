"""`emporium dlq`: look at dead letters (and unrouted events), send them back, or drop them.

The operations are brokers.dlq's (the edge's admin routes use the same); this is their command line:
settings from the environment, ``--vhost`` to look elsewhere.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from dataclasses import asdict
from typing import Annotated, Any, NoReturn, TypeVar

import httpx
import typer
from aio_pika.exceptions import AMQPError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from brokers.deadletters import DeadLetter
from brokers.dlq import DlqError, dead_letter_queues, peek, pretty_body, purge, replay, require_dlq_name
from brokers.management import GuestRefused, vhost_of, with_vhost
from brokers.settings import Settings, get_settings

T = TypeVar("T")

app = typer.Typer(
    help="Inspect, replay and purge dead-letter queues and unrouted-events.", no_args_is_help=True
)
console = Console()
errors = Console(stderr=True)


# --- display --------------------------------------------------------------------------------------


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
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of tables.")]


def as_json(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as JSON, its body as text (as the edge's /admin/dead-letters shows it)."""
    return {**asdict(letter), "body": pretty_body(letter.body)}


def _settings(vhost: str | None) -> Settings:
    settings = get_settings()
    if vhost is None:
        return settings
    return settings.model_copy(update={"rabbitmq_url": with_vhost(settings.rabbitmq_url, vhost)})


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; a refusal or an unreachable RabbitMQ becomes a red message and exit code 1."""
    try:
        return asyncio.run(work)
    except (DlqError, GuestRefused) as exc:
        _fail(str(exc), exc)
    except (httpx.HTTPError, AMQPError, OSError) as exc:  # OSError: connection refused, DNS, ...
        _fail(f"RabbitMQ did not answer as expected: {type(exc).__name__}: {exc}", exc)


def _fail(problem: str, cause: Exception) -> NoReturn:
    errors.print(Text(f"error: {problem}", style="red"))
    raise typer.Exit(1) from cause


@app.command("list")
def list_queues(vhost: Vhost = None, json_output: AsJson = False) -> None:
    """Every dead-letter queue with the messages it holds."""
    settings = _settings(vhost)
    queues = _run(dead_letter_queues(settings))
    if json_output:
        typer.echo(json.dumps([{"queue": q.name, "messages": q.messages} for q in queues], indent=2))
        return
    table = Table("dead-letter queue", "messages", title=f"vhost {vhost_of(settings.rabbitmq_url)}")
    for queue in queues:
        table.add_row(queue.name, str(queue.messages), style="yellow" if queue.messages else None)
    console.print(table)


@app.command()
def show(
    queue: Queue,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, from the head of the queue.")] = 10,
    vhost: Vhost = None,
    json_output: AsJson = False,
) -> None:
    """The messages in a dead-letter queue, without removing them."""
    letters = _run(peek(_settings(vhost), queue, limit))
    if json_output:
        typer.echo(json.dumps([as_json(letter) for letter in letters], indent=2))
        return
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
