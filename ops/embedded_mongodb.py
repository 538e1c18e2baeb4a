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

Run as ``python -m ops.embedded_mongodb --host H --port P --storage-path DIR``.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from secantus import cli
from secantus.server import SecantusDBServer

TRANSACTION_LIFETIME_S = 15.0
OPTIONS = ("--sync-on-commit",)


def main(argv: list[str]) -> int:
    original = SecantusDBServer.__init__

    @functools.wraps(original)
    def with_lifetime(self: SecantusDBServer, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("transaction_lifetime_seconds", TRANSACTION_LIFETIME_S)
        original(self, *args, **kwargs)

    SecantusDBServer.__init__ = with_lifetime  # type: ignore[method-assign]
    return cli.main([*argv, *OPTIONS])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
