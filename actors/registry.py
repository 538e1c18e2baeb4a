"""Every actor, by name: what `emporium actor NAME` and the all-in-one process can run."""

from actors.catalog import catalog
from actors.inventory import inventory
from actors.runtime.actor import Actor

ACTORS: dict[str, Actor] = {actor.name: actor for actor in (catalog, inventory)}
