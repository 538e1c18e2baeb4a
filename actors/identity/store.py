"""Identity's data: users (email unique) and signing keys (activated in turn)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from actors.identity.domain import RefusedRegistration, User
from actors.identity.keys import SigningKey, configured_key, key_to_install
from actors.identity.settings import identity_settings
from actors.runtime.errors import NotFound, RuleViolation
from actors.runtime.store import Store


def _user(doc: dict[str, Any]) -> User:
    doc = dict(doc)
    return User(user_id=doc.pop("_id"), **doc)


def _key(doc: dict[str, Any]) -> SigningKey:
    doc = dict(doc)
    return SigningKey(kid=doc.pop("_id"), **doc)


class IdentityStore(Store):
    @property
    def _users(self):
        return self.db["users"]

    @property
    def _keys(self):
        return self.db["signing_keys"]

    @classmethod
    async def prepare(cls, db: AsyncDatabase) -> None:
        await db["users"].create_index("email", unique=True)
        await db["signing_keys"].create_index("generation", unique=True)
        # Read before anything is written: production without a configured key stops here.
        configured = configured_key(identity_settings())
        store = cls(db)
        try:
            await store.install_signing_key(configured)
        except DuplicateKeyError:
            # A replica starting at the same moment installed a key first: decide again with it in view.
            await store.install_signing_key(configured)

    async def install_signing_key(self, configured: SigningKey | None) -> None:
        installed = set(await self._keys.distinct("_id", session=self.session))
        key = key_to_install(configured, installed)
        if key is not None:
            await self.activate_key(key, at=datetime.now(UTC))

    async def activate_key(self, key: SigningKey, *, at: datetime) -> None:
        """Make this key the one that signs (the unique generation makes concurrent activations conflict)."""
        latest = await self._keys.find_one(
            {}, {"generation": 1}, sort=[("generation", DESCENDING)], session=self.session
        )
        doc = asdict(key.activated((latest["generation"] if latest else 0) + 1, at))
        await self._keys.insert_one({"_id": doc.pop("kid"), **doc}, session=self.session)

    async def signing_key(self) -> SigningKey:
        doc = await self._keys.find_one({}, sort=[("generation", DESCENDING)], session=self.session)
        if doc is None:
            raise LookupError("identity has no signing key: its store was not prepared")
        return _key(doc)

    async def keys(self) -> list[SigningKey]:
        return [_key(doc) for doc in await self._keys.find({}, session=self.session).to_list()]

    async def find(self, user_id: str) -> User | None:
        doc = await self._users.find_one({"_id": user_id}, session=self.session)
        return None if doc is None else _user(doc)

    async def find_by_email(self, email: str) -> User | None:
        doc = await self._users.find_one({"email": email}, session=self.session)
        return None if doc is None else _user(doc)

    async def get(self, user_id: str) -> User:
        """The user, or why its registration was refused (RuleViolation), or NotFound."""
        user = await self.find(user_id)
        if user is None:
            refusal = await self.db["refused_registrations"].find_one({"_id": user_id}, session=self.session)
            if refusal is not None:
                raise RuleViolation(refusal["reason"])
        return _found(user, f"user {user_id} does not exist")

    async def record_refusal(self, refusal: RefusedRegistration, *, at: datetime) -> None:
        await self.db["refused_registrations"].replace_one(
            {"_id": refusal.user_id}, {"reason": refusal.reason, "at": at}, upsert=True, session=self.session
        )

    async def get_by_email(self, email: str) -> User:
        return _found(await self.find_by_email(email), "no user has this email address")

    async def insert(self, user: User) -> None:
        doc = asdict(user)
        await self._users.insert_one({"_id": doc.pop("user_id"), **doc}, session=self.session)

    async def save(self, user: User) -> None:
        doc = asdict(user)
        await self._users.replace_one({"_id": doc.pop("user_id")}, doc, session=self.session)


def _found(user: User | None, missing: str) -> User:
    if user is None:
        raise NotFound(missing)
    return user
