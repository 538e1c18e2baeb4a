"""The AsyncAPI document: regenerated from the code it equals the committed copy, it is a valid
AsyncAPI 3.0 document, and it names every contract, handler, answer and emitted event."""

from __future__ import annotations

import json

import httpx
from faststream.specification.asyncapi.v3_0_0.schema import ApplicationSchema

from actors.registry import ACTORS
from brokers.contracts import OWNERS, events_of
from brokers.envelope import REGISTRY
from brokers.settings import Settings
from edge.app import create_app
from ops.asyncapi import COMMITTED, document, rendered

DOC = document()
CONTRACTS = {t: c for t, c in REGISTRY.items() if c.__module__.startswith("brokers.contracts.")}


def test_the_committed_document_is_the_generated_one():
    # On failure: run `emporium asyncapi write` and commit the diff (a contract changed).
    assert COMMITTED.read_text() == rendered()


def test_it_is_an_asyncapi_3_document():
    # FastStream's own AsyncAPI 3.0 models, as a structural check of every channel and operation.
    parsed = ApplicationSchema.model_validate(json.loads(rendered()))
    assert parsed.asyncapi == "3.0.0" and len(parsed.channels) == len(CONTRACTS)


def test_every_contract_has_a_channel_and_a_message_with_its_schema():
    for type_, contract in CONTRACTS.items():
        assert DOC["channels"][type_]["address"] == type_
        message = DOC["components"]["messages"][type_]
        assert message["name"] == contract.__name__
        assert message["payload"], type_
    assert "password" in json.dumps(DOC["components"]["schemas"]["RegisterUser"])


def test_the_contract_owners_are_the_actors():
    # brokers.contracts.OWNERS names the actors for code that must not import them (the edge).
    assert set(OWNERS) == set(ACTORS)


def test_every_handler_answer_and_emitted_event_is_an_operation():
    operations = DOC["operations"]
    for name, actor in ACTORS.items():
        for type_ in actor.handlers:
            assert operations[f"{name}.receives.{type_}"]["action"] == "receive"
        for type_ in actor.answers:
            answer = operations[f"{name}.answers.{type_}"]
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
