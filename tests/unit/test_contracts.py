import pytest
from pydantic import ValidationError

from brokers.contracts.catalog import CreateProduct, ProductCreated
from brokers.contracts.common import Line
from brokers.contracts.inventory import Restock
from brokers.envelope import REGISTRY, Envelope, InvalidMessage, Kind


def test_every_contract_has_a_unique_type_and_kind():
    assert len(REGISTRY) == len(set(REGISTRY))
    assert REGISTRY["product.created"] is ProductCreated
    assert {c.KIND for c in REGISTRY.values()} == {Kind.COMMAND, Kind.EVENT, Kind.QUERY}


def test_declaring_a_type_twice_is_refused():
    with pytest.raises(TypeError, match="declared twice"):

        class Again(ProductCreated, type="product.created"):
            pass


@pytest.mark.parametrize(
    "body",
    [
        b'{"sku": "A-1", "quantity": 0}',
        b'{"sku": "a lower", "quantity": 1}',
        b'{"sku": {"$gt": ""}, "quantity": 1}',
        b'{"sku": "A-1", "quantity": 1, "extra": true}',
        b"not json",
    ],
)
def test_invalid_bodies_are_refused_with_the_reason(body):
    with pytest.raises(InvalidMessage, match="not a valid inventory.restock"):
        Restock.parse(body)


def test_ids_cannot_carry_mongodb_operators_or_paths():
    for bad in ["$where", "a.b", "", "x" * 65]:
        with pytest.raises(ValueError):
            CreateProduct(product_id=bad, sku="A", name="n", category="c", price_cents=1)


def test_envelope_round_trips_through_amqp_properties():
    command = Restock(sku="A-1", quantity=2)
    first = Envelope.first(command, correlation_id="order-1")
    props = first.amqp()
    again = Envelope.from_amqp(
        message_id=props["message_id"],
        correlation_id=props["correlation_id"],
        type=props["message_type"],
        headers=props["headers"],
    )
    assert again == first
    child = first.caused(command)
    assert (child.correlation_id, child.causation_id) == ("order-1", first.message_id)
    assert child.message_id != first.message_id


def test_envelope_without_identity_is_invalid():
    with pytest.raises(InvalidMessage, match="envelope is invalid"):
        Envelope.from_amqp(message_id=None, correlation_id="c", type="inventory.restock", headers={})


def test_unsupported_schema_version_is_refused():
    envelope = Envelope(correlation_id="c", type="inventory.restock", schema_version=2)
    with pytest.raises(InvalidMessage, match="schema version 2"):
        envelope.expect(Restock)


@pytest.mark.parametrize("flag", [True, False])
def test_true_and_false_are_not_quantities_or_prices(flag):
    with pytest.raises(ValidationError, match="not true or false"):
        Line(sku="MUG-1", quantity=flag)
    with pytest.raises(ValidationError, match="not true or false"):
        Restock.model_validate_json(f'{{"sku": "MUG-1", "quantity": {str(flag).lower()}}}')
