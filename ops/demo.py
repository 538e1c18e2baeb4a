"""A scripted customer journey against the running system, printed as it happens.

It signs in the way people do: an administrator made with the operators' tool (`emporium admin
create`, over RabbitMQ) with a password generated for this run and never shown, and a customer who
registers through the edge. Then, through the public edge only (plus the development simulator
controls), it creates two products, restocks one, places three orders and follows each one's saga
over Server-Sent Events: one that is delivered, one that is out of stock, and one whose payment is
declined.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from rich.console import Console

from brokers.settings import Settings
from ops.accounts import Account, make_admin
from ops.load import retry_after_s
from ops.sse import SseReader

STEP = {
    "order.placed": "placed",
    "stock.reserved": "reserved",
    "stock.rejected": "out of stock",
    "payment.captured": "paid",
    "payment.failed": "payment failed",
    "order.confirmed": "confirmed",
    "shipment.scheduled": "shipment scheduled",
    "shipment.dispatched": "dispatched",
    "stock.committed": "stock committed",
    "shipment.delivered": "parcel delivered",
    "snapshot": "following",
    "order.shipped": "shipped",
    "order.delivered": "delivered",
    "order.cancelled": "cancelled",
    "stock.released": "stock released",
    "payment.refunded": "refunded",
    "notification.sent": "customer notified",
}


# A registration identity has not shown yet (202) is retried this long, at this pace: the login
# budget of one address is small (EMPORIUM_LOGIN_RATE_LIMIT), so the pace is slow.
LOG_IN_WAIT_S = 10.0
LOG_IN_RETRY_S = 2.0
NO_TROUBLE = {"decline_rate": 0.0, "error_rate": 0.0, "latency_ms": 0}


class DemoFailed(RuntimeError):
    pass


def _checked(response: httpx.Response, what: str) -> dict:
    if response.status_code >= 400:
        raise DemoFailed(f"{what}: {response.status_code} {response.text}")
    return response.json() if response.content else {}


class WaitsOutRefusals(httpx.HTTPTransport):
    """Waits out a 429 as its Retry-After says, then sends the request again: the login budget of
    one address is small (EMPORIUM_LOGIN_RATE_LIMIT), and a demo run again within a minute spends it."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self._console = console

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        while (response := super().handle_request(request)).status_code == 429:
            pause_s = retry_after_s(response)
            if pause_s is None:
                return response
            response.close()
            self._console.print(
                f"[dim]{request.url.path}: the edge's budget is spent, waiting {pause_s:.0f} s[/dim]"
            )
            time.sleep(pause_s)
        return response


def _log_in(client: httpx.Client, account: Account, *, wait_s: float = 0.0) -> dict[str, str]:
    """The headers that sign ``account`` in; a 401 is retried for ``wait_s`` (a registration on its way)."""
    deadline = time.monotonic() + wait_s
    credentials = {"email": account.email, "password": account.password}
    while (response := client.post("/auth/login", json=credentials)).status_code == 401:
        if time.monotonic() + LOG_IN_RETRY_S > deadline:
            break
        time.sleep(LOG_IN_RETRY_S)
    token = _checked(response, f"logging in as {account.email}")["access_token"]
    return {"Authorization": f"Bearer {token}"}


def sign_in_admin(client: httpx.Client, settings: Settings) -> tuple[str, dict[str, str]]:
    """An administrator made as operators make one (``create_admin`` waits until identity has it)."""
    account = Account.new("demo-admin")
    asyncio.run(make_admin(settings, account, name="Demo administrator"))
    return account.email, _log_in(client, account)


def sign_up_customer(client: httpx.Client) -> tuple[str, dict[str, str]]:
    """A customer registered through the edge, as anyone can."""
    account = Account.new("demo-customer")
    registration = {"email": account.email, "name": "Demo customer", "password": account.password}
    response = client.post("/auth/register", json=registration)
    _checked(response, "POST /auth/register")
    # 202: identity has not shown the account yet, so the first logins may be refused.
    wait_s = LOG_IN_WAIT_S if response.status_code == 202 else 0
    return account.email, _log_in(client, account, wait_s=wait_s)


@dataclass
class Demo:
    client: httpx.Client
    console: Console
    admin_headers: dict[str, str]
    customer_headers: dict[str, str]

    def admin(self, method: str, path: str, body: dict) -> dict:
        response = self.client.request(method, path, json=body, headers=self.admin_headers)
        return _checked(response, f"{method} {path}")

    def wait_for_stock(self, sku: str, on_hand: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            response = self.client.get(f"/inventory/{sku}")
            if response.status_code == 200 and response.json()["on_hand"] >= on_hand:
                return
            time.sleep(0.2)
        raise DemoFailed(f"stock of {sku} did not reach {on_hand} within {timeout_s:g}s")

    def set_up_shop(self, run: str) -> tuple[str, str]:
        mug, lamp = f"MUG-{run}", f"LAMP-{run}"
        for product in (
            {"sku": mug, "name": "Blue mug", "category": "kitchen", "price_cents": 1299},
            {"sku": lamp, "name": "Desk lamp", "category": "home", "price_cents": 4500},
        ):
            self.admin("POST", "/products", product)
        self.console.print(f"[bold]catalog[/bold]: {mug} at 12.99, {lamp} at 45.00")
        self.wait_for_stock(mug, 0)
        self.admin("POST", f"/inventory/{mug}/restock", {"quantity": 5})
        self.wait_for_stock(mug, 5)
        self.console.print(f"[bold]inventory[/bold]: 5 x {mug} on hand, none of {lamp}")
        return mug, lamp

    def place(self, lines: list[dict]) -> str:
        headers = {**self.customer_headers, "Idempotency-Key": uuid.uuid4().hex}
        response = self.client.post("/orders", json={"lines": lines}, headers=headers)
        return _checked(response, "POST /orders")["order_id"]

    def follow(self, title: str, order_id: str, timeout_s: float) -> str:
        """Print the order's saga as its events arrive; return its last order status."""
        self.console.rule(f"{title}: order {order_id[:8]}")
        started, status = time.monotonic(), "placed"
        for event, data in self._events(order_id, timeout_s):
            elapsed = time.monotonic() - started
            detail = data.get("reason") or data.get("tracking_number") or data.get("template") or ""
            self.console.print(f"  {elapsed:6.2f}s  {STEP.get(event, event):<20} [dim]{event} {detail}[/dim]")
            if event == "snapshot":  # where the order stood when the stream started
                status = data.get("status", status)
            elif event.startswith("order."):
                status = event.removeprefix("order.")
        return status

    def _events(self, order_id: str, timeout_s: float) -> Iterator[tuple[str, dict]]:
        path = f"/orders/{order_id}/events"
        headers = {**self.customer_headers, "Accept": "text/event-stream"}
        with self.client.stream("GET", path, headers=headers, timeout=timeout_s) as stream:
            if stream.status_code != 200:
                raise DemoFailed(f"GET {path}: {stream.status_code} {stream.read().decode()}")
            reader = SseReader()
            for line in stream.iter_lines():
                event = reader.feed(line)
                if event is not None and event.event is not None:
                    yield event.event, event.json()


def run_demo(
    base_url: str, settings: Settings, console: Console, timeout_s: float = 120
) -> list[tuple[str, str]]:
    """Run the journey against the edge at ``base_url`` (``settings`` reach its RabbitMQ)."""
    outcomes = []
    with httpx.Client(base_url=base_url, timeout=10, transport=WaitsOutRefusals(console)) as client:
        admin_email, admin_headers = sign_in_admin(client, settings)
        customer_email, customer_headers = sign_up_customer(client)
        console.print(f"[bold]identity[/bold]: administrator {admin_email}, customer {customer_email}")
        demo = Demo(client, console, admin_headers, customer_headers)
        mug, lamp = demo.set_up_shop(uuid.uuid4().hex[:6].upper())
        demo.admin("PUT", "/dev/payment-provider", NO_TROUBLE)

        happy = demo.place([{"sku": mug, "quantity": 2}])
        outcomes.append(("delivered", demo.follow("A customer buys two mugs", happy, timeout_s)))

        short = demo.place([{"sku": lamp, "quantity": 1}])
        outcomes.append(("cancelled", demo.follow("A lamp nobody has in stock", short, timeout_s)))

        demo.admin("PUT", "/dev/payment-provider", {**NO_TROUBLE, "decline_rate": 1.0})
        try:
            declined = demo.place([{"sku": mug, "quantity": 1}])
            outcomes.append(("cancelled", demo.follow("A card that is declined", declined, timeout_s)))
        finally:
            demo.admin("PUT", "/dev/payment-provider", NO_TROUBLE)
    return outcomes
