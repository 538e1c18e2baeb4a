"""The orders actor (being built)."""

from actors.runtime.actor import Actor
from actors.runtime.store import Store

orders = Actor("orders", Store)
