"""The emporium command: run the system (whole or one actor), operate dead letters, benchmark."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    from fastapi import FastAPI
    from typer._click import Context  # typer's own copy of click, whose classes TyperGroup extends

    from brokers.settings import Settings

# The sub-apps are imported only when their command runs: importing one brings in the actors, FastStream
# and the like, which `emporium --help` and every other command would pay for at start. Their help is
# kept here, so listing the commands imports none of them (tests/unit/test_cli.py checks it against
# each module's own). Name: (module whose `app` is the sub-app, help).
SUB_APPS: dict[str, tuple[str, str]] = {
    "dlq": ("ops.dlq", "Inspect, replay and purge dead-letter queues and unrouted-events."),
    "bench": ("ops.bench", "Measure the cost of the actor runtime."),
    "production": (
        "ops.production",
        "Least-privilege production assets: RabbitMQ definitions, MongoDB users.",
    ),
    "admin": ("ops.identity_admin", "Administrators and signing keys (talks to a running identity actor)."),
    "asyncapi": ("ops.asyncapi", "The AsyncAPI document of the actors' messages."),
}


class LazySubApp(TyperCommand):
    """A sub-app's place in the command list: its name and help only, until it is parsed."""

    def __init__(self, name: str, module: str, help: str) -> None:
        super().__init__(name=name, help=help)
        self.module = module

    def load(self) -> TyperGroup:
        """The sub-app itself, as `app.add_typer` would have made it."""
        group = typer.main.get_group(import_module(self.module).app)
        group.name = self.name
        return group

    # Every use of a command (running it, its --help, shell completion) starts from its context: the
    # real sub-app makes it, and so handles everything after.
    def make_context(
        self, info_name: str | None, args: list[str], parent: Context | None = None, **extra: Any
    ) -> Context:
        return self.load().make_context(info_name, args, parent=parent, **extra)


class _Emporium(TyperGroup):
    """The emporium command: its own commands, then the sub-apps, each loaded when invoked."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, (module, help) in SUB_APPS.items():
            self.add_command(LazySubApp(name, module, help))


app = typer.Typer(
    cls=_Emporium,
    help="emporium: an e-commerce backend of actors on RabbitMQ and MongoDB.",
    no_args_is_help=True,
)

Host = Annotated[str, typer.Option(help="Interface to listen on.")]


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"emporium {version('emporium')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """emporium: an e-commerce backend of actors on RabbitMQ and MongoDB."""


_PR_SET_PDEATHSIG = 1


def _boot(service_name: str) -> Settings:
    """What every serving command does first: settings, JSON logs, and tracing (before any broker or
    app is made: they are traced only if it is on). The process's settings."""
    from brokers.logs import configure_logging
    from brokers.settings import get_settings
    from brokers.tracing import configure_tracing

    settings = get_settings()
    configure_logging(settings.emporium_log_level)
    configure_tracing(service_name)
    return settings


def _serve(api: FastAPI, settings: Settings, host: str, port: int) -> None:
    import uvicorn
    from uvicorn.main import STARTUP_FAILURE

    from edge.server import server_config

    # uvicorn handles SIGINT/SIGTERM: the lifespan's shutdown runs, in-flight messages finish. Open
    # SSE streams would hold the shutdown for as long as their clients stay: they get 5 s.
    config = server_config(
        api, settings, host=host, port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # as uvicorn.run does: the start-up failed


def _die_with_parent() -> None:
    """In a child process: be sent SIGTERM when the parent dies, however it dies (Linux)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def _payment_provider_alongside(settings) -> Iterator[None]:
    """Run the payment-provider simulator as a child process for as long as the block runs."""
    url = urlsplit(settings.emporium_payment_provider_url)
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ops",
            "payment-provider",
            "--host",
            url.hostname or "127.0.0.1",
            "--port",
            str(url.port or 80),
        ],
        # uvicorn re-raises SIGTERM after its shutdown, so the finally below may never run.
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    try:
        # Payments would retry its first charges against a port nobody listens on yet.
        _wait_until_listening(child, url.hostname or "127.0.0.1", url.port or 80)
        yield
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _wait_until_listening(child: subprocess.Popen, host: str, port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if child.poll() is not None:
            raise SystemExit(
                f"emporium: the payment-provider simulator exited ({child.returncode}) before listening"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"emporium: the payment-provider simulator does not listen on {host}:{port}"
                ) from None
            time.sleep(0.1)


@app.command("payment-provider")
def payment_provider(
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the simulator listens on.")] = 8090,
) -> None:
    """The payment-provider simulator (charges, refunds, adjustable declines, errors and latency)."""
    from ops.payment_provider import serve

    serve(host, port)


@app.command()
def run(
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the edge listens on.")] = 8000,
    simulator: Annotated[bool, typer.Option(help="Also run the payment-provider simulator.")] = True,
) -> None:
    """Every actor and the edge in one process (the modular monolith)."""
    from actors.registry import ACTORS
    from actors.runtime.host import ActorHost
    from edge.app import create_app

    settings = _boot("emporium")
    actor_host = ActorHost(list(ACTORS.values()), settings)
    api = create_app(settings, extra_checks={f"actors_{k}": v for k, v in actor_host.checks.items()})
    with _payment_provider_alongside(settings) if simulator else nullcontext():
        _serve(_run_actors_with(api, actor_host), settings, host, port)


@app.command()
def actor(
    name: Annotated[str, typer.Argument(help="Which actor to run.")],
    host: Host = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port of /health, /ready and /metrics.")] = 8080,
) -> None:
    """One actor in this process (one container or pod per actor); scale out by running more."""
    from fastapi import FastAPI

    from actors.registry import ACTORS
    from actors.runtime.host import ActorHost
    from brokers.health import probe_router

    if name not in ACTORS:
        raise typer.BadParameter(f"unknown actor {name!r}; choose from {', '.join(sorted(ACTORS))}")
    settings = _boot(f"emporium-{name}")
    actor_host = ActorHost([ACTORS[name]], settings, app_name=f"emporium-{name}")
    api = FastAPI(title=f"emporium {name}", docs_url=None, redoc_url=None)
    api.include_router(probe_router(actor_host.checks, settings))
    _serve(_run_actors_with(api, actor_host), settings, host, port)


@app.command()
def check(
    grace_s: Annotated[
        float, typer.Option(help="Slack past an order's deadline before it counts as stuck.")
    ] = 30.0,
    drained: Annotated[
        bool,
        typer.Option(
            "--drained",
            help="The system is quiet (nothing in flight): also check what holds only then, and count every "
            "order that is not delivered or cancelled as a violation.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the system's invariants through the actors' queries and the payment provider's ledger;
    exit 1 on any violation, 2 when something could not be read."""
    import asyncio
    import json
    from datetime import timedelta

    from rich.console import Console
    from rich.text import Text

    from brokers.settings import get_settings
    from ops.invariants import UNREADABLE, print_report
    from ops.invariants import check as check_invariants

    console = Console()
    try:
        report = asyncio.run(
            check_invariants(get_settings(), grace=timedelta(seconds=grace_s), drained=drained)
        )
    except UNREADABLE as exc:
        console.print(Text(f"error: could not read everything: {type(exc).__name__}: {exc}", style="red"))
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print_report(report, console)
    if not report.clean:
        raise typer.Exit(1)


@app.command("rebuild-orders")
def rebuild_orders() -> None:
    """Rebuild the orders read model from the order streams (safe while orders run)."""
    import asyncio

    from brokers.settings import get_settings
    from ops.orders_readmodel import rebuild_read_model

    rebuilt = asyncio.run(rebuild_read_model(get_settings()))
    typer.echo(f"rebuilt {rebuilt} orders from their streams")


@app.command()
def demo(
    url: Annotated[str, typer.Option(help="The edge's address.")] = "http://127.0.0.1:8000",
    timeout_s: Annotated[float, typer.Option(help="How long one order may take to settle.")] = 120.0,
) -> None:
    """A scripted customer journey through the running system, printed as it happens.

    It makes its own administrator over RabbitMQ (as `emporium admin create` does), so it needs the
    system's RABBITMQ_URL as well as the edge's address.
    """
    import httpx
    from rich.console import Console

    from brokers.settings import get_settings
    from ops.demo import DemoFailed, run_demo
    from ops.identity_admin import IdentityAdminFailed

    console = Console()
    try:
        outcomes = run_demo(url, get_settings(), console, timeout_s)
    except (DemoFailed, IdentityAdminFailed, httpx.HTTPError) as exc:
        Console(stderr=True).print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    for expected, status in outcomes:
        mark = "[green]as expected[/green]" if expected == status else f"[red]expected {expected}[/red]"
        console.print(f"{status:<10} {mark}")
    if any(expected != status for expected, status in outcomes):
        raise typer.Exit(1)


@app.command()
def load(
    url: Annotated[
        str, typer.Option(help="The edge's address (loopback unless --allow-remote).")
    ] = "http://127.0.0.1:8000",
    orders: Annotated[int, typer.Option(min=1, help="Orders to place.")] = 200,
    concurrency: Annotated[int, typer.Option(min=1, help="Orders in flight at most (not ended).")] = 16,
    rate: Annotated[float | None, typer.Option(min=0.001, help="Orders placed per second at most.")] = None,
    duration_s: Annotated[float, typer.Option(min=1, help="No order is placed after this.")] = 180.0,
    settle_s: Annotated[float, typer.Option(min=1, help="Time an accepted order may take to end.")] = 120.0,
    customers: Annotated[int, typer.Option(min=1, help="Customers registered for the run.")] = 20,
    declined_customers: Annotated[int, typer.Option(min=0, help="Of them, those with declined cards.")] = 2,
    seed: Annotated[int | None, typer.Option(help="Makes the plan (SKUs, cancels) repeatable.")] = None,
    out: Annotated[Path | None, typer.Option(help="Report directory (.data/load/<timestamp>).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary and ledger as JSON.")] = False,
    allow_remote: Annotated[bool, typer.Option(help="Allow an edge that is not on this machine.")] = False,
) -> None:
    """Customers ordering at once through the edge, each order followed to its end; a report and a plot.

    It makes its own administrator over RabbitMQ (as `emporium admin create` does), so it needs the
    system's RABBITMQ_URL as well as the edge's address. Start that edge with a login budget for
    every customer (EMPORIUM_LOGIN_RATE_LIMIT of at least 2 x customers + 1 a minute).
    """
    import asyncio
    import json
    from datetime import datetime

    import httpx
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from brokers.logs import configure_logging
    from brokers.settings import get_settings
    from ops.identity_admin import IdentityAdminFailed
    from ops.load import LoadConfig, LoadFailed, run_load
    from ops.load_report import as_json as result_json
    from ops.load_report import summarise, summary_tables, write_report

    console = Console(stderr=as_json)  # with --json, stdout holds the JSON only
    try:
        config = LoadConfig(
            orders=orders,
            concurrency=concurrency,
            rate_per_s=rate,
            duration_s=duration_s,
            settle_s=settle_s,
            customers=customers,
            declined_customers=declined_customers,
            seed=seed,
            allow_remote=allow_remote,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    out_dir = out or Path(".data/load") / datetime.now().strftime("%Y%m%d-%H%M%S")
    configure_logging("ERROR")  # the RabbitMQ client's chatter would garble the progress bars
    columns = (
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
    )
    try:
        with Progress(*columns, console=console, disable=as_json) as progress:
            result = asyncio.run(run_load(url, config, settings=get_settings(), progress=progress))
    except (LoadFailed, IdentityAdminFailed, httpx.HTTPError) as exc:
        Console(stderr=True).print(f"[red]load failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    paths = write_report(result, out_dir)
    if as_json:
        typer.echo(json.dumps(result_json(result, paths), indent=2))
        return
    for table in summary_tables(summarise(result)):
        console.print(table)
    console.print(f"report: {paths.markdown}  figure: {paths.figure}")


@app.command()
def chaos(
    scenario: Annotated[
        list[str] | None, typer.Option(help="A scenario to run (repeat the option); default: every one.")
    ] = None,
    orders: Annotated[int, typer.Option(min=1, help="Orders offered per scenario.")] = 40,
    concurrency: Annotated[int, typer.Option(min=1, help="Orders in flight at once.")] = 8,
    full: Annotated[
        bool, typer.Option(help="The full run: 1,000 orders per scenario, 32 in flight.")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Report directory (.data/chaos/<timestamp>).")] = None,
    seed: Annotated[int, typer.Option(help="Makes the plans and the faults' choices repeatable.")] = 1,
) -> None:
    """The system as separate supervised processes on servers of its own, a load through the edge and
    one fault per scenario; then what the edge accepted against what the system did (exit 1 if unclean).
    """
    import asyncio
    from datetime import UTC, datetime

    from rich.console import Console

    from brokers.logs import configure_logging
    from brokers.settings import get_settings
    from ops.chaos import (
        SCENARIOS,
        ChaosError,
        Row,
        Timings,
        load_drive,
        report_markdown,
        rows_table,
        run_chaos,
    )
    from ops.load import LoadConfig, LoadFailed
    from ops.servers import ServerFailed

    chosen = scenario or list(SCENARIOS)
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        raise typer.BadParameter(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    if full:
        orders, concurrency = 1_000, 32
    console = Console(width=None if sys.stdout.isatty() else 200)  # a log file gets the whole table
    configure_logging("WARNING")
    started = datetime.now(UTC)
    directory = out or Path(".data/chaos") / f"{started:%Y%m%d-%H%M%S}"
    directory.mkdir(parents=True, exist_ok=True)
    config = LoadConfig(orders=orders, concurrency=concurrency, seed=seed, duration_s=max(180.0, orders / 2))
    # "-dirty" when the run's code is not the commit's alone.
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True, text=True
    ).stdout.strip()
    rows: list[Row] = []

    def on_row(row: Row) -> None:
        """Shown and written as each scenario ends: a run that stops later keeps what it found."""
        rows.append(row)
        console.print(rows_table([row]))
        report = report_markdown(rows, commit=commit or "unknown", orders=orders, started=started)
        (directory / "chaos.md").write_text(report)

    try:
        asyncio.run(
            run_chaos(
                chosen,
                base=get_settings(),
                drive=load_drive(config),
                directory=directory,
                timings=Timings(),
                seed=seed,
                on_row=on_row,
            )
        )
    except (ChaosError, ServerFailed, LoadFailed) as exc:
        Console(stderr=True).print(f"[red]chaos failed:[/red] {exc}")
        if rows:
            console.print(f"report of the scenarios before it: {directory / 'chaos.md'}")
        raise typer.Exit(1) from exc
    console.print(rows_table(rows))
    console.print(f"report: {directory / 'chaos.md'}")
    if not all(row.clean for row in rows):
        raise typer.Exit(1)


@app.command()
def edge(
    host: Host = "0.0.0.0", port: Annotated[int, typer.Option(help="Port the edge listens on.")] = 8000
) -> None:
    """The HTTP edge alone."""
    from edge.app import create_app

    settings = _boot("emporium-edge")
    _serve(create_app(settings), settings, host, port)


def _run_actors_with(api: FastAPI, actor_host) -> FastAPI:
    """Start the actors before the app's own lifespan and stop them after it."""
    inner = api.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI):
        await actor_host.start()
        try:
            async with inner(application):
                yield
        finally:
            await actor_host.stop()

    api.router.lifespan_context = lifespan
    return api
