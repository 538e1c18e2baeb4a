from datetime import UTC, datetime

import pytest

from actors.notifications import domain
from actors.notifications.channels import LogChannel, SmtpChannel, channel_for
from brokers.contracts.identity import UserRegistered
from brokers.contracts.notifications import NotificationSent
from brokers.contracts.orders import OrderCancelled, OrderConfirmed, OrderDelivered, OrderLine, OrderShipped
from brokers.contracts.shipping import ShipmentScheduled
from brokers.settings import Settings

AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
CONFIRMED = OrderConfirmed(
    order_id="o1",
    customer_id="c1",
    total_cents=4_505,
    currency="EUR",
    lines=[
        OrderLine(sku="A", quantity=2, unit_price_cents=1_000),
        OrderLine(sku="B", quantity=1, unit_price_cents=2_505),
    ],
)
SHIPPED = OrderShipped(
    order_id="o1", customer_id="c1", shipment_id="s1", carrier="swiftpost", tracking_number="SW1"
)
DELIVERED = OrderDelivered(order_id="o1", customer_id="c1")
REGISTERED = UserRegistered(user_id="c1", email="ada@example.com", name="Ada")


def test_each_event_has_its_template_subject_and_body():
    confirmed, shipped = domain.compose(CONFIRMED), domain.compose(SHIPPED)
    assert (confirmed.template, confirmed.customer_id, confirmed.order_id) == ("order_confirmed", "c1", "o1")
    assert "3 item(s) for 45.05 EUR" in confirmed.body and "o1" in confirmed.subject
    assert shipped.template == "order_shipped" and "swiftpost" in shipped.body and "SW1" in shipped.body
    assert domain.compose(DELIVERED).template == "order_delivered"
    welcome = domain.compose(REGISTERED)
    assert (welcome.template, welcome.customer_id, welcome.order_id) == ("welcome", "c1", None)
    assert "Ada" in welcome.body and "Ada" not in welcome.subject


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("out_of_stock", "out of stock"),
        ("payment_declined", "declined"),
        ("payment_unavailable", "could not reach the payment service"),
        ("timeout", "in time"),
        ("customer", "you asked us"),
    ],
)
def test_a_cancellation_says_why_in_words(reason, words):
    notification = domain.compose(OrderCancelled(order_id="o1", customer_id="c1", reason=reason))
    assert notification.template == "order_cancelled" and words in notification.body
    assert reason not in notification.body


def test_the_id_depends_on_what_is_told_about_whom_and_nothing_else():
    events = [
        CONFIRMED,
        SHIPPED,
        DELIVERED,
        REGISTERED,
        OrderCancelled(order_id="o1", customer_id="c1", reason="timeout"),
    ]
    ids = [domain.compose(event).notification_id for event in events]
    assert len(set(ids)) == len(ids)
    assert domain.compose(CONFIRMED.model_copy(update={"order_id": "o2"})).notification_id not in ids
    assert [domain.compose(event).notification_id for event in events] == ids
    assert all(i.startswith("ntf_") and len(i) <= 64 for i in ids)


def test_no_notification_for_other_events():
    with pytest.raises(TypeError, match="shipment.scheduled"):
        domain.compose(
            ShipmentScheduled(
                shipment_id="s", order_id="o", customer_id="c", carrier="x", tracking_number="y"
            )
        )


def test_money_is_shown_in_units_and_cents():
    assert [domain.money(c, "EUR") for c in (0, 5, 100, 123_456)] == [
        "0.00 EUR",
        "0.05 EUR",
        "1.00 EUR",
        "1234.56 EUR",
    ]


def test_a_sent_notification_is_viewed_and_announced_with_its_channel():
    sent = domain.Sent(domain.compose(SHIPPED), "email", "ada@example.com", AT)
    view = sent.view()
    assert (view.channel, view.sent_at, view.template, view.order_id) == ("email", AT, "order_shipped", "o1")
    assert sent.announcement() == NotificationSent(
        notification_id=view.notification_id,
        customer_id="c1",
        order_id="o1",
        channel="email",
        template="order_shipped",
    )


def test_the_email_carries_the_notification_id_as_its_message_id():
    sent = domain.Sent(domain.compose(SHIPPED), "email", "ada@example.com", AT)
    message = SmtpChannel("mail.local", 1025).message(sent)
    assert message["Message-ID"] == f"<{sent.notification.notification_id}@emporium>"
    assert (message["To"], message["Subject"]) == ("ada@example.com", "Order o1 is on its way")
    assert "SW1" in message.get_content()


@pytest.mark.parametrize(
    ("url", "where"),
    [("smtp://mail.local:1025", ("mail.local", 1025)), ("smtp://mail.local", ("mail.local", 25))],
)
def test_an_smtp_url_names_the_server(url, where):
    channel = SmtpChannel.from_url(url)
    assert (channel.host, channel.port) == where


@pytest.mark.parametrize(
    "url", ["smtps://mail.local", "smtp://", "smtp://user:pw@mail.local", "mail.local:25"]
)
def test_an_smtp_url_that_cannot_be_used_is_refused(url):
    with pytest.raises(ValueError, match="smtp://host:port"):
        SmtpChannel.from_url(url)


def test_email_goes_out_only_with_a_server_configured_and_an_address_known():
    plain = Settings()
    mailing = Settings(emporium_smtp_url="smtp://mail.local:1025")
    assert isinstance(channel_for(plain, "ada@example.com"), LogChannel)
    assert isinstance(channel_for(mailing, None), LogChannel)
    chosen = channel_for(mailing, "ada@example.com")
    assert isinstance(chosen, SmtpChannel) and (chosen.host, chosen.port) == ("mail.local", 1025)
