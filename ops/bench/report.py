"""`emporium bench report`: the runtime's hops by batch size, the database alone and whole orders, in
one table with ratios, written as markdown and a PNG figure.

Every figure comes from the same run on the same machine: the raw aio-pika hop is the broker's
baseline, the database alone (the same writes per message, no broker) is the ceiling a runtime hop
can approach at each batch size, and the saga's delivered orders/s sit beside the orders/s that
ceiling would allow at the saga's messages per order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.progress import Progress
from rich.table import Table

from brokers.logs import configure_logging
from brokers.settings import Settings, get_settings
from ops.bench.common import (
    BenchmarkError,
    DatabaseCeiling,
    app,
    console,
    database_ceiling,
    errors,
    percentile,
)
from ops.bench.hop import HopFigures, faststream_hop, raw_hop, run_hops, runtime_hop
from ops.bench.saga import run_saga
from ops.bench.saga_figures import SagaFigures

REPORT_NAME, FIGURE_NAME = "bench.md", "bench.png"


@dataclass(frozen=True)
class Report:
    concurrency: int
    baseline: list[HopFigures]  # raw aio-pika, FastStream
    by_batch: dict[int, HopFigures]  # the runtime hop, by batch size
    ceilings: dict[int, DatabaseCeiling]  # the database alone, by batch size
    saga: SagaFigures
    saga_batch: int
    saga_concurrency: int

    @property
    def raw(self) -> HopFigures:
        return self.baseline[0]

    def saga_messages_per_order(self) -> float:
        return self.saga.per_order(sum(self.saga.cost.taken.values()))

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(what, throughput, p50, p99, ÷ raw) for every line of the table."""
        raw = self.raw.per_second
        lines = [
            (
                hop.name,
                f"{hop.per_second:,.0f} msg/s",
                f"{hop.p50_ms:.1f}",
                f"{hop.p99_ms:.1f}",
                f"{hop.per_second / raw:.2f}x",
            )
            for hop in (*self.baseline, *self.by_batch.values())
        ]
        for batch, ceiling in self.ceilings.items():
            per_second = ceiling.batched_per_s if batch > 1 else ceiling.single_per_s
            lines.append(
                (
                    f"MongoDB alone, {batch} per transaction",
                    f"{per_second:,.0f} msg/s",
                    "-",
                    "-",
                    f"{per_second / raw:.2f}x",
                )
            )
        saga, per_order = self.saga, self.saga_messages_per_order()
        saga_ceiling = self.ceilings[self.saga_batch].batched_per_s / per_order
        delivered_per_s = saga.delivered / saga.seconds
        lines += [
            (
                f"saga, {self.saga_concurrency} orders in flight (batch {self.saga_batch})",
                f"{delivered_per_s:.1f} orders/s",
                _ms(saga.to_confirmed_s, 0.5),
                _ms(saga.to_confirmed_s, 0.99),
                f"{delivered_per_s / saga_ceiling:.2f}x of the ceiling",
            ),
            (
                f"saga ceiling: MongoDB alone at batch {self.saga_batch} ÷ {per_order:.0f} messages per order",
                f"{saga_ceiling:.1f} orders/s",
                "-",
                "-",
                "-",
            ),
        ]
        return lines

    def costs(self) -> list[tuple[str, str]]:
        saga = self.saga
        return [
            ("messages published per order", f"{saga.per_order(saga.cost.published):.1f}"),
            ("messages taken by actors per order", f"{self.saga_messages_per_order():.1f}"),
            ("events no actor takes per order", f"{saga.per_order(saga.cost.parked):.1f}"),
            (
                "MongoDB round trips per order",
                f"{saga.per_order(sum(saga.cost.mongo_commands.values())):.1f}",
            ),
            ("MongoDB transactions per order", f"{saga.per_order(saga.transactions):.1f}"),
        ]


def _ms(seconds: Sequence[float], fraction: float) -> str:
    return f"{percentile(seconds, fraction) * 1000:.0f}" if seconds else "-"


HEADER = ("", "throughput", "p50 ms", "p99 ms", "÷ raw aio-pika")


def table(report: Report) -> Table:
    out = Table(
        title=f"emporium bench report: hops with {report.concurrency} in flight; saga latency placed → confirmed"
    )
    for n, column in enumerate(HEADER):
        out.add_column(column, justify="left" if n == 0 else "right", no_wrap=n == 0)
    for row in report.rows():
        out.add_row(*row)
    return out


def markdown(report: Report) -> str:
    def rows(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
            "| " + " | ".join(row) + " |" for row in body
        ]

    return "\n".join(
        [
            "# emporium bench report",
            "",
            f"Hops: {report.raw.messages} messages each, {report.concurrency} in flight. Saga: "
            f"{report.saga.placed} orders, {report.saga_concurrency} in flight, group commit at batch "
            f"{report.saga_batch}. Every figure from one run on one machine; ratios against the raw aio-pika hop.",
            "",
            *rows(HEADER, report.rows()),
            "",
            "## What an order costs",
            "",
            *rows(("per delivered order", ""), report.costs()),
            "",
            f"![Throughput and latency by batch size]({FIGURE_NAME})",
            "",
            f"`{FIGURE_NAME}`: above, the runtime hop's messages/s by batch size beside the database alone doing "
            "the same writes; below, the runtime hop's p50 and p99 latency by batch size.",
            "",
        ]
    )


def plot(report: Report, path: Path) -> None:
    figure = Figure(figsize=(8, 7), layout="constrained")
    FigureCanvasAgg(figure)
    throughput, latency = figure.subplots(2, 1, sharex=True)
    sizes = list(report.by_batch)
    hops = list(report.by_batch.values())
    throughput.plot(sizes, [hop.per_second for hop in hops], marker="o", label="actor runtime")
    ceilings = [report.ceilings[b].batched_per_s if b > 1 else report.ceilings[b].single_per_s for b in sizes]
    throughput.plot(sizes, ceilings, marker="s", linestyle="--", label="MongoDB alone")
    throughput.axhline(report.raw.per_second, color="grey", linestyle=":", label="raw aio-pika")
    throughput.set_xscale("log", base=2)
    throughput.set_ylabel("messages / s")
    throughput.set_title("throughput by batch size")
    throughput.legend()
    latency.plot(sizes, [hop.p50_ms for hop in hops], marker="o", label="p50")
    latency.plot(sizes, [hop.p99_ms for hop in hops], marker="o", linestyle="--", label="p99")
    latency.set_xlabel("messages per transaction (EMPORIUM_BATCH_SIZE)")
    latency.set_ylabel("publish → ack (ms)")
    latency.set_title("runtime hop latency by batch size")
    latency.legend()
    figure.savefig(path, dpi=100)


async def measure(
    settings: Settings,
    *,
    batch_sizes: Sequence[int],
    messages: int,
    concurrency: int,
    orders: int,
    saga_concurrency: int,
    progress: Progress,
) -> Report:
    hops = [("raw aio-pika", raw_hop), ("FastStream", faststream_hop)] + [
        (f"actor runtime, batch {batch}", partial(runtime_hop, batch_size=batch)) for batch in batch_sizes
    ]
    hop_settings = settings.model_copy(update={"emporium_prefetch": concurrency})
    figures = await run_hops(
        hop_settings,
        messages=messages,
        concurrency=concurrency,
        warmup=min(200, messages),
        progress=progress,
        chosen=hops,
    )
    ceilings = {batch: await database_ceiling(settings, batch=batch) for batch in batch_sizes}
    if settings.emporium_batch_size not in ceilings:
        ceilings[settings.emporium_batch_size] = await database_ceiling(
            settings, batch=settings.emporium_batch_size
        )
    saga = await run_saga(
        settings,
        orders=orders,
        warmup=5,
        concurrency=saga_concurrency,
        carrier_step_ms=100,
        progress=progress,
    )
    return Report(
        concurrency,
        figures[:2],
        dict(zip(batch_sizes, figures[2:], strict=True)),
        ceilings,
        saga,
        settings.emporium_batch_size,
        saga_concurrency,
    )


@app.command("report")
def report_command(
    out: Annotated[Path, typer.Option(help="Directory the markdown and the PNG are written to.")] = Path(
        "docs/bench"
    ),
    batch_sizes: Annotated[
        str, typer.Option(help="Batch sizes of the runtime hop, comma-separated.")
    ] = "1,8,32,128",
    messages: Annotated[int, typer.Option(min=10, help="Messages measured per hop.")] = 2000,
    concurrency: Annotated[int, typer.Option(min=1, help="Messages in flight in every hop.")] = 128,
    orders: Annotated[int, typer.Option(min=1, max=10_000, help="Orders of the saga run.")] = 200,
    saga_concurrency: Annotated[int, typer.Option(min=1, help="Orders in flight in the saga run.")] = 40,
) -> None:
    """Hops by batch size, the database alone and whole orders in one table, as markdown and PNG too."""
    try:
        sizes = sorted({int(size) for size in batch_sizes.split(",")})
    except ValueError as exc:
        raise typer.BadParameter(
            f"not a list of whole numbers: {batch_sizes!r}", param_hint="--batch-sizes"
        ) from exc
    if not sizes or sizes[0] < 1:
        raise typer.BadParameter("batch sizes are 1 or more", param_hint="--batch-sizes")
    settings = get_settings()
    configure_logging("ERROR")
    with Progress(console=console) as progress:
        try:
            report = asyncio.run(
                measure(
                    settings,
                    batch_sizes=sizes,
                    messages=messages,
                    concurrency=concurrency,
                    orders=orders,
                    saga_concurrency=saga_concurrency,
                    progress=progress,
                )
            )
        except BenchmarkError as exc:
            errors.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    console.print(table(report))
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_NAME).write_text(markdown(report))
    plot(report, out / FIGURE_NAME)
    console.print(f"written: {out / REPORT_NAME}, {out / FIGURE_NAME}")
