"""A handler can send its own actor a command later: through a delay queue, via the outbox."""

import time

import pytest

from actors.runtime.actor import Actor, Timer, Work
from actors.runtime.host import ActorHost, topology_of
from actors.runtime.store import Store
from brokers.contracts.common import EntityId
from brokers.envelope import Command
from tests.helpers import eventually, send
from tests.integration.support import running

DELAY_MS = 300
SOON = Timer("soon", lambda _settings: DELAY_MS)


class StartTimer(Command, type="test.start_timer"):
    timer_id: EntityId


class TimerFired(Command, type="test.timer_fired"):
    timer_id: EntityId


async def test_a_scheduled_command_arrives_after_its_delay_with_the_same_correlation(settings, broker, mongo):
    fired: dict[str, tuple[float, str, str | None]] = {}
    started: dict[str, float] = {}
    timers = Actor("timers", Store, timers=(SOON,))

    @timers.handles(StartTimer)
    async def start_timer(command: StartTimer, work: Work[Store]) -> None:
        started[command.timer_id] = time.monotonic()
        work.schedule(TimerFired(timer_id=command.timer_id), SOON)

    @timers.handles(TimerFired)
    async def timer_fired(command: TimerFired, work: Work[Store]) -> None:
        fired[command.timer_id] = (time.monotonic(), work.envelope.correlation_id, work.envelope.causation_id)

    async with running(ActorHost([timers], settings)):
        sent = await send(broker, StartTimer(timer_id="t1"), correlation_id="order-7")
        await eventually(lambda: _value(fired), until=lambda f: "t1" in f, what="the timer to fire")

    at, correlation_id, causation_id = fired["t1"]
    assert at - started["t1"] >= DELAY_MS / 1000
    assert correlation_id == "order-7" and causation_id == sent.message_id


def test_scheduling_an_undeclared_delay_is_refused(settings):
    timers = Actor("timers", Store, timers=(SOON,))
    topology = topology_of(timers, settings)
    with pytest.raises(ValueError, match="declares no 999 ms delay"):
        topology.delay_queue(999)


async def _value(value):
    return value
