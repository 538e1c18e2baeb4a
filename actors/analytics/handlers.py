"""The analytics actor (being built)."""

from actors.runtime.actor import Actor
from actors.runtime.store import Store

analytics = Actor("analytics", Store)
