"""Payments' data: one account document per order (the order replica, its flags, the payment).

Every handler of an order reads and writes that one document inside its transaction, so two
handlers racing on an order conflict and one of them runs again on the other's result: a charge
racing a cancel finds the cancelled account and asks the provider again, for the refund of what it
took (a capture of a cancelled order cannot slip through unrefunded), and an order placed and
reserved at the same moment is charged by whichever handler comes second. In a batch the accounts
of its orders are read in one round trip (``preload``) and written in one at the end (``flush``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from pymongo import ReplaceOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from actors.payments.domain import Account, Order, Payment, Status
from actors.runtime.store import Held, Store, ids_named

ACCOUNTS = "accounts"


def _account(doc: dict[str, Any]) -> Account:
    order, payment = doc.get("order"), doc.get("payment")
    return Account(
        order_id=doc["_id"],
        updated_at=doc["updated_at"],
        order=Order(order_id=doc["_id"], **order) if order else None,
        reserved=doc["reserved"],
        cancelled=doc["cancelled"],
        payment=Payment(**{**payment, "status": Status(payment["status"])}) if payment else None,
    )


def _document(account: Account) -> dict[str, Any]:
    order = asdict(account.order) if account.order else None
    if order:
        order.pop("order_id")
    payment = {**asdict(account.payment), "status": str(account.payment.status)} if account.payment else None
    return {
        "updated_at": account.updated_at,
        "reserved": account.reserved,
        "cancelled": account.cancelled,
        "order": order,
        "payment": payment,
    }


# What GetPayment answers for (domain.view): a known order, charged or still to be charged.
_WITH_PAYMENT = {"order": {"$ne": None}, "$or": [{"payment": {"$ne": None}}, {"cancelled": False}]}


class PaymentsStore(Store):
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        super().__init__(db, session)
        self._held: Held[Account | None] = Held()

    async def preload(self, messages: Sequence[object]) -> None:
        if order_ids := ids_named(messages):
            await self._read(order_ids)

    async def flush(self) -> None:
        if changed := [now for _, now in self._held.changed() if now is not None]:
            await self.db[ACCOUNTS].bulk_write(
                [ReplaceOne({"_id": a.order_id}, _document(a), upsert=True) for a in changed],
                session=self.session,
            )
            self._held.written()

    async def _read(self, order_ids: Sequence[str]) -> dict[str, Account | None]:
        return await self.read_held(self._held, ACCOUNTS, order_ids, _account)

    async def account(self, order_id: str) -> Account | None:
        if order_id in self._held:
            return self._held[order_id]
        return (await self._read([order_id]))[order_id]

    async def page(self, *, offset: int, limit: int) -> tuple[list[Account], int]:
        """A page of the accounts that have a payment to show, by order id, and how many in all."""
        docs = self.db[ACCOUNTS].find(_WITH_PAYMENT, session=self.session).sort("_id", 1)
        accounts = [_account(doc) async for doc in docs.skip(offset).limit(limit)]
        return accounts, await self.db[ACCOUNTS].count_documents(_WITH_PAYMENT, session=self.session)

    async def save(self, account: Account) -> None:
        if self.batched:
            self._held[account.order_id] = account
            return
        await self.db[ACCOUNTS].replace_one(
            {"_id": account.order_id}, _document(account), upsert=True, session=self.session
        )
