"""Every event published has someone who needs it: an actor that handles it, or the edge (which
follows every order's saga and keeps a view of deactivated users). One nobody takes would only pile
up in unrouted-events."""

from actors.registry import ACTORS
from brokers.envelope import REGISTRY, Kind
from edge.events import BOUND_EVENT_TYPES


def test_every_event_type_is_taken_by_an_actor_or_the_edge():
    taken = {t for actor in ACTORS.values() for t in actor.handlers} | set(BOUND_EVENT_TYPES)
    events = {t for t, contract in REGISTRY.items() if contract.KIND is Kind.EVENT}
    assert sorted(events - taken) == []
