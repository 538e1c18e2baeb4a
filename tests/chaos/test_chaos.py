"""`emporium chaos` at CI size: every scenario's fault on a system of separate supervised processes,
on servers of the run's own, and every row of the books clean.

This is the run the README documents (`emporium chaos`), smaller: a few dozen orders a scenario. It
starts its own RabbitMQ node and embedded MongoDB on free ports (faults restart and kill them), so
it does not touch the servers the rest of the suite shares.
"""

from __future__ import annotations

import pytest

from brokers.settings import Settings
from ops.chaos import SCENARIOS, Timings, load_drive, markdown_table, run_chaos
from ops.load import LoadConfig
from ops.servers import scratch_directory

ORDERS = 16
# A CI run of every scenario takes about RUN_S on 2 cores; the timeout leaves room for a noisy machine.
RUN_S = 240
pytestmark = pytest.mark.timeout(3 * RUN_S)


async def test_every_fault_leaves_nothing_lost_charged_twice_oversold_or_shipped_after_cancel():
    config = LoadConfig(orders=ORDERS, concurrency=4, customers=8, seed=11, duration_s=120.0)
    with scratch_directory("emporium-chaos-test-") as directory:
        rows = await run_chaos(
            list(SCENARIOS),
            base=Settings(),
            drive=load_drive(config),
            directory=directory,
            timings=Timings(),
            seed=11,
        )
    table = markdown_table(rows)

    assert [row.scenario for row in rows] == list(SCENARIOS)
    assert all(row.accepted >= ORDERS // 2 for row in rows), table  # the edge took the load, faults or not
    assert all(row.clean for row in rows), table
    assert all(row.confirmed for row in rows), table
    assert any(row.faults for row in rows if row.scenario != "baseline"), table
    faulted = {row.scenario for row in rows if row.faults}
    assert faulted >= set(SCENARIOS) - {"baseline"}, table  # every fault was injected
