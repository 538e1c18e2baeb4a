"""ops/embedded_mongodb.py's change to SecantusDB's transaction registry, on the real class with a
clock of the test's own: finished transactions are forgotten once idle past the lifetime, the scan
runs at most once a second, and an idle transaction in progress is still reaped."""

from secantus.transactions import TransactionRegistry, TxnState

from ops import embedded_mongodb
from ops.embedded_mongodb import PRUNE_EVERY_S, TRANSACTION_LIFETIME_S


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def registry(clock: Clock, monkeypatch) -> TransactionRegistry:
    monkeypatch.setattr(TransactionRegistry, "_prune_locked", embedded_mongodb._prune_finished_and_seldom)
    return TransactionRegistry(lifetime_seconds=TRANSACTION_LIFETIME_S, time_func=clock)


def committed(registry: TransactionRegistry, sessions: int, prefix: str = "session") -> None:
    for n in range(sessions):
        lsid = f"{prefix}-{n}".encode()
        txn, error = registry.for_statement(lsid, None, 1, start=True)
        assert txn is not None and error is None
        assert registry.commit(lsid, 1) is None


def test_finished_transactions_are_forgotten_once_idle_past_the_lifetime(monkeypatch):
    clock = Clock()
    transactions = registry(clock, monkeypatch)
    committed(transactions, 500)
    assert len(transactions._txns) == 500

    clock.now += TRANSACTION_LIFETIME_S + PRUNE_EVERY_S
    transactions.prune_expired()

    assert len(transactions._txns) == 0
    # The session's number is kept: its old transaction cannot be started again.
    txn, error = transactions.for_statement(b"session-1", None, 1, start=True)
    assert txn is None and error is not None


def test_the_scan_runs_at_most_once_a_second_and_still_reaps_idle_transactions(monkeypatch):
    clock = Clock()
    transactions = registry(clock, monkeypatch)
    idle, _ = transactions.for_statement(b"abandoned", None, 1, start=True)  # scans, at T
    assert idle is not None

    clock.now += TRANSACTION_LIFETIME_S - 0.2
    committed(transactions, 3, "early")  # scans (a second has passed): not idle long enough yet
    assert idle.state is TxnState.IN_PROGRESS

    clock.now += 0.4  # idle past the lifetime, but within a second of the last scan
    committed(transactions, 3, "late")
    assert idle.state is TxnState.IN_PROGRESS

    clock.now += PRUNE_EVERY_S
    transactions.prune_expired()
    assert idle.state is TxnState.ABORTED
