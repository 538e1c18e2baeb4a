"""The payments actor (being built)."""

from actors.runtime.actor import Actor
from actors.runtime.store import Store

payments = Actor("payments", Store)
