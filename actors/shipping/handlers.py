"""The shipping actor (being built)."""

from actors.runtime.actor import Actor
from actors.runtime.store import Store

shipping = Actor("shipping", Store)
