"""Every actor, by name: what `emporium actor NAME` and the all-in-one process can run."""

from actors.analytics import analytics
from actors.catalog import catalog
from actors.identity import identity
from actors.inventory import inventory
from actors.notifications import notifications
from actors.orders import orders
from actors.payments import payments
from actors.runtime.actor import Actor
from actors.shipping import shipping

ACTORS: dict[str, Actor] = {
    actor.name: actor
    for actor in (identity, catalog, inventory, orders, payments, shipping, notifications, analytics)
}
