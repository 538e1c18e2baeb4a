"""Analytics: projections over order and payment events, read in one query."""

from datetime import datetime

from pydantic import Field

from brokers.contracts.common import Sku, Value
from brokers.envelope import Query


class TopProduct(Value):
    sku: Sku
    units: int
    revenue_cents: int


class Percentiles(Value):
    count: int
    p50_s: float | None = None
    p90_s: float | None = None
    p99_s: float | None = None


class Stats(Value):
    orders_by_status: dict[str, int]
    cancellations_by_reason: dict[str, int]
    revenue_cents: int  # captured minus refunded
    refunded_cents: int
    average_order_value_cents: int | None = None
    top_products: list[TopProduct]
    saga_seconds: Percentiles  # placed -> confirmed
    as_of: datetime | None = None
    payment_failures_by_reason: dict[str, int] = Field(default_factory=dict)


class GetStats(Query, type="analytics.get_stats"):
    top: int = Field(10, ge=1, le=100)
