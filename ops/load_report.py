"""What a load run shows: its figures (pure), a markdown report, and a plot of it over time.

The plot is drawn with matplotlib's Agg canvas directly (no pyplot): no display, no global figure
state, so a chaos run can draw it inside its own process.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.table import Table

from ops.bench.common import percentile
from ops.load import PLACE_ROUTE, LoadResult

REPORT_NAME = "report.md"
FIGURE_NAME = "load.png"
TARGET_BUCKETS = 60  # the plot's time axis is cut into about this many buckets, each 1 s at least
LEGEND_BESIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}  # the points fill the axes


# --- figures (pure) -------------------------------------------------------------------------------


def p50_p99(values: Sequence[float]) -> tuple[float, float] | None:
    """The median and the 99th percentile (within the values seen); None without values."""
    return (percentile(values, 0.50), percentile(values, 0.99)) if values else None


@dataclass(frozen=True)
class LoadSummary:
    planned: int
    accepted: int
    ended: int  # accepted orders seen delivered or cancelled
    accepted_per_s: float  # accepted orders over the time from the first placed to the last accepted
    completed_per_s: float  # ended orders over the time from the first placed to the last ended
    p50_s: float | None  # from the 202 to the end seen, over the ended orders
    p99_s: float | None
    outcomes: dict[str, int]  # of the accepted orders: they add up to ``accepted``
    not_accepted: dict[str, int]  # the planned orders never accepted, by why
    sheds: int  # 503s to POST /orders (each waited out and the order placed again)
    rate_limited: int  # 429s, every route
    cancels: dict[str, dict[str, int]]  # when the cancel was planned -> the edge's answer -> orders
    answers: dict[str, int]  # "POST /orders 202" -> how often


def _per_s(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def _by_count(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda item: (-item[1], item[0])))


def summarise(result: LoadResult) -> LoadSummary:
    accepted = [order for order in result.orders if order.accepted]
    ended = [order for order in accepted if order.ended]
    latencies = [order.latency_s for order in ended if order.latency_s is not None]
    quantiles = p50_p99(latencies)
    cancels: dict[str, Counter[str]] = {}
    for order in accepted:
        if order.cancel is not None:
            answer = "not sent" if order.cancel.answer is None else str(order.cancel.answer)
            cancels.setdefault(order.cancel.plan.value, Counter())[answer] += 1
    return LoadSummary(
        planned=len(result.orders),
        accepted=len(accepted),
        ended=len(ended),
        accepted_per_s=_per_s(len(accepted), max((o.accepted_at or 0.0 for o in accepted), default=0.0)),
        completed_per_s=_per_s(len(ended), max((o.ended_at or 0.0 for o in ended), default=0.0)),
        p50_s=quantiles[0] if quantiles else None,
        p99_s=quantiles[1] if quantiles else None,
        outcomes=_by_count(Counter(order.outcome for order in accepted)),
        not_accepted=_by_count(Counter(order.outcome for order in result.orders if not order.accepted)),
        sheds=result.answers[f"POST {PLACE_ROUTE} 503"],
        rate_limited=sum(n for answer, n in result.answers.items() if answer.endswith(" 429")),
        cancels={plan: _by_count(answers) for plan, answers in cancels.items()},
        answers=dict(sorted(result.answers.items())),
    )


def bucket_width_s(span_s: float) -> float:
    """Seconds per bucket of the plot's time axis: about TARGET_BUCKETS of them, 1 s at least."""
    return float(max(1, math.ceil(span_s / TARGET_BUCKETS)))


def bucket_of(at: float, width_s: float, buckets: int) -> int:
    """The bucket a time falls in (one at the very end, or past it, falls in the last)."""
    return min(int(at // width_s), buckets - 1)


def per_second(times: Iterable[float], width_s: float, buckets: int) -> list[float]:
    """How many of ``times`` fall in each bucket, per second."""
    counts = [0] * buckets
    for at in times:
        counts[bucket_of(at, width_s, buckets)] += 1
    return [count / width_s for count in counts]


def quantiles_per_bucket(
    points: Iterable[tuple[float, float]], width_s: float, buckets: int
) -> list[tuple[float, float, float]]:
    """(bucket centre, p50, p99) of the values of ``points`` (time, value), for each bucket holding any."""
    values: dict[int, list[float]] = {}
    for at, value in points:
        values.setdefault(bucket_of(at, width_s, buckets), []).append(value)
    rows = []
    for bucket in sorted(values):
        quantiles = p50_p99(values[bucket])
        assert quantiles is not None  # a bucket is listed once it holds a value
        rows.append(((bucket + 0.5) * width_s, *quantiles))
    return rows


@dataclass(frozen=True)
class Timeline:
    """The run over time, bucket by bucket: what the plot draws."""

    edges: list[float]  # bucket i spans edges[i] to edges[i + 1] seconds into the run
    accepted_per_s: list[float]
    completed_per_s: list[float]
    sheds_per_s: list[float]
    ended_at: list[float]  # one point per ended order: when it ended, and how long it took
    latency_s: list[float]
    cancelled: list[bool]
    # (bucket centre, p50, p99) of the delivered orders' latency: a cancel ends early, and mixed in
    # it would make the lines jump between the two kinds of end.
    delivered_quantiles: list[tuple[float, float, float]]

    @classmethod
    def of(cls, result: LoadResult) -> Timeline:
        accepted_at = [o.accepted_at for o in result.orders if o.accepted_at is not None]
        # (when it ended, how long it took, how) of every ended order
        ended = [
            (o.ended_at, o.latency_s, o.status)
            for o in result.orders
            if o.ended_at is not None and o.latency_s is not None
        ]
        span = max([*accepted_at, *(at for at, _, _ in ended), *result.sheds_at], default=0.0)
        width = bucket_width_s(span)
        buckets = max(1, math.ceil(span / width)) if span else 1
        return cls(
            edges=[i * width for i in range(buckets + 1)],
            accepted_per_s=per_second(accepted_at, width, buckets),
            completed_per_s=per_second((at for at, _, _ in ended), width, buckets),
            sheds_per_s=per_second(result.sheds_at, width, buckets),
            ended_at=[at for at, _, _ in ended],
            latency_s=[latency for _, latency, _ in ended],
            cancelled=[status == "cancelled" for _, _, status in ended],
            delivered_quantiles=quantiles_per_bucket(
                ((at, latency) for at, latency, status in ended if status == "delivered"), width, buckets
            ),
        )


# --- showing it -----------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def headline(summary: LoadSummary) -> list[tuple[str, str]]:
    """The figures a run is judged by, in the order they are shown."""
    return [
        ("orders planned", str(summary.planned)),
        ("accepted", str(summary.accepted)),
        ("ended (delivered or cancelled)", str(summary.ended)),
        ("accepted/s", f"{summary.accepted_per_s:.1f}"),
        ("completed/s", f"{summary.completed_per_s:.1f}"),
        ("placed→ended p50", _seconds(summary.p50_s)),
        ("placed→ended p99", _seconds(summary.p99_s)),
        ("sheds (503 to POST /orders)", str(summary.sheds)),
        ("rate limited (429)", str(summary.rate_limited)),
    ]


def summary_tables(summary: LoadSummary) -> list[Table]:
    """The summary for a terminal."""
    figures = Table("figure", "value", title="load")
    for name, value in headline(summary):
        figures.add_row(name, value)
    outcomes = Table("outcome", "orders", title="outcomes")
    for outcome, count in {**summary.outcomes, **summary.not_accepted}.items():
        outcomes.add_row(outcome, str(count))
    cancels = Table("cancel", "edge answered", "orders", title="cancels")
    for plan, answers in summary.cancels.items():
        for answer, count in answers.items():
            cancels.add_row(plan, answer, str(count))
    return [figures, outcomes, cancels]


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def render_markdown(result: LoadResult, summary: LoadSummary, figure_name: str = FIGURE_NAME) -> str:
    config = result.config
    kinds = Counter(result.skus.values())
    pace = f"at most {config.rate_per_s:g}/s" if config.rate_per_s else "as fast as slots free up"
    lines = [
        f"# Load run {result.run_id}, {result.started_at:%Y-%m-%d %H:%M:%S} UTC",
        "",
        f"Edge {result.edge_url}. {config.orders} orders planned, {config.concurrency} in flight at most, "
        f"{pace}, placed within {config.duration_s:g} s, each followed for {config.settle_s:g} s at most. "
        f"{config.customers} customers ({config.declined_customers} with cards the provider declines). "
        f"SKUs: {kinds['hot']} hot, {kinds['normal']} normal, {kinds['out_of_stock']} out of stock. "
        f"Set-up took {result.setup_s:.1f} s.",
        "",
        "## Figures",
        "",
        *_table(("figure", "value"), headline(summary)),
        "",
        "Latency runs from the edge's 202 to the moment the order's end reached the load over its "
        "events stream; throughput counts from the first order placed.",
        "",
        "## Outcomes",
        "",
        *_table(("outcome", "orders"), [*summary.outcomes.items(), *summary.not_accepted.items()]),
        "",
        "## Cancels",
        "",
        *_table(
            ("when", "edge answered", "orders"),
            [(plan, answer, n) for plan, answers in summary.cancels.items() for answer, n in answers.items()],
        ),
        "",
        "## Stock",
        "",
        *_table(
            ("SKU", "kind", "units stocked"),
            [(sku, result.skus[sku], units) for sku, units in result.stock.items()],
        ),
        "",
        "## What the edge answered",
        "",
        *_table(
            ("request", "answer", "count"), [(*key.rsplit(" ", 1), n) for key, n in summary.answers.items()]
        ),
        "",
        "## Over time",
        "",
        f"![Figure 1: throughput and latency over time]({figure_name})",
        "",
        f"Figure 1 (`{figure_name}`): above, orders accepted, ended and shed per second; below, each "
        "ended order's latency at the time it ended, with the p50 and p99 of the orders delivered in each "
        "time bucket.",
        "",
    ]
    return "\n".join(lines)


def plot(timeline: Timeline, path: Path) -> None:
    """Draw throughput and latency over time into a PNG at ``path``."""
    figure = Figure(figsize=(10, 7), layout="constrained")
    FigureCanvasAgg(figure)  # attaches the Agg canvas: savefig renders through it
    throughput, latency = figure.subplots(2, 1, sharex=True)
    throughput.stairs(timeline.accepted_per_s, timeline.edges, label="accepted")
    throughput.stairs(timeline.completed_per_s, timeline.edges, label="ended")
    throughput.stairs(timeline.sheds_per_s, timeline.edges, label="shed (503)", linestyle=":")
    throughput.set_ylabel("orders / s")
    throughput.set_title("throughput")
    throughput.legend(**LEGEND_BESIDE)
    _latency_panel(latency, timeline)
    figure.savefig(path, dpi=100)


def _latency_panel(axes: Any, timeline: Timeline) -> None:
    for cancelled, label, marker, colour in (
        (False, "delivered", ".", "tab:green"),
        (True, "cancelled", "x", "tab:red"),
    ):
        points = [
            (at, s)
            for at, s, c in zip(timeline.ended_at, timeline.latency_s, timeline.cancelled, strict=True)
            if c == cancelled
        ]
        axes.scatter(
            [at for at, _ in points],
            [s for _, s in points],
            s=12,
            marker=marker,
            color=colour,
            label=label,
            alpha=0.6,
        )
    centres = [centre for centre, _, _ in timeline.delivered_quantiles]
    axes.plot(
        centres, [p50 for _, p50, _ in timeline.delivered_quantiles], color="black", label="delivered p50"
    )
    axes.plot(
        centres,
        [p99 for _, _, p99 in timeline.delivered_quantiles],
        color="black",
        linestyle="--",
        label="delivered p99",
    )
    axes.set_xlabel("seconds into the run")
    axes.set_ylabel("202 → end (s)")
    axes.set_title("latency")
    axes.legend(**LEGEND_BESIDE)


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    figure: Path


def write_report(result: LoadResult, out_dir: Path) -> ReportPaths:
    """The markdown report and its figure, in ``out_dir`` (made if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(out_dir / REPORT_NAME, out_dir / FIGURE_NAME)
    plot(Timeline.of(result), paths.figure)
    paths.markdown.write_text(render_markdown(result, summarise(result), paths.figure.name))
    return paths


def as_json(result: LoadResult, paths: ReportPaths) -> dict[str, Any]:
    """What `emporium load --json` prints: the summary, the ledger, and where the report is."""
    return {
        "run_id": result.run_id,
        "edge_url": result.edge_url,
        "summary": asdict(summarise(result)),
        "ledger": result.ledger(),
        "report": {"markdown": str(paths.markdown), "figure": str(paths.figure)},
    }
