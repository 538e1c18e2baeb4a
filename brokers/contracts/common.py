"""Value types shared by several message families."""

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

# Identifiers are opaque strings without MongoDB operators or path separators in them.
EntityId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Sku = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9-]{0,63}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
# A product priced without a currency is priced in this one.
DEFAULT_CURRENCY = "EUR"


def _not_a_boolean(value: object) -> object:
    # JSON true/false are not numbers, whatever Python's bool being an int says.
    if isinstance(value, bool):
        raise ValueError("a number is expected, not true or false")
    return value


MAX_CENTS = 100_000_000_00
MAX_QUANTITY = 1_000_000
Cents = Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=0, le=MAX_CENTS)]
Quantity = Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=1, le=MAX_QUANTITY)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Value(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Line(Value):
    # Strict: an order's line comes from a client's body, where "2" or 2.0 is a mistake to refuse.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    sku: Sku
    quantity: Quantity


class Shortage(Value):
    sku: Sku
    requested: Quantity
    available: int = Field(ge=0)
