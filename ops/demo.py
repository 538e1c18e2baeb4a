"""A scripted customer journey against the running system, printed as it happens.

It uses only the public edge (plus the development simulator controls): creates two products,
restocks one, then places three orders and follows each one's saga over Server-Sent Events:
one that is delivered, one that is out of stock, and one whose payment is declined.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from rich.console import Console

ADMIN_HEADER = "X-Dev-Admin-Token"
CUSTOMER_HEADER = "X-Dev-Customer-Id"
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


class DemoFailed(RuntimeError):
    pass


@dataclass
class Demo:
    client: httpx.Client
    admin_token: str
    console: Console
    customer: str = "demo-" + uuid.uuid4().hex[:8]

    def _check(self, response: httpx.Response, what: str) -> dict:
        if response.status_code >= 400:
            raise DemoFailed(f"{what}: {response.status_code} {response.text}")
        return response.json() if response.content else {}

    def admin(self, method: str, path: str, body: dict) -> dict:
        response = self.client.request(method, path, json=body, headers={ADMIN_HEADER: self.admin_token})
        return self._check(response, f"{method} {path}")

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
        self.admin("POST", "/products", {"sku": mug, "name": "Blue mug", "category": "kitchen", "price_cents": 1299})
        self.admin("POST", "/products", {"sku": lamp, "name": "Desk lamp", "category": "home", "price_cents": 4500})
        self.console.print(f"[bold]catalog[/bold]: {mug} at 12.99, {lamp} at 45.00")
        self.wait_for_stock(mug, 0)
        self.admin("POST", f"/inventory/{mug}/restock", {"quantity": 5})
        self.wait_for_stock(mug, 5)
        self.console.print(f"[bold]inventory[/bold]: 5 x {mug} on hand, none of {lamp}")
        return mug, lamp

    def place(self, lines: list[dict]) -> str:
        response = self.client.post(
            "/orders",
            json={"lines": lines},
            headers={CUSTOMER_HEADER: self.customer, "Idempotency-Key": uuid.uuid4().hex},
        )
        return self._check(response, "POST /orders")["order_id"]

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
        headers = {CUSTOMER_HEADER: self.customer, "Accept": "text/event-stream"}
        with self.client.stream("GET", f"/orders/{order_id}/events", headers=headers, timeout=timeout_s) as stream:
            if stream.status_code != 200:
                raise DemoFailed(f"GET /orders/{order_id}/events: {stream.status_code} {stream.read().decode()}")
            event, data = None, []
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    data.append(line.removeprefix("data:").strip())
                elif line == "" and event is not None:
                    yield event, json.loads("\n".join(data) or "{}")
                    event, data = None, []


def run_demo(base_url: str, admin_token: str, console: Console, timeout_s: float = 120) -> list[tuple[str, str]]:
    outcomes = []
    with httpx.Client(base_url=base_url, timeout=10) as client:
        demo = Demo(client, admin_token, console)
        mug, lamp = demo.set_up_shop(uuid.uuid4().hex[:6].upper())
        demo.admin("PUT", "/dev/payment-provider", {"decline_rate": 0.0, "error_rate": 0.0, "latency_ms": 0})

        happy = demo.place([{"sku": mug, "quantity": 2}])
        outcomes.append(("delivered", demo.follow("A customer buys two mugs", happy, timeout_s)))

        short = demo.place([{"sku": lamp, "quantity": 1}])
        outcomes.append(("cancelled", demo.follow("A lamp nobody has in stock", short, timeout_s)))

        demo.admin("PUT", "/dev/payment-provider", {"decline_rate": 1.0, "error_rate": 0.0, "latency_ms": 0})
        try:
            declined = demo.place([{"sku": mug, "quantity": 1}])
            outcomes.append(("cancelled", demo.follow("A card that is declined", declined, timeout_s)))
        finally:
            demo.admin("PUT", "/dev/payment-provider", {"decline_rate": 0.0, "error_rate": 0.0, "latency_ms": 0})
    return outcomes
