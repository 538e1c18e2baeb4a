"""The pure parts of `emporium bench hop` (it shares the ops CLI's test prefix): figures and pacing."""

import asyncio

import pytest

from brokers.envelope import REGISTRY, Kind
from brokers.topology import exchange_for
from ops.bench import BenchPing, DatabaseShare, HopFigures, Meter, bench_actor, percentile, run_round, summary


def test_percentiles_interpolate_between_neighbours():
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled below
    shuffled = values[50:] + values[:50]
    assert percentile(shuffled, 0.5) == pytest.approx(50.5)
    assert percentile(shuffled, 0.99) == pytest.approx(99.01)
    assert percentile(shuffled, 0.0) == 1.0
    assert percentile(shuffled, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0


def test_percentiles_refuse_nothing_and_fractions_outside_zero_to_one():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 99)


def test_hop_figures_are_in_messages_per_second_and_milliseconds():
    hop = HopFigures.of("runtime", [0.001, 0.002, 0.003, 0.006], seconds=0.5, transaction_ms=1.5)
    assert hop.messages == 4
    assert hop.per_second == pytest.approx(8.0)
    assert hop.p50_ms == pytest.approx(2.5)
    assert hop.p99_ms == pytest.approx(5.91)
    assert hop.mean_ms == pytest.approx(3.0)
    assert hop.transaction_ms == 1.5


def _hop(name: str, seconds: float, p50_ms: float, mean_ms: float, transaction_ms: float | None = None):
    return HopFigures(
        name, 1000, seconds, p50_ms, p99_ms=2 * p50_ms, mean_ms=mean_ms, transaction_ms=transaction_ms
    )


RAW = _hop("raw aio-pika", seconds=0.25, p50_ms=5.0, mean_ms=5.0)
FASTSTREAM = _hop("FastStream", seconds=1.0, p50_ms=20.0, mean_ms=20.0)
RUNTIME = _hop("actor runtime", seconds=4.0, p50_ms=80.0, mean_ms=100.0, transaction_ms=60.0)


def test_the_database_share_is_what_the_runtime_adds_and_what_its_transactions_take():
    share = DatabaseShare.of(FASTSTREAM, RUNTIME)
    assert share.of_time_per_message == pytest.approx(0.75)
    assert share.of_p50 == pytest.approx(0.75)
    assert share.transaction_of_mean_latency == pytest.approx(0.6)


def test_a_database_share_needs_the_hop_with_transactions():
    with pytest.raises(ValueError, match="has no transaction time"):
        DatabaseShare.of(RAW, FASTSTREAM)


def test_the_bench_message_is_a_command_for_the_bench_actor_only():
    assert BenchPing.TYPE not in REGISTRY  # no other actor or contract test sees it
    assert BenchPing.KIND is Kind.COMMAND
    assert exchange_for(BenchPing).name == "emporium.commands"
    assert set(bench_actor.handlers) == {BenchPing.TYPE}


async def test_a_round_keeps_at_most_the_concurrency_in_flight_and_times_every_message():
    ticks: list[None] = []
    meter = Meter(concurrency=3, tick=lambda: ticks.append(None))
    in_flight: list[BenchPing] = []
    most_in_flight = 0

    async def publish(ping: BenchPing) -> None:
        nonlocal most_in_flight
        in_flight.append(ping)
        most_in_flight = max(most_in_flight, len(in_flight))
        asyncio.get_running_loop().call_later(0.001, consume, ping)

    def consume(ping: BenchPing) -> None:
        in_flight.remove(ping)
        meter.consumed(ping.body())

    latencies, seconds = await run_round(publish, meter, messages=40, concurrency=3)

    assert len(latencies) == 40 and len(ticks) == 40
    assert most_in_flight == 3
    assert all(0 < latency < seconds for latency in latencies)


async def test_a_round_of_no_messages_is_over_at_once():
    async def never_called(ping: BenchPing) -> None:
        raise AssertionError("nothing to publish")

    latencies, _ = await run_round(
        never_called, Meter(concurrency=2, tick=lambda: None), messages=0, concurrency=2
    )
    assert latencies == []


def test_the_summary_gives_the_ratios_against_raw_and_the_database_share():
    lines = summary(RAW, FASTSTREAM, RUNTIME).splitlines()
    assert lines[0] == "throughput vs raw aio-pika: FastStream 0.25x, actor runtime 0.06x"
    assert lines[1].endswith("is 75% of its time per message and 75% of its p50 latency")
    assert lines[2] == (
        "measured directly: the transaction (inbox insert + commit) takes 60.00 ms per message, "
        "60% of the runtime hop's mean latency (100.00 ms)"
    )
