"""The AsyncAPI document: regenerated from the code it equals the committed copy, it is an AsyncAPI
3.0 document (the official validator: test_asyncapi_validator.py), it names every contract, handler,
answer and emitted event, every exchange and every queue, and its summaries are the contracts' own."""

from __future__ import annotations

import inspect
import json

import httpx
from faststream.specification.asyncapi.v3_0_0.schema import ApplicationSchema

from actors.registry import ACTORS
from brokers.contracts import OWNERS, events_of
from brokers.envelope import REGISTRY, Command, Event, Message, Query
from brokers.settings import Settings
from brokers.topology import EXCHANGES, UNROUTED_EVENTS
from edge.app import create_app
from ops.asyncapi import COMMITTED, document, queue_channel_id, receive_operation_id, rendered
from ops.production import default_settings, topologies

DOC = document()
CONTRACTS = {t: c for t, c in REGISTRY.items() if c.__module__.startswith("brokers.contracts.")}
TOPOLOGIES = topologies(default_settings())
QUEUES = [UNROUTED_EVENTS, *(spec for topology in TOPOLOGIES.values() for spec in topology.queues)]


def test_the_committed_document_is_the_generated_one():
    # On failure: run `emporium asyncapi write` and commit the diff (a contract changed).
    assert COMMITTED.read_text() == rendered()


def test_it_is_an_asyncapi_3_document():
    # FastStream's own AsyncAPI 3.0 models, as a structural check of every channel and operation.
    parsed = ApplicationSchema.model_validate(json.loads(rendered()))
    assert parsed.asyncapi == "3.0.0" and len(parsed.channels) == len(DOC["channels"])


def test_every_contract_has_a_channel_and_a_message_with_its_schema():
    for type_, contract in CONTRACTS.items():
        assert DOC["channels"][type_]["address"] == type_
        message = DOC["components"]["messages"][type_]
        assert message["name"] == contract.__name__
        assert message["payload"], type_
    assert "password" in json.dumps(DOC["components"]["schemas"]["RegisterUser"])


def test_every_exchange_and_every_queue_has_a_channel():
    bindings = [channel["bindings"]["amqp"] for channel in DOC["channels"].values()]
    exchanges = {b["exchange"]["name"] for b in bindings if b["is"] == "routingKey"}
    own = {exchange.name for topology in TOPOLOGIES.values() for exchange in topology.exchanges}
    assert own == {"inventory.partitions"}
    assert exchanges == {exchange.name for exchange in EXCHANGES} | own
    queues = {b["queue"]["name"]: b for b in bindings if b["is"] == "queue"}
    assert set(queues) == {spec.name for spec in QUEUES}
    for spec in QUEUES:
        assert queues[spec.name]["x-arguments"] == spec.arguments
        assert [(b["exchange"], b["routingKey"]) for b in queues[spec.name]["x-bindings"]] == list(
            spec.bindings
        )


def test_summaries_are_the_contracts_own_never_a_base_class_docstring():
    base_docs = {inspect.getdoc(base) for base in (Message, Command, Event, Query)}
    for type_, contract in CONTRACTS.items():
        summary = DOC["components"]["messages"][type_]["summary"]
        own = contract.__dict__.get("__doc__")
        assert not any(summary in doc for doc in base_docs), type_
        # Either the first sentence of its own docstring, or a generated sentence naming it.
        assert (own and summary.split()[:3] == own.split()[:3]) or type_ in summary, (type_, summary)
    assert "querys" not in rendered()


def test_the_contract_owners_are_the_actors():
    # brokers.contracts.OWNERS names the actors for code that must not import them (the edge).
    assert set(OWNERS) == set(ACTORS)


def test_every_handler_answer_and_emitted_event_is_an_operation():
    operations = DOC["operations"]
    for name, actor in ACTORS.items():
        topology = TOPOLOGIES[name]
        for type_ in actor.handlers:
            for work in topology.work:
                receive = operations[receive_operation_id(topology, type_, work.name)]
                assert receive["action"] == "receive"
                assert receive["channel"] == {"$ref": f"#/channels/{queue_channel_id(work.name)}"}
        for type_ in actor.answers:
            answer = operations[f"{name}.answers.{type_}"]
            assert answer["channel"] == {"$ref": f"#/channels/{queue_channel_id(topology.queries.name)}"}
            assert answer["reply"]["messages"] == [{"$ref": f"#/components/messages/{type_}.reply"}]
        for type_ in events_of(name):
            assert operations[f"{name}.sends.{type_}"]["action"] == "send"


def test_every_reference_resolves():
    def targets(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from targets(value)
        elif isinstance(node, list):
            for value in node:
                yield from targets(value)

    for ref in set(targets(DOC)):
        node = DOC
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]


async def test_the_edge_serves_it():
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(create_app(Settings())), base_url="http://e"
    ) as c:
        response = await c.get("/asyncapi.json")
    assert response.status_code == 200 and response.json() == json.loads(rendered())
