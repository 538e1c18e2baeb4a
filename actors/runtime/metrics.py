"""Runtime metrics, labelled by actor so one process running every actor exposes them all.

Business metrics are the actors' own (``actors/<name>/metrics.py``): observers of the events an
actor emits, registered with ``Actor.observes`` and called by the runtime after commit. The runtime
loads an actor's module when it hosts the actor (``load_actor_metrics``), so a process defines the
metrics of the actors it runs and no others.
"""

import importlib
import importlib.util
from collections.abc import Iterable
from typing import Literal, get_args

from prometheus_client import Counter, Gauge, Histogram

OUTCOMES = ("applied", "duplicate", "retried", "dead_lettered")
MESSAGES = Counter(
    "emporium_messages_total",
    "Messages taken off an actor's work queue, by outcome",
    ["actor", "type", "outcome"],  # one of OUTCOMES
)
HANDLER_SECONDS = Histogram(
    "emporium_handler_duration_seconds",
    "Time from a message's delivery to its commit and publish, the rest of its batch included",
    ["actor", "type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_MESSAGES = Histogram(
    "emporium_batch_messages",
    "Messages applied by one committed transaction (group commit)",
    ["actor"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
TRANSACTION_SECONDS = Histogram(
    "emporium_transaction_duration_seconds",
    "Time of one committed transaction of a batch (its handlers, outbox and inbox writes, the commit)",
    ["actor"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCHES_REDONE = Counter(
    "emporium_batches_redone_total",
    "Transactions aborted and applied again without the messages that could not be applied "
    "(a copy applied before, a handler that raised)",
    ["actor"],
)
QueryOutcome = Literal["answered", "invalid", "not_found", "refused", "failed"]
QUERIES = Counter(
    "emporium_queries_total",
    "Queries answered, by outcome",
    ["actor", "type", "outcome"],  # a QueryOutcome
)
EVENTS_PUBLISHED = Counter(
    "emporium_events_published_total",
    "Events an actor emitted, counted once when the transaction that put them in its outbox committed",
    ["actor", "type"],
)
OUTBOX_PUBLISHED = Counter("emporium_outbox_published_total", "Events published from the outbox", ["actor"])
OUTBOX_UNSENT = Gauge(
    "emporium_outbox_unsent", "Outbox entries not yet published (at the last sweep)", ["actor"]
)
OUTBOX_OLDEST_SECONDS = Gauge(
    "emporium_outbox_oldest_unsent_age_seconds",
    "Age of the oldest unsent outbox entry (at the last sweep)",
    ["actor"],
)

PARTITIONS_HELD = Gauge(
    "emporium_partitions_held",
    "Partition queues this replica knows it is the active consumer of (partitioned actors)",
    ["actor"],
)
PARTITION_HANDOVERS = Counter(
    "emporium_partition_handovers_total",
    "Partitions this replica gave up to another, holding more than its share",
    ["actor"],
)


def load_actor_metrics(actor_name: str) -> None:
    """Import ``actors/<actor_name>/metrics.py`` when there is one: its observers register on the actor."""
    package = f"actors.{actor_name}"
    # find_spec of the package first: an actor that is not a package of actors/ (a test's) has none.
    if importlib.util.find_spec(package) and importlib.util.find_spec(f"{package}.metrics"):
        importlib.import_module(f"{package}.metrics")


def start_at_zero(actor_name: str, message_types: Iterable[str], query_types: Iterable[str]) -> None:
    """Create every outcome's series of an actor's messages and queries at 0, so that a rate of
    retries, dead letters or failed queries is 0 until one happens, rather than no data (and the
    first one is not lost: rate() needs a sample from before it)."""
    BATCH_MESSAGES.labels(actor_name)
    TRANSACTION_SECONDS.labels(actor_name)
    BATCHES_REDONE.labels(actor_name)
    OUTBOX_PUBLISHED.labels(actor_name)
    for message_type in message_types:
        HANDLER_SECONDS.labels(actor_name, message_type)
        for outcome in OUTCOMES:
            MESSAGES.labels(actor_name, message_type, outcome)
    for query_type in query_types:
        for query_outcome in get_args(QueryOutcome):
            QUERIES.labels(actor_name, query_type, query_outcome)
