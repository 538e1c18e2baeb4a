"""The notifications actor (being built)."""

from actors.runtime.actor import Actor
from actors.runtime.store import Store

notifications = Actor("notifications", Store)
