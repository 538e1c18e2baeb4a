"""Development controls of the simulators: the payment provider's failure knobs, and the carrier.

For operators only (the dev admin token), and never in production: the app leaves these routes out
there, so they answer 404 like any unknown path.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import Field

from brokers.contracts.common import EntityId
from brokers.contracts.shipping import AdvanceShipment
from brokers.settings import Settings
from edge.auth import admin
from edge.guard import Write, settings_of
from edge.problems import problem_responses
from edge.routes.orders import OrderId
from edge.routes.shared import Accepted, Body, Link, dispatch

router = APIRouter(prefix="/dev", tags=["dev"], dependencies=[Depends(admin)])
SIMULATOR_TIMEOUT_S = 5.0
_SHOWN_CHARS = 500
Rate = Annotated[float, Field(ge=0, le=1)]


class ProviderControls(Body):
    """The simulator's knobs; an unknown one is refused, like any unknown field."""

    decline_rate: Rate | None = Field(None, description="Share of charges declined, 0 to 1.")
    error_rate: Rate | None = Field(None, description="Share of calls failing with a server error, 0 to 1.")
    latency_ms: int | None = Field(None, ge=0, le=60_000, description="Delay added to every call.")
    decline_customers: list[EntityId] | None = Field(
        None, max_length=1_000, description="Customers whose every charge is declined."
    )


class ShipmentProgress(Body):
    to: Literal["dispatched", "delivered"]


class ShipmentAdvanceAccepted(Accepted):
    order_id: str


async def _simulator_control(
    settings: Settings, method: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Call the payment-provider simulator's /control and return its JSON."""
    url = f"{settings.emporium_payment_provider_url.rstrip('/')}/control"
    try:
        async with httpx.AsyncClient(timeout=SIMULATOR_TIMEOUT_S) as client:
            response = await client.request(method, url, json=body)
    except httpx.TimeoutException as exc:
        raise HTTPException(
            504, f"the payment-provider simulator at {url} did not answer within {SIMULATOR_TIMEOUT_S:g}s"
        ) from exc
    except httpx.TransportError as exc:
        raise HTTPException(
            503,
            f"the payment-provider simulator at {url} is unreachable ({type(exc).__name__}): is it running?",
        ) from exc
    said = response.text[:_SHOWN_CHARS]
    if response.status_code in (400, 422):
        raise HTTPException(422, f"the payment-provider simulator refused the controls: {said}")
    if not response.is_success:
        raise HTTPException(502, f"the payment-provider simulator answered {response.status_code}: {said}")
    try:
        controls = response.json()
    except ValueError as exc:
        raise HTTPException(502, f"the payment-provider simulator did not answer JSON: {said}") from exc
    if not isinstance(controls, dict):
        raise HTTPException(502, f"the payment-provider simulator did not answer a JSON object: {said}")
    return controls


@router.get(
    "/payment-provider",
    summary="The payment-provider simulator's controls (decline rate, error rate, latency, ...)",
    responses=problem_responses(401, 403, 502, 503, 504),
)
async def provider_controls(settings: Annotated[Settings, Depends(settings_of)]) -> dict[str, Any]:
    return await _simulator_control(settings, "GET")


@router.put(
    "/payment-provider",
    summary="Set the payment-provider simulator's controls (it resets what is left out to its defaults)",
    responses=problem_responses(401, 403, 422, 502, 503, 504),
)
async def set_provider_controls(
    controls: ProviderControls, settings: Annotated[Settings, Depends(settings_of)]
) -> dict[str, Any]:
    return await _simulator_control(settings, "PUT", controls.model_dump(exclude_none=True))


@router.post(
    "/shipments/{order_id}/advance",
    status_code=202,
    summary="Move an order's shipment on, as its carrier would report it",
    responses=problem_responses(401, 403, 422, 503),
)
async def advance_shipment(
    order_id: OrderId, body: ShipmentProgress, write: Write, link: Link, response: Response
) -> ShipmentAdvanceAccepted:
    command = AdvanceShipment(order_id=order_id, to=body.to)
    # Part of the order's saga: correlated by the order id, as everything that happens to it.
    in_saga = replace(write, correlation_id=order_id)
    envelope = await dispatch(link, command, in_saga, response, location=f"/orders/{order_id}/timeline")
    return ShipmentAdvanceAccepted.of(envelope, order_id=order_id)
