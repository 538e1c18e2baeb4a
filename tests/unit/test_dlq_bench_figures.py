"""The pure parts of `emporium bench hop`, `bench saga` and `bench edge` (this file shares the ops CLI's test prefix):
figures, pacing, counting."""

import asyncio
import io
import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
from rich.console import Console

from brokers.contracts.orders import OrderLine, OrderStep, OrderView
from brokers.envelope import REGISTRY, Kind
from brokers.topology import exchange_for
from ops.bench.common import DatabaseCeiling, percentile, send_paced
from ops.bench.edge import Round as EdgeRound
from ops.bench.edge import bare_app, edge_table
from ops.bench.edge import summary as edge_summary
from ops.bench.hop import BenchPing, HopFigures, Meter, bench_actor, run_round, summary
from ops.bench.hop import as_json as hop_json
from ops.bench.report import Report, markdown, plot
from ops.bench.saga import CommandCounter, EndWatch
from ops.bench.saga_figures import (
    Batching,
    Counts,
    Cpu,
    Quiet,
    SagaFigures,
    batching_table,
    breakdowns,
    cost_table,
    outcomes_line,
    saga_orders,
    step_seconds,
    stock_needed,
)


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
SINGLE = _hop("actor runtime, 1 per transaction", seconds=4.0, p50_ms=80.0, mean_ms=100.0, transaction_ms=2.0)
GROUPED = _hop("actor runtime, group commit (32)", seconds=0.5, p50_ms=10.0, mean_ms=12.0, transaction_ms=0.4)
CEILING = DatabaseCeiling(single_per_s=500.0, batched_per_s=2_500.0, batch=32)


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


def test_the_summary_gives_the_ratios_against_raw_and_against_the_database_alone():
    lines = summary(RAW, FASTSTREAM, SINGLE, GROUPED, CEILING).splitlines()
    assert lines[0] == (
        "throughput vs raw aio-pika: FastStream 0.25x, actor runtime 0.06x with 1 message per transaction, "
        "0.50x with group commit"
    )
    assert lines[1] == (
        "vs the database alone (same run): 1 per transaction reaches 0.50x of 500 transactions/s; "
        "group commit reaches 0.80x of 2,500 messages/s in transactions of 32"
    )
    assert lines[2] == "group commit vs 1 per transaction: 8.00x the throughput, p50 0.12x"


# --- emporium bench saga --------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _view(order_id: str, *steps: tuple[str, int]) -> OrderView:
    """An order whose history has the given (status, milliseconds after T0) steps."""
    history = [OrderStep(status=status, at=T0 + timedelta(milliseconds=ms)) for status, ms in steps]
    return OrderView(
        order_id=order_id,
        customer_id="c1",
        status=history[-1].status,
        lines=[OrderLine(sku="SKU-1", quantity=1, unit_price_cents=100)],
        total_cents=100,
        currency="EUR",
        request_digest="d",
        placed_at=T0,
        updated_at=history[-1].at,
        history=history,
        version=len(history),
    )


DELIVERED = ("placed", 0), ("reserved", 40), ("confirmed", 100), ("shipped", 300), ("delivered", 500)


def _counts(
    published=0,
    delivered=0,
    parked=0,
    published_to=None,
    taken=None,
    mongo_commands=None,
    mongo_documents=None,
) -> Counts:
    return Counts(
        published,
        delivered,
        parked,
        published_to or {},
        taken or {},
        mongo_commands or {},
        mongo_documents=mongo_documents or {},
    )


def test_saga_orders_have_two_neighbouring_skus_and_distinct_ids():
    orders = saga_orders(5, skus=("A1", "B2", "C3"))

    assert len({order.order_id for order in orders}) == 5
    assert [[line.sku for line in order.lines] for order in orders] == [
        ["A1", "B2"],
        ["B2", "C3"],
        ["C3", "A1"],
        ["A1", "B2"],
        ["B2", "C3"],
    ]
    assert all(line.quantity == 1 for order in orders for line in order.lines)
    assert stock_needed(orders) == {"A1": 3, "B2": 4, "C3": 3}


def test_saga_orders_need_two_skus():
    with pytest.raises(ValueError, match="at least two SKUs"):
        saga_orders(1, skus=("A1",))


def test_step_seconds_run_between_the_first_steps_of_each_status():
    view = _view("o1", *DELIVERED)

    assert step_seconds(view, "placed", "confirmed") == pytest.approx(0.1)
    assert step_seconds(view, "placed", "delivered") == pytest.approx(0.5)
    assert step_seconds(_view("o2", ("placed", 0), ("cancelled", 30)), "placed", "confirmed") is None


def test_counts_since_keep_what_grew_only():
    before = _counts(
        10, 20, 3, {"emporium.events": 5, "": 1}, {("orders", "x", "applied"): 2}, {("orders", "find"): 7}
    )
    after = _counts(
        25,
        50,
        8,
        {"emporium.events": 9, "": 1, "emporium.commands": 2},
        {("orders", "x", "applied"): 5, ("shipping", "y", "retried"): 1},
        {("orders", "find"): 7, ("admin", "c"): 3},
    )

    assert after.since(before) == _counts(
        15,
        30,
        5,
        {"emporium.events": 4, "emporium.commands": 2},
        {("orders", "x", "applied"): 3, ("shipping", "y", "retried"): 1},
        {("admin", "c"): 3},
    )


def test_quiet_needs_the_same_reading_for_the_whole_span():
    quiet = Quiet(for_s=5.0)

    assert not quiet.still(_counts(1), now=0.0)
    assert not quiet.still(_counts(1), now=4.9)
    assert not quiet.still(_counts(2), now=5.5)  # changed: the span starts again
    assert not quiet.still(_counts(2), now=10.0)
    assert quiet.still(_counts(2), now=10.5)


def test_saga_figures_count_outcomes_and_share_costs_over_delivered_orders():
    views = [
        _view("o1", *DELIVERED),
        _view("o2", ("placed", 0), ("confirmed", 300), ("shipped", 500), ("delivered", 900)),
        _view("o3", ("placed", 0), ("cancelled", 50)),
    ]
    cost = _counts(34, 40, mongo_commands={("orders", "insert"): 50, ("admin", "commitTransaction"): 40})

    figures = SagaFigures.of(views, seconds=2.0, cost=cost)

    assert (figures.placed, figures.delivered, figures.cancelled) == (3, 2, 1)
    assert figures.to_confirmed_s == pytest.approx((0.1, 0.3))
    assert figures.to_delivered_s == pytest.approx((0.5, 0.9))
    assert figures.per_order(34) == 17.0
    assert figures.transactions == 40


def test_costs_per_order_need_a_delivered_order():
    figures = SagaFigures.of([_view("o3", ("placed", 0), ("cancelled", 50))], seconds=1.0, cost=_counts())
    with pytest.raises(ValueError, match="no order was delivered"):
        figures.per_order(10)


def test_hop_figures_as_json_give_the_ratios_against_raw_and_the_ceiling():
    shown = json.loads(json.dumps(hop_json([RAW, FASTSTREAM, SINGLE, GROUPED], CEILING, concurrency=32)))

    assert shown["concurrency"] == 32
    assert [(h["name"], h["per_second"], h["per_second_vs_raw"]) for h in shown["hops"]] == [
        ("raw aio-pika", 4000.0, 1.0),
        ("FastStream", 1000.0, 0.25),
        ("actor runtime, 1 per transaction", 250.0, 0.0625),
        ("actor runtime, group commit (32)", 2000.0, 0.5),
    ]
    assert shown["hops"][3]["p50_vs_raw"] == 2.0
    assert shown["database_ceiling"] == {"single_per_s": 500.0, "batched_per_s": 2500.0, "batch": 32}


def test_saga_figures_as_json_give_what_the_tables_show():
    cost = _counts(
        34,
        40,
        10,
        taken={("orders", "orders.place_order", "applied"): 2},
        mongo_commands={("orders", "insert"): 50, ("admin", "commitTransaction"): 4},
    )
    figures = SagaFigures.of([_view("o1", *DELIVERED), _view("o2", *DELIVERED)], 2.0, cost)

    shown = json.loads(json.dumps(figures.as_dict()))  # JSON all through

    assert shown["orders"] == {"placed": 2, "delivered": 2, "cancelled": 0}
    assert shown["delivered_orders_per_s"] == 1.0
    assert shown["per_delivered_order"]["mongodb_round_trips"] == 27.0
    assert shown["per_delivered_order"]["mongodb_transactions"] == 2.0
    assert shown["mongodb_round_trips_by_actor"] == {"orders": 50, "admin": 4}
    assert shown["placed_to_confirmed"]["p50_ms"] == pytest.approx(figures.to_confirmed_s[0] * 1000)


def _rows(table) -> list[list[str]]:
    """The cells of a rendered table's body rows."""
    console = Console(file=io.StringIO(), width=200)
    console.print(table)
    lines = console.file.getvalue().splitlines()
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")]


def test_the_cost_table_gives_totals_and_shares_per_delivered_order():
    cost = _counts(
        34,
        40,
        10,
        taken={("orders", "orders.place_order", "applied"): 2, ("inventory", "order.placed", "applied"): 2},
        mongo_commands={("orders", "insert"): 50, ("admin", "commitTransaction"): 4},
    )
    figures = SagaFigures.of([_view("o1", *DELIVERED), _view("o2", *DELIVERED)], 1.0, cost)

    rows = {measure: [total, per_order] for measure, total, per_order, _ in _rows(cost_table(figures))}
    assert rows["messages published"] == ["34", "17.0"]
    assert rows["messages delivered to actors"] == ["40", "20.0"]
    assert rows["events no actor takes"] == ["10", "5.0"]
    assert rows["messages taken by actors"] == ["4", "2.0"]
    assert rows["MongoDB commands (round trips)"] == ["54", "27.0"]
    assert rows["MongoDB transactions"] == ["4", "2.0"]


def test_the_saga_is_timed_leg_by_leg_along_the_happy_path():
    late = ("placed", 0), ("reserved", 100), ("confirmed", 400), ("shipped", 700), ("delivered", 1500)
    figures = SagaFigures.of([_view("o1", *DELIVERED), _view("o2", *late)], 1.0, _counts())

    legs = {leg: [round(span * 1000) for span in spans] for leg, spans in figures.legs_s.items()}
    assert legs == {
        "placed → reserved": [40, 100],
        "reserved → confirmed": [60, 300],
        "confirmed → shipped": [200, 300],
        "shipped → delivered": [200, 800],
    }
    assert figures.as_dict()["legs"]["placed → reserved"]["p50_ms"] == pytest.approx(70)


def test_group_commit_by_actor_is_what_grew_over_the_run_per_transaction_and_per_message():
    before = replace(_counts(), batching={"orders": Batching(10, 50, 1.0, 50, 5.0)})
    after = replace(_counts(), batching={"orders": Batching(30, 450, 3.0, 450, 45.0), "idle": Batching()})
    figures = SagaFigures.of([_view("o1", *DELIVERED)], 1.0, after.since(before))

    table = batching_table(figures)
    [row] = _rows(table)  # an actor that committed nothing is left out
    assert row == ["orders", "20", "20.0", "100", "100"]


def test_mongodb_commands_by_actor_are_also_given_per_message_the_actor_took():
    cost = _counts(
        taken={("orders", "a", "applied"): 3, ("orders", "b", "retried"): 1},
        mongo_commands={("orders", "insert"): 10, ("orders", "find"): 10, ("admin", "commitTransaction"): 4},
    )
    figures = SagaFigures.of([_view("o1", *DELIVERED)], 1.0, cost)
    by_actor = next(table for table in breakdowns(figures) if table.title == "MongoDB commands, by actor")

    # actor, messages taken, commands per message taken, commands, commands per delivered order
    assert _rows(by_actor) == [["orders", "4", "5.0", "20", "20.00"], ["admin", "-", "-", "4", "4.00"]]


def test_the_outcomes_line_names_the_types_not_simply_applied():
    taken = {
        ("orders", "shipment.delivered", "applied"): 10,
        ("orders", "shipment.delivered", "retried"): 3,
        ("payments", "order.placed", "retried"): 1,
        ("orders", "orders.place_order", "applied"): 5,
    }
    assert outcomes_line(taken) == (
        "messages taken, by outcome: applied 15; retried 4 (shipment.delivered 3, order.placed 1)"
    )


async def _free_slots(watch: EndWatch) -> int:
    """How many slots can be taken at once now (they are given back afterwards)."""
    taken = 0
    while not watch.in_flight.locked():
        await watch.in_flight.acquire()
        taken += 1
    for _ in range(taken):
        watch.in_flight.release()
    return taken


async def test_the_end_watch_frees_one_slot_per_order_however_many_copies_of_its_end_arrive():
    ticks: list[None] = []
    watch = EndWatch(concurrency=2)
    for _ in range(2):
        await watch.in_flight.acquire()
    watch.begin(["o1", "o2"], tick=lambda: ticks.append(None))

    watch.saw("order.confirmed", "o1")  # not an end
    watch.saw("order.delivered", "o1")
    watch.saw("order.delivered", "o1")  # a copy
    watch.saw("order.cancelled", "o9")  # not an order of this round
    assert not watch.all_ended.is_set() and await _free_slots(watch) == 1
    watch.saw("order.cancelled", "o2")

    assert watch.all_ended.is_set()
    assert watch.ends == {"o1": "order.delivered", "o2": "order.cancelled"}
    assert watch.deliveries == 5 and len(ticks) == 2
    assert await _free_slots(watch) == 2


async def test_orders_are_sent_paced_by_their_ends():
    watch = EndWatch(concurrency=3)
    orders = saga_orders(20)
    watch.begin((order.order_id for order in orders), tick=lambda: None)
    in_flight: set[str] = set()
    most_in_flight = 0

    async def place(order) -> None:
        nonlocal most_in_flight
        in_flight.add(order.order_id)
        most_in_flight = max(most_in_flight, len(in_flight))
        asyncio.get_running_loop().call_later(0.001, end, order.order_id)

    def end(order_id: str) -> None:
        in_flight.discard(order_id)
        watch.saw("order.delivered", order_id)

    await send_paced(
        orders, place, in_flight=watch.in_flight, concurrency=3, until=watch.all_ended, timeout_s=5
    )

    assert len(watch.ends) == 20
    assert most_in_flight == 3


def test_the_command_counter_counts_commands_started_by_database_and_name():
    counter = CommandCounter()
    for database, name in [("x_orders", "find"), ("x_orders", "find"), ("admin", "commitTransaction")]:
        counter.started(SimpleNamespace(database_name=database, command_name=name))
    counter.succeeded(SimpleNamespace(database_name="x_orders", command_name="find"))

    assert counter.counts == {("x_orders", "find"): 2, ("admin", "commitTransaction"): 1}


def test_the_command_counter_counts_the_documents_each_write_command_carries():
    counter = CommandCounter()
    for name, command in [
        ("insert", {"insert": "inbox", "documents": [{}, {}, {}]}),
        ("update", {"update": "orders", "updates": [{}, {}]}),
        ("update", {"update": "orders", "updates": [{}]}),
        ("delete", {"delete": "outbox", "deletes": [{}]}),
        ("find", {"find": "orders", "filter": {}}),
    ]:
        counter.started(SimpleNamespace(database_name="x_orders", command_name=name, command=command))

    assert counter.documents == {
        ("x_orders", "inbox", "insert"): 3,
        ("x_orders", "orders", "update"): 3,
        ("x_orders", "outbox", "delete"): 1,
    }


def test_cpu_per_order_and_the_ceiling_it_sets_on_the_machine():
    cost = replace(
        _counts(mongo_documents={("orders", "inbox", "insert"): 40}),
        cpu=Cpu(process_s=0.6, machine_s=1.0, cores=2),
    )
    figures = SagaFigures.of([_view("o1", *DELIVERED), _view("o2", *DELIVERED)], 1.0, cost)

    rows = {measure: [total, per_order] for measure, total, per_order, _ in _rows(cost_table(figures))}
    assert rows["MongoDB documents written"] == ["40", "20.0"]
    assert rows["CPU ms, this process (actors, provider)"] == ["600", "300.0"]
    assert rows["CPU ms, rest of the machine"] == ["400", "200.0"]
    assert figures.cpu_ceiling == pytest.approx(4.0)  # 2 cores / 0.5 s per order
    assert figures.as_dict()["cpu"]["ceiling_delivered_orders_per_s"] == pytest.approx(4.0)
    assert Cpu(1.0, None).since(Cpu(0.5, 3.0)).machine_s is None  # the machine's CPU unknown: no ceiling
    # CPU keeps growing while the system is quiet: readings differing only in it are the same.
    assert replace(cost, cpu=Cpu(5.0, 9.0, 2)) == cost


# --- emporium bench report ------------------------------------------------------------------------


def test_the_report_puts_hops_the_database_alone_and_the_saga_in_one_table_with_ratios(tmp_path):
    cost = _counts(
        published=120,
        taken={("orders", "order.placed", "applied"): 200},
        mongo_commands={("orders", "find"): 300, ("admin", "commitTransaction"): 30},
    )
    saga = SagaFigures(10, 10, 0, 2.0, cost, to_confirmed_s=(0.1, 0.2), to_delivered_s=(0.3,))
    ceilings = {1: DatabaseCeiling(500.0, 500.0, 1), 32: CEILING}
    report = Report(64, [RAW, FASTSTREAM], {1: SINGLE, 32: GROUPED}, ceilings, saga, 32, 10)

    rows = report.rows()
    assert rows[3] == ("actor runtime, group commit (32)", "2,000 msg/s", "10.0", "20.0", "0.50x")
    assert rows[5] == ("MongoDB alone, 32 per transaction", "2,500 msg/s", "-", "-", "0.62x")
    # 2,500 messages/s at batch 32 ÷ 20 messages per order: at most 125 orders/s.
    assert rows[-2][1:] == ("5.0 orders/s", "150", "199", "0.04x of the ceiling")
    assert rows[-1][1] == "125.0 orders/s"
    assert dict(report.costs())["MongoDB round trips per order"] == "33.0"
    assert "| saga ceiling: MongoDB alone at batch 32 ÷ 20 messages per order |" in markdown(report)
    plot(report, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _round(app: str, seconds: float, answers: dict[int, int], questions: int = 0) -> EdgeRound:
    count = sum(answers.values())
    return EdgeRound(app, seconds, [0.01] * count, Counter(answers), questions)


def test_bench_edge_reports_medians_ratios_to_the_bare_app_questions_per_post_and_refusals():
    runs = [
        _round("bare", 1.0, {202: 500}),
        _round("edge", 2.0, {202: 500}),
        _round("bare", 1.0, {202: 400}),
        _round("edge", 2.0, {202: 300, 503: 200}, questions=1500),
    ]
    output = io.StringIO()
    Console(file=output, width=200).print(edge_table(runs, title="POST /orders"))
    rows = {line.split()[1]: line.split()[2:] for line in output.getvalue().splitlines() if "│" in line}

    assert rows["bare"][:4] == ["│", "450", "│", "1.00x"]
    # Medians of 250 and 150 accepted/s: 200, 0.44x the bare app's 450.
    assert rows["edge"][:4] == ["│", "200", "│", "0.44x"]
    assert rows["edge"][-4:] == ["1.50", "│", "200", "│"]
    assert "medians of 2 rounds" in output.getvalue()
    edge = edge_summary(runs)[1]  # what --json prints
    assert (edge["app"], edge["accepted_per_s"], edge["not_202"]) == ("edge", 200, 200)
    assert edge["vs_bare"] == pytest.approx(200 / 450) and edge["questions_per_post"] == 1.5


async def test_the_bare_app_answers_202_to_an_order_body():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(bare_app()), base_url="http://b") as http:
        answer = await http.post("/orders", json={"lines": [{"sku": "S", "quantity": 1}]})
    assert answer.status_code == 202 and answer.json()["status"] == "accepted"
