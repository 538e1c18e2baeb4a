"""Notifications' data: every notification sent (keyed by its id), and the customers' email addresses."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING

from actors.notifications.domain import Notification, Sent
from actors.runtime.store import Store

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
    @property
    def _notifications(self):
        return self.db["notifications"]

    @property
    def _emails(self):
        return self.db["emails"]

    @classmethod
    async def prepare(cls, db) -> None:
        # The notification id is the _id: unique, so a notification is kept once whatever happens.
        await db["notifications"].create_index([("customer_id", ASCENDING), *ORDER])
        await db["notifications"].create_index([("order_id", ASCENDING), *ORDER])

    async def save_new(self, sent: Sent) -> bool:
        """Record the notification unless it was recorded before (one round trip); whether it is new."""
        n = sent.notification
        result = await self._notifications.update_one(
            {"_id": n.notification_id},
            {
                "$setOnInsert": {
                    "customer_id": n.customer_id,
                    "order_id": n.order_id,
                    "template": n.template,
                    "subject": n.subject,
                    "body": n.body,
                    "channel": sent.channel,
                    "address": sent.address,
                    "sent_at": sent.sent_at,
                }
            },
            upsert=True,
            session=self.session,
        )
        return result.upserted_id is not None

    async def page(
        self, *, customer_id: str | None, order_id: str | None, offset: int, limit: int
    ) -> tuple[list[Sent], int]:
        criteria = {"customer_id": customer_id, "order_id": order_id}
        where = {key: value for key, value in criteria.items() if value is not None}
        found = self._notifications.find(where, session=self.session).sort(ORDER).skip(offset).limit(limit)
        total = await self._notifications.count_documents(where, session=self.session)
        return [_sent(doc) async for doc in found], total

    async def remember_email(self, user_id: str, email: str) -> None:
        await self._emails.replace_one({"_id": user_id}, {"email": email}, upsert=True, session=self.session)

    async def email_of(self, customer_id: str) -> str | None:
        doc = await self._emails.find_one({"_id": customer_id}, session=self.session)
        return None if doc is None else doc["email"]
