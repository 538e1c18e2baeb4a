"""The AsyncAPI document of emporium's messaging, generated from the code.

Channels are of three sorts, all taken from ``brokers.topology``:

- one per message type: the routing key a contract of ``brokers.contracts`` is published with, on
  the exchange of its kind (commands, events, queries);
- one per exchange the runtime and RabbitMQ move messages through (moves, dead letters, unrouted
  events), its routing keys as a channel parameter;
- one per queue: every queue each actor declares (work, delay, reads, dead-letter) and
  ``unrouted-events``, with its arguments and bindings as ``x-arguments`` and ``x-bindings``. The
  queue names come from the settings' defaults, as in ``ops/rabbitmq/definitions.json`` (retry
  delays and timers name queues).

Operations say which actor sends each event (the events of its own contracts module), which
receives what from its work queue and answers which query from its reads queue (request/reply, on
the asker's reply-to address), and that each actor moves messages into its own delay and
dead-letter queues.

``edge/asyncapi.json`` is the committed copy: a test regenerates it, so a contract change is always
a visible diff, and another runs the official AsyncAPI CLI on it (``emporium asyncapi validate``).
The edge serves that copy at ``/asyncapi.json`` (the edge runs no actor code).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
from collections.abc import Iterable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer
from faststream.rabbit import ExchangeType, RabbitExchange
from pydantic import TypeAdapter

from actors.registry import ACTORS
from brokers.contracts import events_of
from brokers.deadletters import ATTEMPTS, ERROR, ORIGIN, REASON
from brokers.envelope import PARTITION_KEY_HEADER, REGISTRY, Kind, Message
from brokers.settings import Settings
from brokers.topology import (
    DEAD_LETTERS,
    EXCHANGES,
    MOVES,
    UNROUTED,
    UNROUTED_EVENTS,
    ActorTopology,
    ExchangeSpec,
    QueueSpec,
    exchange_for,
)
from ops.production import default_settings, topologies

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "edge" / "asyncapi.json"
# The official validator, installed from package-lock.json by `npm ci` (ops/dev.sh test does it).
VALIDATOR = ROOT / "node_modules" / ".bin" / "asyncapi"
# Analytics off, for good: the CLI reads this file and, with analytics disabled, never writes it.
VALIDATOR_ANALYTICS = Path(__file__).resolve().parent / "asyncapi-analytics.json"
VALIDATOR_TIMEOUT_S = 120
_SCHEMAS = "#/components/schemas/"
_AMQP = "0.3.0"  # the AMQP bindings version every binding object below follows

# What passes through each exchange that is not the exchange of a message kind (those have a
# channel per message type): each has a channel of its own. A new one in brokers.topology.EXCHANGES
# needs its sentence here (the document cannot be generated without it).
_MOVED_THROUGH = {
    MOVES.name: (
        "Messages the runtime moves itself, by the name of the queue they go to: to a delay queue "
        "(a retry, a timer), to a dead-letter queue, and a replayed dead letter back to its work "
        "queue. Each actor may publish here with its own queues' names only (topic permissions)."
    ),
    DEAD_LETTERS.name: (
        "What RabbitMQ dead-letters from a work queue (rejected, or past the delivery limit), by "
        "the name of the queue it left: each work queue's dead-letter queue is bound with it."
    ),
    UNROUTED.name: (
        "The alternate exchange of the events exchange: every event no queue was bound for, whatever "
        "its routing key (an event nobody subscribes to is legitimate, never unroutable)."
    ),
}

app = typer.Typer(help="The AsyncAPI document of the actors' messages.", no_args_is_help=True)


# --- what the document describes, from brokers.topology and actors.registry ----------------------


def _contracts() -> dict[str, type[Message]]:
    # Only the contracts of brokers.contracts: tests register message types of their own.
    return {t: c for t, c in sorted(REGISTRY.items()) if c.__module__.startswith("brokers.contracts.")}


def _queues(by_actor: dict[str, ActorTopology]) -> tuple[QueueSpec | ExchangeSpec, ...]:
    """Where messages are routed to: every queue, and the exchanges actors declare for themselves
    (a partitioned actor's consistent-hash exchange, bound to the exchanges of its types)."""
    return (
        *(spec for topology in by_actor.values() for spec in topology.routed_to),
        UNROUTED_EVENTS,
    )


def _bound(
    queues: Iterable[QueueSpec | ExchangeSpec], exchange: str, routing_key: str | None = None
) -> list[str]:
    """The queues bound to an exchange (with that routing key, when one is given)."""
    return [
        spec.name
        for spec in queues
        if any(ex == exchange and routing_key in (None, key) for ex, key in spec.bindings)
    ]


def _contracts_in(spec: QueueSpec | ExchangeSpec, contracts: Iterable[type[Message]]) -> list[type[Message]]:
    """The contracts a queue's bindings route into it."""
    return [c for c in contracts if (exchange_for(c).name, c.TYPE) in spec.bindings]


def _queue_contracts(
    by_actor: dict[str, ActorTopology], contracts: dict[str, type[Message]]
) -> dict[str, list[type[Message]]]:
    """What each queue can hold: delay and dead-letter queues hold what their work queue holds."""
    held: dict[str, list[type[Message]]] = {
        UNROUTED_EVENTS.name: [c for c in contracts.values() if c.KIND is Kind.EVENT]
    }
    for topology in by_actor.values():
        # A partitioned actor's queues hold what its exchange takes; another's, what its queue does.
        work = _contracts_in(topology.entry, contracts.values())
        held[topology.queries.name] = _contracts_in(topology.queries, contracts.values())
        for spec in topology.routed_to:
            if spec not in (topology.queries, topology.replicas):
                held[spec.name] = work
        if topology.replicas is not None:
            held[topology.replicas.name] = []
    return held


# --- wording ----------------------------------------------------------------------------------------


def _own_doc(contract: type[Message]) -> str | None:
    """The contract's own docstring, each paragraph on one line: never a base class's (which
    ``inspect.getdoc`` would inherit)."""
    own = contract.__dict__.get("__doc__")
    if not own:
        return None
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(own).split("\n\n"))


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text.split("\n\n")[0], maxsplit=1)[0]


def _names(items: Iterable[str], *, code: bool = True) -> str:
    """Names as "a, b and c": as code in CommonMark fields (descriptions), plain in summaries."""
    quoted = [f"`{item}`" if code else item for item in items]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1] if len(quoted) > 1 else "".join(quoted)


def _generated_summary(contract: type[Message], publisher: str | None, receivers: list[str]) -> str:
    """A sentence for a contract without a docstring of its own: who sends it, who takes it."""
    if contract.KIND is Kind.EVENT:
        taken = f"received by {_names(receivers, code=False)}" if receivers else "received by no actor"
        return f"The event {contract.TYPE}, published by {publisher}, {taken}."
    verb = "answered" if contract.KIND is Kind.QUERY else "handled"
    return f"The {contract.KIND.value} {contract.TYPE}, {verb} by {_names(receivers, code=False)}."


def _routing(exchange: RabbitExchange, routing_key: str, queues: tuple[QueueSpec | ExchangeSpec, ...]) -> str:
    """Where a publish with this routing key on this exchange ends up."""
    bound = _bound(queues, exchange.name, routing_key)
    where = f"Routing key `{routing_key}` on the {exchange.type.value} exchange `{exchange.name}`"
    if bound:
        return f"{where}, into {_names(bound)}."
    alternate = (exchange.arguments or {}).get("alternate-exchange")
    if alternate:
        return (
            f"{where}. No queue is bound for it: its alternate exchange `{alternate}` puts it "
            f"into {_names(_bound(queues, alternate))}."
        )
    return f"{where}. No queue is bound for it."


def _queue_description(spec: QueueSpec, topology: ActorTopology, settings: Settings) -> str:
    actor, work = topology.actor, topology.work_address
    settled = (
        "acked once their transaction committed. Rejected messages and those past the delivery "
        f"limit are dead-lettered into `{topology.dlq}`."
    )
    if spec in topology.work and topology.exchanges:
        return (
            f"A partition of {actor}'s work: the commands and events `{work}` sends here by their "
            f"partition key (header `{PARTITION_KEY_HEADER}`), taken by one consumer at a time "
            f"across replicas (single active consumer), {settled}"
        )
    if spec in topology.work:
        return f"The work queue of {actor}: the commands and events it handles, {settled}"
    if spec == topology.queries:
        return (
            f"The queries {actor} answers, apart from its work so that reads never wait behind it; "
            "each answer goes to the asker's reply-to address. Never dead-lettered: a query that "
            "expired has had its timeout answer already, and queries may carry secrets."
        )
    if spec == topology.replicas:
        return (
            f"Consumed by every {actor} replica and sent nothing (it holds no message): its consumer "
            f"count is how many replicas share {actor}'s partitions, each taking its share."
        )
    if spec in topology.dead_letters:
        return (
            f"Dead letters of `{work}`, each with its origin queue ({ORIGIN}), reason ({REASON}), "
            f"attempts ({ATTEMPTS}) and exception ({ERROR}) in its headers: inspect, replay or "
            "purge them with `emporium dlq` or the edge's /admin/dead-letters routes."
        )
    delay_ms = spec.arguments["x-message-ttl"]
    attempts = [str(i) for i, ms in enumerate(topology.retry_delays_ms, 1) if ms == delay_ms]
    timers = [t.name for t in ACTORS[actor].timers if t.delay_ms(settings) == delay_ms]
    purposes = [
        *([f"the retry after failed attempt {', '.join(attempts)}"] if attempts else []),
        *(f"the {name} timer" for name in timers),
    ]
    return (
        f"Holds each message {delay_ms} ms (its message TTL), then dead-letters it back into "
        f"`{work}`: {' and '.join(purposes)}."
    )


# --- document parts ---------------------------------------------------------------------------------


def _message_ref(type_: str) -> dict[str, str]:
    return {"$ref": f"#/components/messages/{type_}"}


def _in_channel(channel_id: str, contract: type[Message]) -> dict[str, str]:
    return {"$ref": f"#/channels/{channel_id}/messages/{contract.__name__}"}


def _channel_messages(contracts: Iterable[type[Message]]) -> dict[str, Any]:
    return {c.__name__: _message_ref(c.TYPE) for c in sorted(contracts, key=lambda c: c.TYPE)}


def _schema(model: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a model (its definitions hoisted into components), as a reference."""
    adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    schema = adapter.json_schema(ref_template=_SCHEMAS + "{model}")
    schemas.update(schema.pop("$defs", {}))
    if "title" in schema and schema.get("type") == "object":
        schemas[schema["title"]] = schema
        return {"$ref": _SCHEMAS + schema["title"]}
    return schema


def _envelope_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "The envelope: AMQP properties message_id, correlation_id and type, and these headers.",
        "properties": {
            "schema_version": {"type": "integer", "minimum": 1},
            "occurred_at": {"type": "string", "format": "date-time"},
            "causation_id": {
                "type": "string",
                "description": "The message this one was sent in reaction to.",
            },
        },
        "required": ["schema_version", "occurred_at"],
    }


def _message(contract: type[Message], summary: str, schemas: dict[str, Any]) -> dict[str, Any]:
    own = _own_doc(contract)
    return {
        "name": contract.__name__,
        "title": contract.TYPE,
        "summary": summary,
        **({"description": own} if own and own != summary else {}),
        "contentType": "application/json",
        "headers": {"$ref": _SCHEMAS + "Envelope"},
        "payload": _schema(contract, schemas),
        "correlationId": {
            "description": "The AMQP correlation_id property: the order or request this message belongs to.",
            "location": "$message.header#/correlation_id",
        },
        "bindings": {"amqp": {"messageType": contract.TYPE, "bindingVersion": _AMQP}},
        "x-schema-version": contract.VERSION,
    }


def _reply_message(contract: type[Message], answer: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    data_type = get_type_hints(answer)["return"]
    data = _schema(data_type, schemas) if data_type is not type(None) else {"type": "null"}
    return {
        "name": f"{contract.__name__}Reply",
        "title": f"{contract.TYPE}.reply",
        "summary": f"The answer to {contract.TYPE}: ok with data, or a problem (status, title, detail).",
        "contentType": "application/json",
        "payload": {
            "type": "object",
            "properties": {
                "ok": {"type": "boolean"},
                "data": data,
                "problem": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "integer"},
                        "title": {"type": "string"},
                        "detail": {"type": "string"},
                    },
                },
            },
            "required": ["ok"],
        },
        "correlationId": {
            "description": "The AMQP correlation_id property: the message_id of the query answered.",
            "location": "$message.header#/correlation_id",
        },
        "bindings": {"amqp": {"messageType": f"{contract.TYPE}.reply", "bindingVersion": _AMQP}},
    }


def _exchange_binding(exchange: RabbitExchange) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {
                "name": exchange.name,
                "type": exchange.type.value,
                "durable": exchange.durable,
                "autoDelete": exchange.auto_delete,
            },
            **({"x-arguments": exchange.arguments} if exchange.arguments else {}),
            "bindingVersion": _AMQP,
        }
    }


def _type_channel(contract: type[Message], queues: tuple[QueueSpec | ExchangeSpec, ...]) -> dict[str, Any]:
    exchange = exchange_for(contract)
    return {
        "address": contract.TYPE,
        "title": f"{contract.KIND.value} {contract.TYPE}",
        "description": _routing(exchange, contract.TYPE, queues),
        "messages": _channel_messages([contract]),
        "bindings": _exchange_binding(exchange),
    }


def _partitions_channel(
    spec: ExchangeSpec, topology: ActorTopology, held: list[type[Message]]
) -> dict[str, Any]:
    return {
        "address": spec.name,
        "title": f"exchange {spec.name}",
        "description": (
            f"{topology.actor}'s work, spread over its partition queues "
            f"{_names(q.name for q in topology.work)} by a consistent hash of each message's header "
            f"`{PARTITION_KEY_HEADER}`: the messages about one key always reach the same partition."
        ),
        "messages": _channel_messages(held),
        "bindings": {
            "amqp": {
                "is": "routingKey",
                # The binding's schema knows no plugin exchange types: "headers" (it routes on a
                # header), with the real type beside it.
                "exchange": {"name": spec.name, "type": "headers", "durable": True, "autoDelete": False},
                "x-exchange-type": spec.type.value,
                "x-arguments": spec.arguments,
                "x-bindings": [{"exchange": ex, "routingKey": key} for ex, key in spec.bindings],
                "bindingVersion": _AMQP,
            }
        },
    }


def _exchange_channel(
    exchange: RabbitExchange,
    queues: tuple[QueueSpec | ExchangeSpec, ...],
    held: dict[str, list[type[Message]]],
) -> dict[str, Any]:
    bound = _bound(queues, exchange.name)
    messages = _channel_messages({c for name in bound for c in held[name]})
    if exchange.type is ExchangeType.FANOUT:
        # Routing keys mean nothing to it: its address is whatever the publisher used.
        where: dict[str, Any] = {
            "address": None,
            "description": f"{_MOVED_THROUGH[exchange.name]} Bound: {_names(bound)}.",
        }
    else:
        keys = sorted({key for spec in queues for ex, key in spec.bindings if ex == exchange.name})
        where = {
            "address": "{queue}",
            "description": _MOVED_THROUGH[exchange.name],
            "parameters": {"queue": {"description": "A queue's name, the routing key.", "enum": keys}},
        }
    return {
        "title": f"exchange {exchange.name}",
        **where,
        "messages": messages,
        "bindings": _exchange_binding(exchange),
    }


def _queue_channel(spec: QueueSpec, description: str, held: list[type[Message]]) -> dict[str, Any]:
    queue = spec.rabbit_queue()
    return {
        "address": spec.name,
        "title": f"queue {spec.name}",
        "description": description,
        "messages": _channel_messages(held),
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": spec.name,
                    "durable": queue.durable,
                    "exclusive": queue.exclusive,
                    "autoDelete": queue.auto_delete,
                },
                "x-arguments": spec.arguments,
                "x-bindings": [{"exchange": ex, "routingKey": key} for ex, key in spec.bindings],
                "bindingVersion": _AMQP,
            }
        },
    }


def receive_operation_id(topology: ActorTopology, type_: str, queue: str) -> str:
    """One receive per type and work queue; a partitioned actor's are named by partition too."""
    return f"{topology.actor}.receives.{type_}" + (f".{queue}" if topology.exchanges else "")


def exchange_channel_id(exchange: RabbitExchange) -> str:
    return f"exchange.{exchange.name}"


def queue_channel_id(queue: str) -> str:
    return f"queue.{queue}"


# Every consumer acks by hand, once the handler's transaction committed (or the answer was sent).
_CONSUMED = {"amqp": {"ack": True, "bindingVersion": _AMQP}}
# What brokers.factory.publish_body and brokers.deadletters publish with: persistent, and
# mandatory (a message no queue takes is an error, not a silent drop); and ack, for consumers.
_PUBLISHED = {"amqp": {"deliveryMode": 2, "mandatory": True, "ack": True, "bindingVersion": _AMQP}}


def _operation(
    action: str, channel_id: str, contracts: list[type[Message]], actor: str, summary: str, **more: Any
) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel_id}"},
        "messages": [_in_channel(channel_id, c) for c in contracts],
        "summary": summary,
        "tags": [{"name": actor}],
        "bindings": _PUBLISHED if action == "send" else _CONSUMED,
        **more,
    }


def _operations_of(
    name: str,
    topology: ActorTopology,
    contracts: dict[str, type[Message]],
    held: dict[str, list[type[Message]]],
) -> dict[str, Any]:
    actor = ACTORS[name]
    reads = queue_channel_id(topology.queries.name)
    operations = {
        f"{name}.sends.{t}": _operation("send", t, [contracts[t]], name, f"{name} publishes {t}")
        for t in events_of(name)
    }
    for type_, (contract, _) in sorted(actor.handlers.items()):
        for work in topology.work:
            summary = f"{name} handles {type_} from its work queue {work.name}"
            operation = receive_operation_id(topology, type_, work.name)
            operations[operation] = _operation(
                "receive", queue_channel_id(work.name), [contract], name, summary
            )
    for type_, (contract, _) in sorted(actor.answers.items()):
        operations[f"{name}.answers.{type_}"] = _operation(
            "receive",
            reads,
            [contract],
            name,
            f"{name} answers {type_} from {topology.queries.name}, on the asker's reply-to address",
            reply={
                "address": {
                    "description": "The AMQP reply_to property (RabbitMQ direct reply-to).",
                    "location": "$message.header#/reply_to",
                },
                "messages": [_message_ref(f"{type_}.reply")],
            },
        )
    operations[f"{name}.moves"] = _operation(
        "send",
        exchange_channel_id(MOVES),
        held[topology.work_address],
        name,
        f"{name} moves a message of its work queue into one of its delay or dead-letter queues "
        "(a retry, a timer, a dead letter), routed by the queue's name",
    )
    return operations


@cache
def document() -> dict[str, Any]:
    """The whole AsyncAPI 3.0 document (built once per process)."""
    settings = default_settings()
    by_actor = topologies(settings)
    contracts = _contracts()
    queues = _queues(by_actor)
    held = _queue_contracts(by_actor, contracts)
    publisher = {t: name for name in ACTORS for t in events_of(name)}
    # The exchanges of a kind have one channel per message type; each other one has its own.
    of_a_kind = {exchange_for(c).name for c in contracts.values()}
    schemas: dict[str, Any] = {"Envelope": _envelope_headers()}

    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for type_, contract in contracts.items():
        own = _own_doc(contract)
        receivers = [name for name, a in ACTORS.items() if type_ in a.handlers or type_ in a.answers]
        summary = (
            _first_sentence(own) if own else _generated_summary(contract, publisher.get(type_), receivers)
        )
        messages[type_] = _message(contract, summary, schemas)
        channels[type_] = _type_channel(contract, queues)
    for exchange in EXCHANGES:
        if exchange.name not in of_a_kind:
            channels[exchange_channel_id(exchange)] = _exchange_channel(exchange, queues, held)
    for topology in by_actor.values():
        for exchange_spec in topology.exchanges:
            channels[exchange_channel_id(exchange_spec.rabbit_exchange())] = _partitions_channel(
                exchange_spec, topology, held[exchange_spec.name]
            )
        for spec in topology.queues:
            description = _queue_description(spec, topology, settings)
            channels[queue_channel_id(spec.name)] = _queue_channel(spec, description, held[spec.name])
    channels[queue_channel_id(UNROUTED_EVENTS.name)] = _queue_channel(
        UNROUTED_EVENTS,
        f"Events no queue was bound for, from `{UNROUTED.name}`: parked for operators to see, within "
        "the message TTL and length limit of its arguments.",
        held[UNROUTED_EVENTS.name],
    )

    operations: dict[str, Any] = {}
    for name, topology in sorted(by_actor.items()):
        operations.update(_operations_of(name, topology, contracts, held))
        for type_, (contract, answer) in ACTORS[name].answers.items():
            messages[f"{type_}.reply"] = _reply_message(contract, answer, schemas)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "emporium actors",
            "version": _version(),
            "description": (
                "The messages the actors of emporium exchange over RabbitMQ: commands (one owner), "
                "events (any subscriber) and queries (request/reply), and every exchange and queue "
                "they pass through. Generated from the contracts and the topology."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "pathname": "/",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": dict(sorted(messages.items())), "schemas": dict(sorted(schemas.items()))},
    }


def _version() -> str:
    try:
        return version("emporium")
    except PackageNotFoundError:
        return "0+unknown"


def rendered() -> str:
    return json.dumps(document(), indent=2, sort_keys=False) + "\n"


@app.command("write")
def write_command(
    check: Annotated[
        bool, typer.Option(help="Change nothing; exit 1 if the committed copy is stale.")
    ] = False,
) -> None:
    """Write edge/asyncapi.json from the code (or check it is up to date)."""
    current = COMMITTED.read_text() if COMMITTED.exists() else ""
    if current == rendered():
        typer.echo(f"{COMMITTED.name} is up to date")
        return
    if check:
        typer.echo(f"{COMMITTED} is stale: run `emporium asyncapi write`", err=True)
        raise typer.Exit(1)
    COMMITTED.write_text(rendered())
    typer.echo(f"wrote {COMMITTED}")


class ValidatorMissing(FileNotFoundError):
    """The AsyncAPI CLI is not installed in node_modules."""


def validate(path: Path = COMMITTED) -> subprocess.CompletedProcess[str]:
    """Run the official AsyncAPI CLI on a document; a warning fails it as an error would.

    The CLI's analytics and its update check would each reach the internet: both are off.
    """
    if not VALIDATOR.exists():
        raise ValidatorMissing(
            f"{VALIDATOR.relative_to(ROOT)} is missing: run ops/dev.sh test (it runs `npm ci`)"
        )
    env = {
        **os.environ,
        "ASYNCAPI_METRICS_CONFIG_PATH": str(VALIDATOR_ANALYTICS),
        "ASYNCAPI_SKIP_NEW_VERSION_CHECK": "true",
    }
    return subprocess.run(
        [str(VALIDATOR), "validate", str(path), "--fail-severity", "warn"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=VALIDATOR_TIMEOUT_S,
        check=False,
    )


@app.command("validate")
def validate_command(
    path: Annotated[Path, typer.Argument(help="The document to validate.")] = COMMITTED,
) -> None:
    """Validate a document (edge/asyncapi.json by default) with the official AsyncAPI CLI."""
    try:
        result = validate(path)
    except ValidatorMissing as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    typer.echo(result.stdout + result.stderr, nl=False)
    raise typer.Exit(result.returncode)
