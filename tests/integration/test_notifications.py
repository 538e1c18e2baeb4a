"""Notifications on the real servers: one notification per event whatever the redeliveries, listed
by customer and by order, and emails through a real SMTP conversation (a small sink in this file)
that are retried, not lost, when the server refuses them for a while."""

from __future__ import annotations

import asyncio
import email
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import Message as EmailMessage

import pytest

from actors.runtime.outbox import applied_messages
from brokers.contracts.identity import UserRegistered
from brokers.contracts.notifications import ListNotifications, NotificationPage
from brokers.contracts.orders import OrderCancelled, OrderConfirmed, OrderDelivered, OrderLine, OrderShipped
from brokers.envelope import Event
from brokers.factory import publish
from brokers.rpc import QueryFailed
from tests.helpers import Tap, eventually, send
from tests.integration.support import requester


def confirmed(order_id: str, customer_id: str) -> OrderConfirmed:
    return OrderConfirmed(
        order_id=order_id,
        customer_id=customer_id,
        lines=[OrderLine(sku="MUG-1", quantity=3, unit_price_cents=450)],
        total_cents=1_350,
        currency="EUR",
    )


def shipped(order_id: str, customer_id: str) -> OrderShipped:
    return OrderShipped(
        order_id=order_id,
        customer_id=customer_id,
        shipment_id="shp-1",
        carrier="swiftpost",
        tracking_number="SW42",
    )


def inbox_count(mongo, settings):
    async def count() -> int:
        return len(await applied_messages(mongo[settings.database_name("notifications")]))

    return count


async def deliver_with_duplicates(broker, events: list[Event]) -> int:
    """Each event twice as one message (a redelivery) and once more under another id; returns the ids used."""
    for event in events:
        envelope = await send(broker, event, correlation_id=getattr(event, "order_id", None))
        await publish(broker, event, envelope)
        await send(broker, event, correlation_id=getattr(event, "order_id", None))
    return 2 * len(events)


async def test_each_event_is_told_once_whatever_the_copies(start_host, broker, mongo, settings):
    await start_host("notifications")
    events: list[Event] = [
        UserRegistered(user_id="c-1", email="ada@example.com", name="Ada"),
        confirmed("o-1", "c-1"),
        shipped("o-1", "c-1"),
        OrderDelivered(order_id="o-1", customer_id="c-1"),
        OrderCancelled(order_id="o-2", customer_id="c-1", reason="payment_declined"),
        confirmed("o-3", "c-2"),
    ]
    async with (
        Tap(settings.rabbitmq_url, routing_keys=["notification.sent"]) as tap,
        requester(settings) as asker,
    ):
        distinct = await deliver_with_duplicates(broker, events)
        await eventually(
            inbox_count(mongo, settings), until=lambda n: n == distinct, what="every distinct message"
        )
        of_customer = await asker.ask(ListNotifications(customer_id="c-1"), NotificationPage)
        of_order = await asker.ask(ListNotifications(order_id="o-1"), NotificationPage)
        of_both = await asker.ask(ListNotifications(customer_id="c-2", order_id="o-3"), NotificationPage)
        second_page = await asker.ask(
            ListNotifications(customer_id="c-1", offset=1, limit=2), NotificationPage
        )
        await tap.wait_for("notification.sent", count=len(events))

    assert of_customer.total == 5
    assert sorted(n.template for n in of_customer.items) == [
        "order_cancelled",
        "order_confirmed",
        "order_delivered",
        "order_shipped",
        "welcome",
    ]
    assert {n.channel for n in of_customer.items} == {"log"}  # no SMTP server configured
    # Handled concurrently, so listed in the order they happened to be sent.
    assert sorted(n.template for n in of_order.items) == [
        "order_confirmed",
        "order_delivered",
        "order_shipped",
    ]
    (cancelled,) = [n for n in of_customer.items if n.template == "order_cancelled"]
    assert cancelled.order_id == "o-2" and "the payment was declined" in cancelled.body
    (shipped_note,) = [n for n in of_order.items if n.template == "order_shipped"]
    assert "SW42" in shipped_note.body
    assert [(n.customer_id, n.order_id) for n in of_both.items] == [("c-2", "o-3")]
    assert second_page.total == 5 and second_page.items == of_customer.items[1:3]
    # One message each (the outbox may publish one twice, under the same id, which consumers skip).
    sent = [json.loads(m.body) for m in {m.message_id: m for m in tap.messages}.values()]
    assert len(sent) == len(events)
    assert sorted(s["notification_id"] for s in sent) == sorted(
        n.notification_id for n in (*of_customer.items, *of_both.items)
    )


async def test_a_list_without_customer_or_order_is_refused(start_host, settings):
    await start_host("notifications")
    async with requester(settings) as asker:
        with pytest.raises(QueryFailed) as refused:
            await asker.ask(ListNotifications(), NotificationPage)
    assert refused.value.problem.status == 400
    assert "customer_id or an order_id" in refused.value.problem.detail


class SmtpSink:
    """Just enough of an SMTP server to receive mail: it keeps what it accepts, and refuses the
    first ``refusals`` messages with a temporary error (451), as a struggling server does."""

    def __init__(self, refusals: int = 0) -> None:
        self.refusals = refusals
        self.refused = 0
        self.accepted: list[EmailMessage] = []

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                writer.write(b"354 end with <CRLF>.<CRLF>\r\n")
                writer.write(self._receive(await reader.readuntil(b"\r\n.\r\n")))
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:  # EHLO, HELO, MAIL, RCPT, RSET, NOOP
                writer.write(b"250 sink\r\n")
            await writer.drain()
        await writer.drain()
        writer.close()

    def _receive(self, data: bytes) -> bytes:
        if self.refused < self.refusals:
            self.refused += 1
            return b"451 try again later\r\n"
        lines = data[: -len(b".\r\n")].split(b"\r\n")
        unstuffed = b"\r\n".join(line[1:] if line.startswith(b"..") else line for line in lines)
        self.accepted.append(email.message_from_bytes(unstuffed))
        return b"250 queued\r\n"


@asynccontextmanager
async def smtp_sink(refusals: int = 0) -> AsyncIterator[tuple[SmtpSink, str]]:
    sink = SmtpSink(refusals)
    server = await asyncio.start_server(sink._converse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield sink, f"smtp://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_customers_with_an_address_get_one_email_even_after_refusals(
    start_host, broker, mongo, settings
):
    async with smtp_sink(refusals=2) as (sink, url), requester(settings) as asker:
        await start_host("notifications", emporium_smtp_url=url)
        await send(broker, UserRegistered(user_id="c-9", email="grace@example.com", name="Grace"))
        # The address is known once the welcome went out: the refusals roll the registration back.
        await eventually(
            lambda: asker.ask(ListNotifications(customer_id="c-9"), NotificationPage),
            until=lambda page: page.total == 1,
            what="the welcome, after the refusals",
        )
        await send(broker, shipped("o-9", "c-9"), correlation_id="o-9")
        await send(broker, confirmed("o-8", "c-unknown"), correlation_id="o-8")

        told = await eventually(
            lambda: asker.ask(ListNotifications(customer_id="c-9"), NotificationPage),
            until=lambda page: page.total == 2,
            what="both notifications of c-9",
        )
        logged = await eventually(
            lambda: asker.ask(ListNotifications(order_id="o-8"), NotificationPage),
            until=lambda page: page.total == 1,
            what="the notification of a customer without address",
        )
        await eventually(
            inbox_count(mongo, settings), until=lambda n: n == 3, what="all three messages applied"
        )

    assert sink.refused == 2
    assert {n.channel for n in told.items} == {"email"} and logged.items[0].channel == "log"
    assert sorted(m["Subject"] for m in sink.accepted) == ["Order o-9 is on its way", "Welcome to emporium"]
    assert {m["To"] for m in sink.accepted} == {"grace@example.com"}
    assert sorted(m["Message-ID"] for m in sink.accepted) == sorted(
        f"<{n.notification_id}@emporium>" for n in told.items
    )
    (shipping_mail,) = [m for m in sink.accepted if m["Subject"].startswith("Order")]
    assert "SW42" in shipping_mail.get_payload()
