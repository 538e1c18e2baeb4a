"""Runtime metrics, labelled by actor so one process running every actor exposes them all."""

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "emporium_messages_total",
    "Messages taken off an actor's work queue, by outcome",
    ["actor", "type", "outcome"],  # applied | duplicate | retried | dead_lettered
)
HANDLER_SECONDS = Histogram(
    "emporium_handler_duration_seconds",
    "Time to run a handler and commit its transaction",
    ["actor", "type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
QUERIES = Counter("emporium_queries_total", "Queries answered, by outcome", ["actor", "type", "outcome"])
OUTBOX_PUBLISHED = Counter("emporium_outbox_published_total", "Events published from the outbox", ["actor"])
OUTBOX_UNSENT = Gauge("emporium_outbox_unsent", "Outbox entries not yet published (at the last sweep)", ["actor"])
OUTBOX_OLDEST_SECONDS = Gauge(
    "emporium_outbox_oldest_unsent_age_seconds", "Age of the oldest unsent outbox entry (at the last sweep)", ["actor"]
)
