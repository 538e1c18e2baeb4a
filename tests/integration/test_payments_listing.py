"""ListPayments: every payment GetPayment answers for, page by page, from the payments actor itself."""

from __future__ import annotations

from brokers.contracts.payments import ListPayments, PaymentPage
from ops.payment_provider import served
from tests.helpers import eventually, send
from tests.integration.support import requester
from tests.integration.test_payments import cancelled, placed, reserved


async def test_payments_are_listed_by_order_id_page_by_page_and_only_those_get_payment_answers(
    settings, broker, start_host
):
    async with served() as simulator:
        await start_host("payments", emporium_payment_provider_url=simulator.url)
        for order_id in ("o-3", "o-1", "o-2", "o-gone"):
            await send(broker, placed(order_id), correlation_id=order_id)
        await send(broker, cancelled("o-gone"), correlation_id="o-gone")  # before any payment: none to show
        for order_id in ("o-1", "o-3"):
            await send(broker, reserved(order_id), correlation_id=order_id)

        async with requester(settings) as asker:

            async def page(offset: int, limit: int) -> PaymentPage:
                return await asker.ask(ListPayments(offset=offset, limit=limit), PaymentPage)

            first = await eventually(
                lambda: page(0, 2),
                until=lambda p: p.total == 3 and [v.status for v in p.items] == ["captured", "pending"],
                what="o-1 captured and o-2 pending on the first page",
            )
            rest = await eventually(
                lambda: page(2, 2), until=lambda p: [v.status for v in p.items] == ["captured"], what="o-3"
            )

    assert [v.order_id for v in first.items + rest.items] == ["o-1", "o-2", "o-3"]
    assert (rest.offset, rest.limit, rest.total) == (2, 2, 3)
    assert all(v.provider_reference for v in (first.items[0], rest.items[0]))
