"""A load run's figures, its markdown report and its plot, from a made-up run."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ops.load import Cancel, CancelRecord, LoadConfig, LoadResult, OrderRecord, PlannedOrder
from ops.load_report import (
    FIGURE_NAME,
    Timeline,
    as_json,
    bucket_width_s,
    p50_p99,
    per_second,
    quantiles_per_bucket,
    render_markdown,
    summarise,
    write_report,
)


def _order(number: int, **recorded) -> OrderRecord:
    cancel = recorded.pop("cancel", None)
    planned = PlannedOrder(
        number, 0, (("LOAD-R-HOT-1", 1),), cancel.plan if cancel else Cancel.NONE, 0.0, f"k{number}"
    )
    return OrderRecord(planned, cancel=cancel, **recorded)


def _run() -> LoadResult:
    orders = [
        _order(0, order_id="o0", accepted_at=0.1, status="delivered", ended_at=2.1),
        _order(1, order_id="o1", accepted_at=0.2, status="delivered", ended_at=3.2),
        _order(
            2, order_id="o2", accepted_at=0.5, status="cancelled", cancel_reason="out_of_stock", ended_at=1.0
        ),
        _order(
            3,
            order_id="o3",
            accepted_at=1.0,
            status="delivered",
            ended_at=5.0,
            cancel=CancelRecord(Cancel.AFTER_DISPATCH, sent_at=4.0, answer=409),
        ),
        _order(
            4,
            order_id="o4",
            accepted_at=1.5,
            status="cancelled",
            cancel_reason="customer",
            ended_at=2.0,
            cancel=CancelRecord(Cancel.AT_ONCE, sent_at=1.5, answer=202),
        ),
        _order(5, order_id="o5", accepted_at=2.0, status="confirmed"),  # never ended in time
        _order(6, refused=503),
        _order(7),
    ]
    return LoadResult(
        edge_url="http://127.0.0.1:8000",
        config=LoadConfig(orders=len(orders), customers=1, declined_customers=0),
        run_id="R",
        started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        setup_s=4.2,
        skus={"LOAD-R-HOT-1": "hot"},
        stock={"LOAD-R-HOT-1": 3},
        orders=orders,
        answers=Counter({"POST /orders 202": 6, "POST /orders 503": 3, "POST /auth/login 429": 2}),
        sheds_at=[0.9, 1.1, 1.3],
    )


def test_p50_and_p99_are_the_statistics_quantiles_within_the_values_seen():
    values = [float(v) for v in range(1, 101)]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    assert p50_p99(values) == (cuts[49], cuts[98]) == (50.5, 99.01)
    assert p50_p99([2.5]) == (2.5, 2.5)
    assert p50_p99([]) is None


def test_the_summary_counts_every_accepted_order_once_by_its_outcome():
    summary = summarise(_run())
    assert summary.planned == 8
    assert summary.accepted == 6
    assert summary.ended == 5
    assert sum(summary.outcomes.values()) == summary.accepted
    assert summary.outcomes == {
        "delivered": 3,
        "cancelled: customer": 1,
        "cancelled: out_of_stock": 1,
        "unsettled (confirmed)": 1,
    }
    assert summary.not_accepted == {"not placed": 1, "refused (503)": 1}
    assert summary.cancels == {"after dispatch": {"409": 1}, "right after the 202": {"202": 1}}
    assert (summary.sheds, summary.rate_limited) == (3, 2)


def test_rates_count_from_the_start_of_placing_and_latency_from_the_202():
    summary = summarise(_run())
    assert summary.accepted_per_s == pytest.approx(6 / 2.0)
    assert summary.completed_per_s == pytest.approx(5 / 5.0)
    latencies = [2.0, 3.0, 0.5, 4.0, 0.5]
    assert (summary.p50_s, summary.p99_s) == pytest.approx(p50_p99(latencies))


def test_the_ledger_lists_what_the_edge_accepted_and_how_it_answered_cancels():
    result = _run()
    assert result.accepted_ids == ["o0", "o1", "o2", "o3", "o4", "o5"]
    assert result.cancels_answered(409) == ["o3"]
    assert result.cancels_answered(202) == ["o4"]
    assert result.ledger()["cancels"] == {
        "o3": {"when": "after dispatch", "answer": 409},
        "o4": {"when": "right after the 202", "answer": 202},
    }


def test_time_is_cut_into_buckets_of_a_second_at_least():
    assert bucket_width_s(5.0) == 1.0
    assert bucket_width_s(600.0) == 10.0
    assert bucket_width_s(601.0) == 11.0
    # 0.1, 0.9 and 1.5 fall in the first 2 s; 9.9, past the end, folds into the last bucket.
    assert per_second([0.1, 0.9, 1.5, 9.9], width_s=2.0, buckets=3) == [1.5, 0.0, 0.5]


def test_quantiles_per_bucket_skip_empty_buckets_and_keep_the_end_in_the_last():
    points = [(0.2, 1.0), (0.7, 3.0), (2.5, 5.0), (4.0, 7.0)]  # 4.0: the end of the last bucket
    assert quantiles_per_bucket(points, width_s=2.0, buckets=2) == [(1.0, 2.0, 2.98), (3.0, 6.0, 6.98)]


def test_the_timeline_holds_one_point_per_ended_order():
    timeline = Timeline.of(_run())
    assert timeline.edges[0] == 0.0 and timeline.edges[-1] >= 5.0
    assert sum(timeline.accepted_per_s) == 6  # buckets of 1 s
    assert sum(timeline.sheds_per_s) == 3
    assert sorted(timeline.latency_s) == pytest.approx(sorted([2.0, 3.0, 0.5, 4.0, 0.5]))
    assert timeline.cancelled.count(True) == 2
    # Delivered orders end at 2.1, 3.2 and 5.0 (the end of the run: the last bucket).
    assert [centre for centre, _, _ in timeline.delivered_quantiles] == [2.5, 3.5, 4.5]


def test_the_markdown_report_shows_the_figures_and_names_the_figure():
    result = _run()
    markdown = render_markdown(result, summarise(result))
    assert markdown.startswith("# Load run R, 2026-01-02 03:04:05 UTC")
    assert f"![Figure 1: throughput and latency over time]({FIGURE_NAME})" in markdown
    assert "| accepted/s | 3.0 |" in markdown
    assert "| cancelled: out_of_stock | 1 |" in markdown
    assert "| after dispatch | 409 | 1 |" in markdown
    assert "| POST /orders | 503 | 3 |" in markdown


def test_the_report_is_written_with_a_png_figure_and_json_points_at_it(tmp_path: Path):
    result = _run()
    paths = write_report(result, tmp_path / "run")
    assert paths.figure.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert paths.figure.name in paths.markdown.read_text()
    printed = as_json(result, paths)
    assert printed["summary"]["accepted"] == 6
    assert printed["ledger"]["accepted"] == result.accepted_ids
    assert printed["report"] == {"markdown": str(paths.markdown), "figure": str(paths.figure)}


def test_a_run_that_accepted_nothing_still_reports(tmp_path: Path):
    result = _run()
    result.orders = [_order(0, refused=503)]
    paths = write_report(result, tmp_path)
    summary = summarise(result)
    assert (summary.accepted, summary.p50_s, summary.accepted_per_s) == (0, None, 0.0)
    assert paths.figure.exists()
