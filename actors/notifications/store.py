"""Notifications' data: every notification sent (keyed by its id), and the customers' email addresses.

In a batch (``preload``), the addresses of every customer its messages name and which of its
notifications were stored before are read in one round trip each, and its new notifications are
written in one at the end (``flush``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from actors.notifications.domain import Notification, Sent, compose
from actors.runtime.store import Store, ids_named

NOTIFICATIONS, EMAILS = "notifications", "emails"

ORDER = [("sent_at", ASCENDING), ("_id", ASCENDING)]


def _sent(doc: dict[str, Any]) -> Sent:
    notification = Notification(
        notification_id=doc["_id"],
        customer_id=doc["customer_id"],
        order_id=doc["order_id"],
        template=doc["template"],
        subject=doc["subject"],
        body=doc["body"],
    )
    return Sent(notification, doc["channel"], doc["address"], doc["sent_at"])


class NotificationsStore(Store):
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        super().__init__(db, session)
        self._emails_read: dict[str, str | None] = {}
        # In a batch: the ids of its notifications stored already (read or held), and those held.
        self._stored: set[str] = set()
        self._held: list[dict[str, Any]] = []

    async def preload(self, messages: Sequence[object]) -> None:
        if customer_ids := ids_named(messages, "customer_id"):
            await self._read_emails(customer_ids)
        ids = [compose(message).notification_id for message in messages]  # type: ignore[arg-type]
        self._stored |= set(await self.read_ids(NOTIFICATIONS, ids, lambda doc: True))

    async def flush(self) -> None:
        if self._held:
            await self.db[NOTIFICATIONS].insert_many(self._held, session=self.session)
            self._held = []

    async def _read_emails(self, customer_ids: Sequence[str]) -> dict[str, str | None]:
        read = dict.fromkeys(customer_ids) | await self.read_ids(
            EMAILS, customer_ids, lambda doc: doc["email"]
        )
        if self.batched:
            self._emails_read.update(read)
        return read

    @classmethod
    async def prepare(cls, db) -> None:
        # The notification id is the _id: unique, so a notification is kept once whatever happens.
        await db[NOTIFICATIONS].create_index([("customer_id", ASCENDING), *ORDER])
        await db[NOTIFICATIONS].create_index([("order_id", ASCENDING), *ORDER])

    async def save_new(self, sent: Sent) -> bool:
        """Record the notification unless it was recorded before; whether it is new. In a batch it
        is held for ``flush`` (another replica storing it meanwhile fails the batch's insert on the
        unique id, and the batch is applied again); alone, one upsert."""
        n = sent.notification
        document = {
            "customer_id": n.customer_id,
            "order_id": n.order_id,
            "template": n.template,
            "subject": n.subject,
            "body": n.body,
            "channel": sent.channel,
            "address": sent.address,
            "sent_at": sent.sent_at,
        }
        if self.batched:
            if n.notification_id in self._stored:
                return False
            self._stored.add(n.notification_id)
            self._held.append({"_id": n.notification_id, **document})
            return True
        result = await self.db[NOTIFICATIONS].update_one(
            {"_id": n.notification_id}, {"$setOnInsert": document}, upsert=True, session=self.session
        )
        return result.upserted_id is not None

    async def page(
        self, *, customer_id: str | None, order_id: str | None, offset: int, limit: int
    ) -> tuple[list[Sent], int]:
        criteria = {"customer_id": customer_id, "order_id": order_id}
        where = {key: value for key, value in criteria.items() if value is not None}
        found = self.db[NOTIFICATIONS].find(where, session=self.session).sort(ORDER).skip(offset).limit(limit)
        total = await self.db[NOTIFICATIONS].count_documents(where, session=self.session)
        return [_sent(doc) async for doc in found], total

    async def remember_email(self, user_id: str, email: str) -> None:
        await self.db[EMAILS].replace_one(
            {"_id": user_id}, {"email": email}, upsert=True, session=self.session
        )
        if self.batched:
            self._emails_read[user_id] = email

    async def email_of(self, customer_id: str) -> str | None:
        if customer_id in self._emails_read:
            return self._emails_read[customer_id]
        return (await self._read_emails([customer_id]))[customer_id]
