from datetime import UTC, datetime, timedelta

import pytest

from actors.catalog import domain
from actors.runtime.errors import RuleViolation
from brokers.contracts.catalog import ChangePrice, CreateProduct, UpdateProduct

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
CREATE = CreateProduct(product_id="p1", sku="MUG-1", name="Mug", category="kitchen", price_cents=1200)


def test_create_product_emits_product_created():
    product, created = domain.create_product(CREATE, sku_taken_by=None, now=T0)
    assert product.sku == "MUG-1" and product.price_cents == 1200 and product.currency == "EUR"
    assert created.product_id == "p1" and created.price_cents == 1200


def test_a_sku_belongs_to_one_product():
    with pytest.raises(RuleViolation, match="MUG-1 already belongs to product p9"):
        domain.create_product(CREATE, sku_taken_by="p9", now=T0)


def test_update_changes_only_given_fields():
    product, _ = domain.create_product(CREATE, sku_taken_by=None, now=T0)
    updated = domain.update_product(product, UpdateProduct(product_id="p1", name="Big mug"), now=T1)
    assert (updated.name, updated.category, updated.updated_at) == ("Big mug", "kitchen", T1)


def test_update_without_a_change_changes_nothing():
    product, _ = domain.create_product(CREATE, sku_taken_by=None, now=T0)
    assert domain.update_product(product, UpdateProduct(product_id="p1", name="Mug"), now=T1) is None


def test_price_change_records_the_old_price():
    product, _ = domain.create_product(CREATE, sku_taken_by=None, now=T0)
    changed, event = domain.change_price(product, ChangePrice(product_id="p1", price_cents=900), now=T1)
    assert changed.price_cents == 900
    assert (event.old_price_cents, event.price_cents, event.sku) == (1200, 900, "MUG-1")


def test_same_price_emits_nothing():
    product, _ = domain.create_product(CREATE, sku_taken_by=None, now=T0)
    assert domain.change_price(product, ChangePrice(product_id="p1", price_cents=1200), now=T1) == (
        product,
        None,
    )
