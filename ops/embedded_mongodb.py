"""The embedded MongoDB (SecantusDB) as emporium runs it: its own command line, and two settings.

- ``--sync-on-commit``: a commit is on disk before the client hears of it. Without it SecantusDB
  leaves its journal in the process's buffers for a moment, and kill -9 then loses transactions it
  acknowledged (9 of 300 killed right after their commits, measured here); fsync per commit cost
  little on this disk. A real MongoDB gets the same from the actors' ``w: majority``.
- A transaction its client abandoned (the client was killed inside it) is aborted once idle for
  ``TRANSACTION_LIFETIME_S``, not 60 s: until then every document it wrote stays locked, and a hot
  SKU's stock document locked for a minute times out every order for it. The longest transaction
  the actors hold open on purpose is a charge: three provider calls of at most 2 s each. On a real
  MongoDB: ``setParameter: {transactionLifetimeLimitSeconds: 15}``. SecantusDB's command line has no
  option for it, so its server class is given it here.

- SecantusDB keeps every session's last transaction for good, and walks all of them on every
  statement (to reap idle ones): each client a test or a benchmark opens leaves its sessions behind,
  and a long-running server slowed down by half within a few benchmark runs here (small
  transactions/s: 194, 160, 83). Here it walks them at most once a second, and forgets a finished
  transaction once it has been idle for ``TRANSACTION_LIFETIME_S``; the newest transaction number
  of each session is still kept, so an old one cannot be started again. (A driver retries a commit
  within seconds, well inside that.)

Run as ``python -m ops.embedded_mongodb --host H --port P --storage-path DIR``.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from secantus import cli
from secantus.server import SecantusDBServer
from secantus.transactions import TransactionRegistry, TxnState

TRANSACTION_LIFETIME_S = 15.0
PRUNE_EVERY_S = 1.0
OPTIONS = ("--sync-on-commit",)


def _prune_finished_and_seldom(
    registry: TransactionRegistry, reap: Any = TransactionRegistry._prune_locked
) -> int:
    """TransactionRegistry._prune_locked (called with the registry's lock held), at most once per
    PRUNE_EVERY_S, then dropping finished transactions idle past the lifetime."""
    now = registry._time()
    if now < getattr(registry, "_emporium_next_prune", 0.0):
        return 0
    # An attribute of ours on SecantusDB's registry, which does not declare it.
    registry._emporium_next_prune = now + PRUNE_EVERY_S  # type: ignore[attr-defined]
    reaped = reap(registry)
    idle_since = now - registry._lifetime
    for lsid, txn in list(registry._txns.items()):
        if txn.state is not TxnState.IN_PROGRESS and txn.last_use < idle_since:
            del registry._txns[lsid]
    return reaped


def main(argv: list[str]) -> int:
    # Patched in place (see the module's docstring: SecantusDB has no option for it); the patch
    # takes the original as a default argument, which the method's type does not have.
    TransactionRegistry._prune_locked = _prune_finished_and_seldom  # type: ignore[method-assign,assignment]
    original = SecantusDBServer.__init__

    @functools.wraps(original)
    def with_lifetime(self: SecantusDBServer, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("transaction_lifetime_seconds", TRANSACTION_LIFETIME_S)
        original(self, *args, **kwargs)

    SecantusDBServer.__init__ = with_lifetime  # type: ignore[method-assign]  # patched: see above
    return cli.main([*argv, *OPTIONS])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
