"""Identity's data: users (email unique), signing keys (activated in turn), deactivations' outcomes,
and the guard document every departure of an administrator writes."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import CollectionInvalid, DuplicateKeyError

from actors.identity.domain import Admins, Deactivation, RefusedRegistration, User
from actors.identity.keys import KeySeal, SigningKey, configured_key, key_to_install
from actors.identity.settings import identity_settings
from actors.runtime.errors import ConcurrentUpdate, NotFound, RuleViolation
from actors.runtime.store import Store
from brokers.contracts.identity import Deactivation as DeactivationView

USERS, KEYS, GUARDS = "users", "signing_keys", "guards"
DEACTIVATIONS, REFUSALS = "deactivations", "refused_registrations"

ADMINS_GUARD = "admins"


def _user(doc: dict[str, Any]) -> User:
    doc = dict(doc)
    return User(user_id=doc.pop("_id"), **doc)


def _seal() -> KeySeal:
    return KeySeal.of(identity_settings())


def _private_half(doc: dict[str, Any]) -> dict[str, str]:
    """How a stored key keeps its private half: in clear or sealed (see KeySeal)."""
    return {k: doc[k] for k in ("private_pem", "sealed_pem") if k in doc}


def _key(doc: dict[str, Any]) -> SigningKey:
    stored = _private_half(doc)
    rest = {k: v for k, v in doc.items() if k not in stored and k != "_id"}
    return SigningKey(kid=doc["_id"], private_pem=_seal().opened(stored), **rest)


class IdentityStore(Store):
    @classmethod
    async def prepare(cls, db: AsyncDatabase) -> None:
        await db[USERS].create_index("email", unique=True)
        await db[KEYS].create_index("generation", unique=True)
        # Made now, not by a handler's first write: rivals creating one in their transactions wait.
        existing = set(await db.list_collection_names())
        for name in {GUARDS, DEACTIVATIONS} - existing:
            with contextlib.suppress(CollectionInvalid):  # a replica starting at the same moment made it
                await db.create_collection(name)
        # Read before anything is written: production without a configured key, or without the
        # keys that encrypt it, stops here.
        configured = configured_key(identity_settings())
        seal = _seal()
        store = cls(db)
        await store.reseal_keys(seal)
        try:
            await store.install_signing_key(configured)
        except DuplicateKeyError:
            # A replica starting at the same moment installed a key first: decide again with it in view.
            await store.install_signing_key(configured)

    async def reseal_keys(self, seal: KeySeal) -> None:
        """Encrypt again, with the first encryption key, every stored key kept in clear or under an
        older one; a key nothing configured opens stops the start (KeySealBroken)."""
        async for doc in self.db[KEYS].find({}, session=self.session):
            before = _private_half(doc)
            private_pem = seal.opened(before)
            if seal.needs_resealing(before):
                after = seal.stored(private_pem)
                change: dict[str, Any] = {"$set": after}
                if gone := {k: "" for k in before if k not in after}:
                    change["$unset"] = gone
                # Filtered on what was read: a replica resealing at the same moment makes this a no-op.
                await self.db[KEYS].update_one({"_id": doc["_id"], **before}, change, session=self.session)

    async def install_signing_key(self, configured: SigningKey | None) -> None:
        installed = set(await self.db[KEYS].distinct("_id", session=self.session))
        key = key_to_install(configured, installed)
        if key is not None:
            await self.activate_key(key, at=datetime.now(UTC))

    async def activate_key(self, key: SigningKey, *, at: datetime) -> None:
        """Make this key the one that signs (the unique generation makes concurrent activations conflict)."""
        latest = await self.db[KEYS].find_one(
            {}, {"generation": 1}, sort=[("generation", DESCENDING)], session=self.session
        )
        doc = asdict(key.activated((latest["generation"] if latest else 0) + 1, at))
        doc |= _seal().stored(doc.pop("private_pem"))
        await self.db[KEYS].insert_one({"_id": doc.pop("kid"), **doc}, session=self.session)

    async def signing_key(self) -> SigningKey:
        doc = await self.db[KEYS].find_one({}, sort=[("generation", DESCENDING)], session=self.session)
        if doc is None:
            raise LookupError("identity has no signing key: its store was not prepared")
        return _key(doc)

    async def keys(self) -> list[SigningKey]:
        return [_key(doc) for doc in await self.db[KEYS].find({}, session=self.session).to_list()]

    async def find(self, user_id: str) -> User | None:
        doc = await self.db[USERS].find_one({"_id": user_id}, session=self.session)
        return None if doc is None else _user(doc)

    async def find_by_email(self, email: str) -> User | None:
        doc = await self.db[USERS].find_one({"email": email}, session=self.session)
        return None if doc is None else _user(doc)

    async def get(self, user_id: str) -> User:
        """The user, or why its registration was refused (RuleViolation), or NotFound."""
        user = await self.find(user_id)
        if user is None:
            refusal = await self.db[REFUSALS].find_one({"_id": user_id}, session=self.session)
            if refusal is not None:
                raise RuleViolation(refusal["reason"])
        return _found(user, f"user {user_id} does not exist")

    async def record_refusal(self, refusal: RefusedRegistration, *, at: datetime) -> None:
        await self.db[REFUSALS].replace_one(
            {"_id": refusal.user_id}, {"reason": refusal.reason, "at": at}, upsert=True, session=self.session
        )

    async def admins(self) -> Admins:
        guard = await self.db[GUARDS].find_one({"_id": ADMINS_GUARD}, session=self.session)
        active = await self.db[USERS].count_documents({"role": "admin", "active": True}, session=self.session)
        return Admins(active=active, version=guard["version"] if guard else 0)

    async def record_deactivation(self, deactivation: Deactivation) -> None:
        if deactivation.guard_version is not None:
            await self._advance_admins_guard(deactivation.guard_version)
        if deactivation.user is not None:
            await self.save(deactivation.user)
        record = {
            "user_id": deactivation.user_id,
            "refusal": deactivation.refusal,
            "deactivated_at": deactivation.deactivated_at,
        }
        # The first outcome under an id stands: a retry finds it.
        await self.db[DEACTIVATIONS].update_one(
            {"_id": deactivation.deactivation_id},
            {"$setOnInsert": record},
            upsert=True,
            session=self.session,
        )

    async def _advance_admins_guard(self, version: int) -> None:
        """Write the guard from the version read (a rival that wrote it first makes this conflict)."""
        if version == 1:  # never written: a rival inserting it too fails on the unique _id
            await self.db[GUARDS].insert_one({"_id": ADMINS_GUARD, "version": 1}, session=self.session)
            return
        written = await self.db[GUARDS].update_one(
            {"_id": ADMINS_GUARD, "version": version - 1},
            {"$set": {"version": version}},
            session=self.session,
        )
        if written.matched_count != 1:
            raise ConcurrentUpdate("the administrators changed meanwhile: decide again")

    async def deactivation(self, deactivation_id: str) -> DeactivationView:
        """A deactivation done, or why it was refused (RuleViolation), or NotFound (not yet applied)."""
        doc = await self.db[DEACTIVATIONS].find_one({"_id": deactivation_id}, session=self.session)
        if doc is None:
            raise NotFound(f"deactivation {deactivation_id} is not known (yet)")
        if doc["refusal"] is not None:
            raise RuleViolation(doc["refusal"])
        return DeactivationView(
            deactivation_id=deactivation_id, user_id=doc["user_id"], deactivated_at=doc["deactivated_at"]
        )

    async def get_by_email(self, email: str) -> User:
        return _found(await self.find_by_email(email), "no user has this email address")

    async def insert(self, user: User) -> None:
        doc = asdict(user)
        await self.db[USERS].insert_one({"_id": doc.pop("user_id"), **doc}, session=self.session)

    async def save(self, user: User) -> None:
        doc = asdict(user)
        await self.db[USERS].replace_one({"_id": doc.pop("user_id")}, doc, session=self.session)


def _found(user: User | None, missing: str) -> User:
    if user is None:
        raise NotFound(missing)
    return user
