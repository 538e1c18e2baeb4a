"""`emporium bench`: what the actor runtime costs, one hop at a time (`hop`) and whole orders (`saga`).

`emporium bench hop`: what one hop through the actor runtime costs next to plain aio-pika. The hops
do the same broker work (persistent messages, publisher confirms, ``mandatory``, a quorum queue with
the arguments of an actor's work queue, the same prefetch, one ack per message):

1. raw aio-pika: a channel publishes, a consumer callback acks;
2. FastStream: the broker factory and subscription style the runtime uses, a handler that only acks;
3. actor runtime, one message per transaction: an ActorHost running a do-nothing actor, so each
   message also goes through envelope validation and a MongoDB transaction (inbox insert) before its
   ack;
4. actor runtime with group commit: the same, EMPORIUM_BATCH_SIZE messages at most per transaction.

(2) against (1) is the price of FastStream; (3) and (4) against (2) are what the runtime adds, most
of it the database. Beside them, the database alone (the same work per message, no broker): one
message per transaction and a batch per transaction, which is the ceiling the runtime hops approach.
The runtime times its transactions itself (emporium_transaction_duration_seconds).

A fixed number of messages is kept in flight (published, not yet consumed), so latencies measure a
hop, not a backlog. Latency runs from just before the publish call to just after the consumer's ack
(for the runtime hop: after commit and ack), on one process clock.

`emporium bench saga`: every actor and the payment-provider simulator in this process; orders are
placed (as the edge would) and followed to their end, a fixed number in flight. It reports what a
delivered order costs: the messages RabbitMQ took in and handed out, the MongoDB commands (round trips)
the actors made, and how long orders took from placed to confirmed and to delivered.

`emporium bench edge`: POST /orders at the edge next to a bare FastAPI app on the same uvicorn.

Each run has a vhost and databases of its own, created for it and deleted afterwards.
"""

from ops.bench import edge, hop, hot_sku, report, saga  # noqa: E402,F401  (their commands register on app)
from ops.bench.common import app  # noqa: E402

__all__ = ["app"]
