"""The notifications actor: one notification per event that concerns a customer.

Each is sent once whatever the redeliveries: the runtime's inbox skips a message seen before, and
the notification's id (see ``domain``) is the key of its document, so a copy of the event published
again under another message id finds it there and sends nothing. The send comes after the
notification is stored: if the channel fails, the transaction (the stored notification included) is
rolled back and the runtime retries the message later, so nothing is lost. Sending through an external channel
is at least once: the transaction can be run again after a send succeeded (see ``channels``).
"""

from datetime import UTC, datetime

from actors.notifications import domain
from actors.notifications.channels import channel_for
from actors.notifications.store import NotificationsStore
from actors.runtime.actor import Actor, Work
from brokers.contracts.identity import UserRegistered
from brokers.contracts.notifications import ListNotifications, NotificationPage
from brokers.contracts.orders import OrderCancelled, OrderConfirmed, OrderDelivered, OrderShipped
from brokers.envelope import InvalidMessage

NAME = "notifications"
# With SMTP configured, a handler sends its email inside the transaction: then one message per
# transaction keeps a slow server (10 s timeout) inside the transaction lifetime (15 s), and 4 lanes
# keep other customers' mail going meanwhile. Without SMTP nothing waits: full batches in one lane.
notifications = Actor(
    NAME,
    NotificationsStore,
    lanes=lambda settings: 4 if settings.emporium_smtp_url else 1,
    batch_size=lambda settings: 1 if settings.emporium_smtp_url else settings.emporium_batch_size,
)
OrderEvent = OrderConfirmed | OrderCancelled | OrderShipped | OrderDelivered


@notifications.handles(UserRegistered)
async def welcome(event: UserRegistered, work: Work[NotificationsStore]) -> None:
    await work.store.remember_email(event.user_id, str(event.email))
    await _notify(work, domain.compose(event))


@notifications.handles(OrderConfirmed)
@notifications.handles(OrderCancelled)
@notifications.handles(OrderShipped)
@notifications.handles(OrderDelivered)
async def tell_about_order(event: OrderEvent, work: Work[NotificationsStore]) -> None:
    await _notify(work, domain.compose(event))


async def _notify(work: Work[NotificationsStore], notification: domain.Notification) -> None:
    address = await work.store.email_of(notification.customer_id)
    channel = channel_for(work.settings, address)
    sent = domain.Sent(notification, channel.name, address, datetime.now(UTC))
    if not await work.store.save_new(sent):  # told before (the same fact under another message id)
        return
    await channel.send(sent)
    work.emit(sent.announcement())


@notifications.answers_to(ListNotifications)
async def list_notifications(query: ListNotifications, store: NotificationsStore) -> NotificationPage:
    if query.customer_id is None and query.order_id is None:
        raise InvalidMessage("ListNotifications needs a customer_id or an order_id (or both)")
    sent, total = await store.page(
        customer_id=query.customer_id, order_id=query.order_id, offset=query.offset, limit=query.limit
    )
    return NotificationPage(items=[s.view() for s in sent], total=total)
