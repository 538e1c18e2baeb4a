from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import permutations

import pytest

from actors.payments import domain
from actors.payments.domain import Account, Captured, Declined, Order, Status, Unavailable
from actors.runtime.errors import ConcurrentUpdate, NotFound
from brokers.contracts.payments import PaymentCaptured, PaymentFailed, PaymentRefunded

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
ORDER = Order("o1", "c1", 4_200, "EUR")


def placed(at: datetime = T0) -> Account:
    return domain.placed(None, ORDER, at)


def ready(account: Account | None = None) -> Account:
    """Placed and reserved: due for a charge."""
    return domain.reserved(account or placed(), "o1", T0)


def captured(account: Account | None = None) -> domain.Change:
    return domain.charged(account or ready(), Captured("ch_1", attempts=2), T1)


def test_an_order_is_remembered_once_and_a_replay_changes_nothing():
    account = placed()

    assert account == Account("o1", updated_at=T0, order=ORDER)
    assert domain.placed(account, Order("o1", "c1", 1, "USD"), T1) is account


def test_an_order_placed_after_its_cancel_is_remembered_and_stays_cancelled():
    account = domain.placed(domain.cancelled(None, "o1", T0), ORDER, T1)

    assert (account.order, account.cancelled, account.updated_at) == (ORDER, True, T1)


def test_a_charge_is_for_the_orders_total_keyed_by_the_order_id():
    assert domain.charge_due(ready()) == domain.ChargeRequest("o1", 4_200, "EUR", "c1")


def test_a_charge_is_due_when_both_facts_are_in_whichever_came_first():
    reserved_first = domain.reserved(None, "o1", T0)

    assert domain.charge_due(reserved_first) is None
    assert domain.charge_due(placed()) is None
    assert domain.charge_due(domain.placed(reserved_first, ORDER, T1)) == domain.charge_due(ready())


FACTS: dict[str, Callable[[Account | None], Account]] = {
    "placed": lambda account: domain.placed(account, ORDER, T0),
    "reserved": lambda account: domain.reserved(account, "o1", T0),
    "cancelled": lambda account: domain.cancelled(account, "o1", T0),
}


@pytest.mark.parametrize("facts", list(permutations(FACTS)), ids="-".join)
def test_a_cancelled_order_is_never_charged_whichever_order_the_facts_came_in(facts):
    account = None
    for fact in facts:
        account = FACTS[fact](account)

    assert domain.charge_due(account) is None


def test_a_second_stock_reserved_changes_nothing():
    once = ready()

    assert domain.reserved(once, "o1", T1) is once


@pytest.mark.parametrize(
    "outcome", [Captured("ch_1", 1), Declined("card_declined", 1), Unavailable("down", 0)], ids=str
)
def test_once_the_provider_has_answered_nothing_more_is_charged(outcome):
    assert domain.charge_due(domain.charged(ready(), outcome, T1).account) is None


def test_a_capture_records_the_charge_and_announces_it():
    change = captured()

    assert change.account.payment == domain.Payment(Status.CAPTURED, attempts=2, provider_reference="ch_1")
    assert change.account.updated_at == T1
    assert change.events == (
        PaymentCaptured(
            payment_id=domain.payment_id("o1"),
            order_id="o1",
            customer_id="c1",
            amount_cents=4_200,
            currency="EUR",
            provider_reference="ch_1",
        ),
    )


def test_a_decline_fails_the_payment_for_good():
    change = domain.charged(ready(), Declined("card_declined", 1), T1)

    assert (change.account.payment.status, change.account.payment.failure) == (
        Status.FAILED,
        "declined: card_declined",
    )
    assert change.events == (
        PaymentFailed(order_id="o1", customer_id="c1", reason="declined", detail="card_declined"),
    )


def test_an_unavailable_provider_fails_the_payment_as_unavailable_with_a_bounded_detail():
    change = domain.charged(ready(), Unavailable("x" * 2_000, attempts=3), T1)

    (event,) = change.events
    assert isinstance(event, PaymentFailed)
    assert (event.reason, len(event.detail)) == ("unavailable", 500)
    assert change.account.payment.attempts == 3
    assert change.account.payment.failure.startswith("unavailable: xxx")


def unavailable(account: Account | None = None) -> Account:
    return domain.charged(account or ready(), Unavailable("down", attempts=3), T1).account


@pytest.mark.parametrize(
    "account",
    [
        domain.cancelled(ready(), "o1", T1),  # a charge asked, its answer not recorded
        domain.cancelled(unavailable(), "o1", T1),  # no answer: a capture may have landed late
    ],
    ids=["reserved-unanswered", "failed-unavailable"],
)
def test_a_cancelled_order_whose_charge_may_have_been_taken_is_looked_up_by_its_key(account):
    assert domain.lookup_due(account) == "o1"


@pytest.mark.parametrize(
    "account",
    [
        domain.cancelled(placed(), "o1", T1),
        domain.cancelled(domain.reserved(None, "o1", T0), "o1", T1),
        domain.cancelled(captured().account, "o1", T1),
        domain.cancelled(domain.charged(ready(), Declined("card_declined", 1), T1).account, "o1", T1),
        ready(),
        unavailable(),
    ],
    ids=["not-reserved", "order-unknown", "captured", "declined", "not-cancelled", "unavailable-alive"],
)
def test_nothing_is_looked_up_unless_a_cancelled_charge_may_be_unknown(account):
    assert domain.lookup_due(account) is None


def test_a_capture_found_by_a_lookup_is_recorded_and_then_refunded():
    account = domain.cancelled(unavailable(), "o1", T1)

    change = domain.charged(account, Captured("ch_late", attempts=1), T1)

    assert change.account.payment == domain.Payment(Status.CAPTURED, attempts=1, provider_reference="ch_late")
    assert domain.refund_due(change.account) == domain.RefundRequest("refund-o1", "ch_late", 4_200)


def test_a_capture_of_an_order_not_cancelled_is_kept():
    assert domain.refund_due(captured().account) is None


def test_a_cancel_after_a_capture_asks_for_a_refund_of_the_whole_charge():
    account = domain.cancelled(captured().account, "o1", T1)

    assert domain.refund_due(account) == domain.RefundRequest("refund-o1", "ch_1", 4_200)


def test_a_capture_after_a_cancel_is_refunded_too():
    cancelled_first = domain.cancelled(ready(), "o1", T0)

    refund = domain.refund_due(captured(cancelled_first).account)

    assert refund == domain.RefundRequest("refund-o1", "ch_1", 4_200)


def test_a_refund_is_recorded_announced_and_never_asked_again():
    charged = captured(domain.cancelled(ready(), "o1", T0))
    change = charged.then(domain.refunded(charged.account, "re_1", T1))

    assert change.account.payment.status is Status.REFUNDED
    assert change.account.payment.refund_reference == "re_1"
    assert [type(e) for e in change.events] == [PaymentCaptured, PaymentRefunded]
    assert change.events[1] == PaymentRefunded(
        payment_id=domain.payment_id("o1"),
        order_id="o1",
        customer_id="c1",
        amount_cents=4_200,
        currency="EUR",
    )
    assert domain.refund_due(change.account) is None


@pytest.mark.parametrize("outcome", [Declined("card_declined", 1), Unavailable("down", 0)], ids=str)
def test_a_cancelled_order_that_was_never_captured_has_nothing_to_refund(outcome):
    account = domain.cancelled(domain.charged(ready(), outcome, T1).account, "o1", T1)

    assert domain.refund_due(account) is None


def test_a_second_cancel_changes_nothing():
    once = domain.cancelled(placed(), "o1", T0)

    assert domain.cancelled(once, "o1", T1) is once


# --- settling what the provider answered before the transaction ----------------------------------


def test_a_charge_answered_before_the_transaction_is_recorded_in_it():
    change = domain.settle(ready(), domain.Asked(key_asked=True, answer=Captured("ch_1", 1)), T1)

    assert change.account.payment == domain.Payment(Status.CAPTURED, 1, provider_reference="ch_1")
    assert [type(e) for e in change.events] == [PaymentCaptured]


def test_nothing_asked_and_nothing_due_changes_nothing_but_the_fact():
    assert domain.settle(placed(), None, T1) == domain.Change(placed())


def test_an_account_that_became_due_for_a_charge_meanwhile_is_asked_again():
    # Asked when the order was only placed (nothing was due); reserved by the time of the transaction.
    with pytest.raises(ConcurrentUpdate, match="a charge or lookup is due"):
        domain.settle(ready(), domain.Asked(), T1)


def test_a_charge_for_an_order_cancelled_meanwhile_is_recorded_and_its_refund_asked_for():
    # The charge went out while the order was open; the cancel committed before its transaction.
    account = domain.cancelled(ready(), "o1", T1)
    charged_only = domain.Asked(key_asked=True, answer=Captured("ch_1", 1))

    with pytest.raises(ConcurrentUpdate, match="a refund is due"):
        domain.settle(account, charged_only, T1)
    change = domain.settle(account, domain.Asked(True, Captured("ch_1", 1), refund_id="re_1"), T1)
    assert change.account.payment is not None and change.account.payment.status is Status.REFUNDED
    assert [type(e) for e in change.events] == [PaymentCaptured, PaymentRefunded]


def test_a_lookup_that_found_nothing_records_the_cancel_only():
    account = domain.cancelled(ready(), "o1", T1)

    change = domain.settle(account, domain.Asked(key_asked=True, answer=None), T1)

    assert change == domain.Change(account)


def test_the_payment_id_is_derived_from_the_order_id():
    assert domain.payment_id("o1") == domain.payment_id("o1") != domain.payment_id("o2")
    assert len(domain.payment_id("o" * 64)) == 32


def test_a_placed_order_not_yet_charged_shows_a_pending_payment():
    view = domain.view("o1", placed())

    assert (view.status, view.amount_cents, view.attempts) == ("pending", 4_200, 0)
    assert view.provider_reference is None
    assert view.payment_id == domain.payment_id("o1")


def test_a_captured_payment_shows_its_reference_and_attempts():
    view = domain.view("o1", captured().account)

    assert (view.status, view.provider_reference, view.attempts, view.updated_at) == (
        "captured",
        "ch_1",
        2,
        T1,
    )


@pytest.mark.parametrize(
    "account",
    [None, domain.cancelled(None, "o1", T0), domain.cancelled(placed(), "o1", T0)],
    ids=["unknown", "cancel-only", "cancelled-before-charging"],
)
def test_there_is_no_payment_for_an_order_never_charged(account):
    with pytest.raises(NotFound, match="o1"):
        domain.view("o1", account)
