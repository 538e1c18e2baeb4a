"""The one way emporium connects to RabbitMQ and publishes contracts."""

from __future__ import annotations

import logging

from faststream.rabbit import Channel, RabbitBroker
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from prometheus_client import REGISTRY, CollectorRegistry

from brokers.envelope import Envelope, Message
from brokers.settings import Settings
from brokers.topology import exchange_for


def make_broker(
    settings: Settings, *, app_name: str, registry: CollectorRegistry = REGISTRY
) -> RabbitBroker:
    """A broker whose publishes are confirmed and fail loudly when nothing can route them."""
    return RabbitBroker(
        settings.rabbitmq_url,
        default_channel=Channel(
            prefetch_count=settings.emporium_prefetch,
            publisher_confirms=True,
            on_return_raises=True,
        ),
        app_id=app_name,
        middlewares=[RabbitPrometheusMiddleware(registry=registry, app_name=app_name)],
        # FastStream logs every message at INFO; that is ~15% of a hop. Keep it for debugging only.
        log_level=logging.DEBUG,
        graceful_timeout=15.0,
    )


async def publish_body(
    broker: RabbitBroker, body: bytes, *, exchange: str, routing_key: str, envelope: Envelope
) -> None:
    """Publish persistently, with a confirm, failing if no queue is bound for it."""
    await broker.publish(
        body,
        exchange=exchange,
        routing_key=routing_key,
        persist=True,
        mandatory=True,
        content_type="application/json",
        **envelope.amqp(),
    )


async def publish(broker: RabbitBroker, message: Message, envelope: Envelope) -> None:
    """Publish a contract to the exchange of its kind, routed by its type."""
    await publish_body(
        broker, message.body(), exchange=exchange_for(message).name, routing_key=message.TYPE, envelope=envelope
    )
