"""Two handlers deciding about one entity at the same moment, on the real MongoDB.

Write skew needs a precise interleaving: both rivals read before either commits, then each writes.
Waiting and hoping rarely produces it; here it is forced. Each rival runs in the runtime's own
transaction (inbox, handler, outbox: ``WorkConsumer._transact``, a batch of one), and its first attempt stops at
its first write (a store method named in ``writes``) until the other has got as far (or finished
without writing). Then both go on. A design where rivals write the same document makes one of
them conflict and decide again on the other's result; a design where they write different
documents lets both commit, which the tests' invariants then catch.

The runtime's batches, which keep one process's handlers from running side by side, are bypassed
on purpose: they do not reach across replicas, so the database design must be right without them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.mongo_client import AsyncMongoClient

from actors.registry import ACTORS
from actors.runtime.actor import Work
from actors.runtime.consumers import WorkConsumer
from actors.runtime.host import topology_of
from actors.runtime.outbox import OutboxRelay, outbox_entries
from brokers.envelope import Envelope, Message
from brokers.settings import Settings

_MEETING_S = 10.0


class NeverMet(AssertionError):
    """A rival was held up before its first write (by a lock of the other's transaction, say), so
    the interleaving the test is about did not happen."""


class _Meeting:
    """Where the rivals wait for each other, once."""

    def __init__(self, parties: int) -> None:
        self._parties, self._arrived, self._all_here = parties, 0, asyncio.Event()

    def arrive(self) -> None:
        self._arrived += 1
        if self._arrived >= self._parties:
            self._all_here.set()

    async def wait(self) -> None:
        self.arrive()
        try:
            await asyncio.wait_for(self._all_here.wait(), _MEETING_S)
        except TimeoutError as exc:  # the harness failed, not the design under test
            raise NeverMet(f"{self._arrived} of {self._parties} rivals reached their first write") from exc


@dataclass
class _Rival:
    meeting: _Meeting
    writes: frozenset[str]
    attempts: int = 0
    met: bool = False

    async def meet_once(self) -> None:
        if not self.met:
            self.met = True
            await self.meeting.wait()

    def leave(self) -> None:
        """Decided without writing: the others need not wait for this one."""
        if not self.met:
            self.met = True
            self.meeting.arrive()


@dataclass
class _GatedStore:
    """The handler's store, stopping the first attempt at its first write."""

    store: Any
    rival: _Rival
    gated: bool = field(default=True)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if name not in self.rival.writes or not self.gated:
            return attribute

        async def write(*args: Any, **kwargs: Any) -> Any:
            await self.rival.meet_once()
            return await attribute(*args, **kwargs)

        return write


@dataclass(frozen=True)
class Rivalry:
    message: Message
    outcome: Work[Any] | Exception
    # More than one: the transaction conflicted with the rival's and ran again on its result.
    attempts: int

    @property
    def lost(self) -> bool:
        """Had to decide again, or failed (then the runtime retries it later)."""
        return self.attempts > 1 or isinstance(self.outcome, Exception)


@dataclass
class Rivals:
    """One actor's runtime on the real MongoDB, without a broker: messages are applied directly."""

    actor_name: str
    settings: Settings
    client: AsyncMongoClient

    @property
    def db(self):
        return self.client[self.settings.database_name(self.actor_name)]

    def _consumer(self) -> WorkConsumer:
        actor = ACTORS[self.actor_name]
        topology = topology_of(actor, self.settings)
        # Neither broker nor relay is used by a transaction: the outbox stays in the database.
        return WorkConsumer(actor, topology, None, self.client, self.db, None, self.settings)  # type: ignore[arg-type]

    async def prepare(self) -> None:
        # As a host does at start: creating a collection inside a transaction would hold up the rival.
        await OutboxRelay.prepare(self.db, self.settings)
        await ACTORS[self.actor_name].store.prepare(self.db)

    async def settle(self, rivalries: list[Rivalry], correlation_id: str) -> None:
        """Apply again what failed its race, as the runtime's retry would."""
        for rivalry in rivalries:
            if isinstance(rivalry.outcome, Exception):
                await self.apply(rivalry.message, correlation_id)

    async def apply(self, message: Message, correlation_id: str) -> Work[Any] | None:
        """Apply one message alone (set-up)."""
        consumer = self._consumer()
        contract, handler = consumer.actor.handlers[message.TYPE]
        return await consumer._transact(Envelope.first(message, correlation_id), message, handler)

    async def at_once(self, *messages: Message, correlation_id: str, writes: set[str]) -> list[Rivalry]:
        """Apply the messages concurrently, all reading before any writes. Returns, per message, its
        committed work or the exception it ended with (a rival that lost may be retried later by
        the runtime: ``apply`` it again to see what its retry decides), and how often it ran."""
        consumer = self._consumer()
        meeting = _Meeting(len(messages))

        async def run(message: Message) -> Rivalry:
            _, handler = consumer.actor.handlers[message.TYPE]
            rival = _Rival(meeting, frozenset(writes))

            async def gated(payload: Any, work: Work[Any]) -> None:
                rival.attempts += 1
                first = rival.attempts == 1
                work.store = _GatedStore(work.store, rival, gated=first)
                try:
                    await handler(payload, work)
                finally:
                    rival.leave()

            try:
                work = await consumer._transact(Envelope.first(message, correlation_id), message, gated)
            except NeverMet:
                raise
            except Exception as exc:  # the loser of the race, as the runtime would see it
                return Rivalry(message, exc, rival.attempts)
            return Rivalry(message, work, rival.attempts)

        return list(await asyncio.gather(*(run(m) for m in messages)))

    async def outbox(self, type_: str) -> list[dict[str, Any]]:
        return await outbox_entries(self.db, routing_key=type_)
