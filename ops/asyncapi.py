"""The AsyncAPI document of emporium's messaging, generated from the code.

Every channel is an exchange and routing key (a message type) of ``brokers.topology``; every message
is a contract of ``brokers.contracts`` with its JSON schema and the envelope headers; every
operation says which actor receives what (handlers and query answers of ``actors.registry``) and
which actor sends each event (the events defined in its own contracts module). Queries are
request/reply operations answered on the asker's reply-to address.

``edge/asyncapi.json`` is the committed copy: a test regenerates it, so a contract change is always
a visible diff. The edge serves that copy at ``/asyncapi.json`` (the edge runs no actor code).
"""

from __future__ import annotations

import inspect
import json
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer
from pydantic import TypeAdapter

from actors.registry import ACTORS
from brokers.contracts import events_of
from brokers.envelope import REGISTRY, Kind, Message
from brokers.topology import exchange_for

COMMITTED = Path(__file__).resolve().parent.parent / "edge" / "asyncapi.json"
_SCHEMAS = "#/components/schemas/"
_KIND_OF_EXCHANGE = {Kind.COMMAND: "direct", Kind.EVENT: "topic", Kind.QUERY: "direct"}

app = typer.Typer(help="The AsyncAPI document of the actors' messages.", no_args_is_help=True)


def _channel_id(contract: type[Message]) -> str:
    return contract.TYPE


def _message_ref(type_: str) -> dict[str, str]:
    return {"$ref": f"#/components/messages/{type_}"}


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


def _message(contract: type[Message], schemas: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": contract.__name__,
        "title": contract.TYPE,
        "summary": (inspect.getdoc(contract) or contract.__name__).splitlines()[0],
        "contentType": "application/json",
        "headers": {"$ref": _SCHEMAS + "Envelope"},
        "payload": _schema(contract, schemas),
        "correlationId": {"location": "$message.header#/correlation_id"},
        "bindings": {"amqp": {"messageType": contract.TYPE, "deliveryMode": 2}},
        "x-schema-version": contract.VERSION,
    }


def _channel(contract: type[Message]) -> dict[str, Any]:
    exchange = exchange_for(contract)
    return {
        "address": contract.TYPE,
        "description": f"{contract.KIND.value}s of type {contract.TYPE} on exchange {exchange.name}",
        "messages": {contract.__name__: _message_ref(contract.TYPE)},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {
                    "name": exchange.name,
                    "type": _KIND_OF_EXCHANGE[contract.KIND],
                    "durable": True,
                    "autoDelete": False,
                },
            }
        },
    }


def _answer_type(answer: Any) -> Any:
    return get_type_hints(answer)["return"]


def _operation(action: str, contract: type[Message], actor: str, **more: Any) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{_channel_id(contract)}"},
        "messages": [{"$ref": f"#/channels/{_channel_id(contract)}/messages/{contract.__name__}"}],
        "summary": f"{actor} {'receives' if action == 'receive' else 'sends'} {contract.TYPE}",
        "tags": [{"name": actor}],
        **more,
    }


@cache
def document() -> dict[str, Any]:
    """The whole AsyncAPI 3.0 document (built once per process)."""
    schemas: dict[str, Any] = {"Envelope": _envelope_headers()}
    # Only the contracts of brokers.contracts: tests register message types of their own.
    contracts = {t: c for t, c in sorted(REGISTRY.items()) if c.__module__.startswith("brokers.contracts.")}
    messages = {type_: _message(contract, schemas) for type_, contract in contracts.items()}
    channels = {_channel_id(contract): _channel(contract) for contract in contracts.values()}
    operations: dict[str, Any] = {}
    for name, actor in sorted(ACTORS.items()):
        for type_ in events_of(name):
            operations[f"{name}.sends.{type_}"] = _operation("send", contracts[type_], name)
        for type_, (contract, _) in sorted(actor.handlers.items()):
            operations[f"{name}.receives.{type_}"] = _operation("receive", contract, name)
        for type_, (contract, answer) in sorted(actor.answers.items()):
            reply_type = _answer_type(answer)
            reply = f"{type_}.reply"
            messages[reply] = {
                "name": f"{contract.__name__}Reply",
                "contentType": "application/json",
                "summary": f"The answer to {type_}: ok with data, or a problem (status, title, detail).",
                "payload": _reply_schema(reply_type, schemas),
            }
            operations[f"{name}.answers.{type_}"] = _operation(
                "receive",
                contract,
                name,
                reply={
                    "address": {"location": "$message.header#/reply_to"},
                    "messages": [_message_ref(reply)],
                },
            )
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "emporium actors",
            "version": _version(),
            "description": (
                "The messages the actors of emporium exchange over RabbitMQ: commands (one owner), "
                "events (any subscriber) and queries (request/reply). Generated from the contracts."
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
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }


def _reply_schema(data_type: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    data = _schema(data_type, schemas) if data_type is not type(None) else {"type": "null"}
    return {
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
