"""Request bodies: what the edge accepts is exactly what the contracts it builds accept."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from brokers.contracts.catalog import ChangePrice, CreateProduct, UpdateProduct
from brokers.contracts.inventory import Restock
from edge.routes.catalog import NewPrice, NewProduct, ProductChanges
from edge.routes.inventory import RestockRequest

PRODUCT = {"sku": "MUG-1", "name": "Mug", "category": "kitchen", "price_cents": 1299}


def test_a_new_product_has_defaults_and_builds_its_command() -> None:
    body = NewProduct.model_validate({**PRODUCT, "name": "  Mug  "})

    command = CreateProduct(product_id="p-1", **body.model_dump())

    assert (command.name, command.currency, command.description) == ("Mug", "EUR", "")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sku": "mug-1"}, "sku"),
        ({"sku": ""}, "sku"),
        ({"name": "   "}, "name"),  # blank once stripped, as the contract strips it
        ({"name": "n" * 201}, "name"),
        ({"category": ""}, "category"),
        ({"price_cents": -1}, "price_cents"),
        ({"price_cents": 1.5}, "price_cents"),
        ({"price_cents": 10_000_000_001}, "price_cents"),
        ({"currency": "eur"}, "currency"),
        ({"description": "d" * 4001}, "description"),
        ({"product_id": "chosen-by-client"}, "product_id"),  # the edge chooses ids
    ],
)
def test_a_bad_new_product_is_refused(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        NewProduct.model_validate({**PRODUCT, **change})

    assert [error["loc"] for error in refused.value.errors()] == [(field,)]


@pytest.mark.parametrize("missing", ["sku", "name", "category", "price_cents"])
def test_a_new_product_needs_its_fields(missing: str) -> None:
    with pytest.raises(ValidationError, match=missing):
        NewProduct.model_validate({k: v for k, v in PRODUCT.items() if k != missing})


def test_product_changes_build_an_update_of_only_what_is_given() -> None:
    body = ProductChanges.model_validate({"category": "mugs", "name": None})

    command = UpdateProduct(product_id="p-1", **body.model_dump(exclude_none=True))

    assert command.model_dump(exclude_none=True) == {"product_id": "p-1", "category": "mugs"}


@pytest.mark.parametrize("body", [{}, {"name": None, "description": None, "category": None}])
def test_product_changes_must_change_something(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="give at least one of name, description, category"):
        ProductChanges.model_validate(body)


@pytest.mark.parametrize("body", [{"name": ""}, {"price_cents": 5}, {"sku": "MUG-2"}])
def test_product_changes_refuse_bad_or_unknown_fields(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ProductChanges.model_validate(body)


def test_a_new_price_builds_its_command_and_refuses_anything_else() -> None:
    assert ChangePrice(product_id="p", price_cents=NewPrice(price_cents=0).price_cents).price_cents == 0
    for bad in ({"price_cents": -5}, {"price_cents": "cheap"}, {}, {"price_cents": 5, "currency": "USD"}):
        with pytest.raises(ValidationError):
            NewPrice.model_validate(bad)


@pytest.mark.parametrize("quantity", [1, 1_000_000])
def test_a_restock_takes_a_quantity_the_contract_takes(quantity: int) -> None:
    assert Restock(sku="MUG-1", quantity=RestockRequest(quantity=quantity).quantity).quantity == quantity


@pytest.mark.parametrize(
    "body", [{"quantity": 0}, {"quantity": 1_000_001}, {"quantity": -3}, {}, {"quantity": 1, "sku": "X"}]
)
def test_a_bad_restock_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RestockRequest.model_validate(body)
