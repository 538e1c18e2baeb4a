"""Following a saga at the edge: listeners, their bounds, and the Server-Sent Events of a follow."""

from __future__ import annotations

import json

import pytest

from edge.events import DROPPED, SAGA_EVENT_TYPES, Listener, SagaEvent, snapshot, stream

PLACED = SagaEvent("order.placed", '{"order_id": "o-1"}', id="m-1")
RESERVED = SagaEvent("stock.reserved", '{"order_id": "o-1"}', id="m-2")
DELIVERED = SagaEvent("order.delivered", '{"order_id": "o-1"}', id="m-3", final=True)


def test_the_subscription_takes_every_event_that_names_an_order_and_nothing_else() -> None:
    expected = {
        "order.placed",
        "order.confirmed",
        "order.cancelled",
        "order.shipped",
        "order.delivered",
        "stock.reserved",
        "stock.rejected",
        "stock.released",
        "stock.committed",
        "payment.captured",
        "payment.failed",
        "payment.refunded",
        "shipment.scheduled",
        "shipment.dispatched",
        "shipment.delivered",
        "notification.sent",
    }

    assert expected <= set(SAGA_EVENT_TYPES)
    assert not any(t.startswith(("product.", "user.")) for t in SAGA_EVENT_TYPES)


async def test_a_listener_gives_its_events_in_order_and_none_when_quiet() -> None:
    listener = Listener(backlog=10)
    listener.offer(PLACED)
    listener.offer(RESERVED)

    assert [await listener.next(1.0), await listener.next(1.0)] == [PLACED, RESERVED]
    assert await listener.next(0.01) is None


async def test_a_listener_that_falls_behind_is_dropped_after_what_it_holds() -> None:
    listener = Listener(backlog=2)

    for event in (PLACED, RESERVED, DELIVERED, PLACED):
        listener.offer(event)

    held = [await listener.next(1.0) for _ in range(3)]
    assert held[:2] == [PLACED, RESERVED]
    assert held[2] is not None and held[2].type == DROPPED and held[2].final
    assert json.loads(held[2].data)["reason"] == "too_slow"
    assert await listener.next(0.01) is None  # nothing after the final event
    assert listener.is_dropped


async def test_a_listener_is_dropped_once() -> None:
    listener = Listener(backlog=5)

    listener.drop("interrupted", "lost the subscription")
    listener.drop("interrupted", "lost the subscription")
    listener.offer(PLACED)

    assert (await listener.next(1.0)).type == DROPPED
    assert await listener.next(0.01) is None


async def _all(first: SagaEvent, listener: Listener, heartbeat_s: float = 1.0) -> list[tuple]:
    return [
        (e.event, e.id, e.raw_data, e.comment) async for e in stream(first, listener, heartbeat_s=heartbeat_s)
    ]


async def test_a_follow_is_its_first_event_then_the_saga_until_a_final_event() -> None:
    listener = Listener(backlog=10)
    for event in (RESERVED, DELIVERED, PLACED):
        listener.offer(event)

    sent = await _all(snapshot('{"status": "placed"}', ended=False), listener)

    assert sent == [
        ("snapshot", None, '{"status": "placed"}', None),
        ("stock.reserved", "m-2", RESERVED.data, None),
        ("order.delivered", "m-3", DELIVERED.data, None),
    ]


async def test_a_follow_of_an_order_that_ended_is_its_snapshot_alone() -> None:
    listener = Listener(backlog=10)
    listener.offer(RESERVED)

    sent = await _all(snapshot('{"status": "cancelled"}', ended=True), listener)

    assert [event for event, *_ in sent] == ["snapshot"]


async def test_a_quiet_follow_sends_heartbeats() -> None:
    listener = Listener(backlog=10)
    follow = stream(PLACED, listener, heartbeat_s=0.01)

    first, beat, another = await anext(follow), await anext(follow), await anext(follow)
    listener.offer(DELIVERED)
    rest = [e async for e in follow]

    assert first.event == "order.placed"
    assert (beat.comment, another.comment) == ("heartbeat", "heartbeat") and beat.event is None
    assert [e.event for e in rest if e.comment is None] == ["order.delivered"]


@pytest.mark.parametrize("reason", ["too_slow", "interrupted"])
async def test_a_dropped_follow_ends_with_the_reason(reason: str) -> None:
    listener = Listener(backlog=10)
    listener.drop(reason, "why")

    sent = await _all(PLACED, listener)

    assert [event for event, *_ in sent] == ["order.placed", DROPPED]
    assert json.loads(sent[-1][2]) == {"reason": reason, "detail": "why"}
