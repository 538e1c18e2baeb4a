"""The one way emporium connects to RabbitMQ and publishes contracts."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from aio_pika import IncomingMessage
from faststream.middlewares import AckPolicy
from faststream.opentelemetry import TelemetryMiddleware
from faststream.prometheus import PrometheusMiddleware
from faststream.rabbit import Channel, RabbitBroker, RabbitRouter
from faststream.rabbit.message import RabbitMessage
from faststream.rabbit.opentelemetry.provider import RabbitTelemetrySettingsProvider
from faststream.rabbit.prometheus.provider import RabbitMetricsSettingsProvider
from faststream.rabbit.response import RabbitPublishCommand
from faststream.rabbit.subscriber import RabbitSubscriber
from prometheus_client import REGISTRY, CollectorRegistry

from brokers import tracing
from brokers.envelope import Envelope, Message
from brokers.settings import Settings
from brokers.topology import exchange_for

REPLY_TO_PREFIX = "amq.rabbitmq.reply-to."


class _BoundedDestinations(RabbitMetricsSettingsProvider):
    """FastStream's metrics, with every direct reply-to address as one destination: each asker has
    its own, and a label value per asker would grow the metrics without bound."""

    def get_publish_destination_name_from_cmd(self, cmd: RabbitPublishCommand) -> str:
        if cmd.destination.startswith(REPLY_TO_PREFIX):
            return f"{cmd.exchange.name or 'default'}.{REPLY_TO_PREFIX.rstrip('.')}"
        return super().get_publish_destination_name_from_cmd(cmd)


def _metrics(
    registry: CollectorRegistry, app_name: str
) -> PrometheusMiddleware[IncomingMessage, RabbitPublishCommand]:
    return PrometheusMiddleware(
        settings_provider_factory=lambda _: _BoundedDestinations(), registry=registry, app_name=app_name
    )


class _NamedReplies(RabbitTelemetrySettingsProvider):
    """FastStream's span names, with a reply named after the query it answers (the runtime types a
    reply so: actors.runtime.consumers) instead of the asker's reply-to address, which is another
    for every asker's connection."""

    def get_publish_destination_name(self, cmd: RabbitPublishCommand) -> str:
        if cmd.destination.startswith(REPLY_TO_PREFIX):
            return cmd.message_options.get("message_type") or "reply"
        return super().get_publish_destination_name(cmd)


def _telemetry() -> list[TelemetryMiddleware[RabbitPublishCommand]]:
    """With tracing on, FastStream's telemetry of what a broker publishes: the W3C trace context goes
    in the headers, from a span of the service being served (brokers.tracing.serving). What its
    subscribers consume is traced by their own actor's router, as that actor (actors.runtime.host)."""
    if not tracing.enabled():
        return []
    return [
        TelemetryMiddleware[RabbitPublishCommand](
            # Called with the message consumed, None for a publish.
            settings_provider_factory=lambda message: _NamedReplies() if message is None else None,
            tracer_provider=tracing.SERVED,
        )
    ]


def connection_name(app_name: str, role: str) -> str:
    """How a connection shows in the RabbitMQ UI: the program, what the connection is for, and the
    process (host and pid: the replicas of one actor differ only there)."""
    return f"{app_name} {role} ({socket.gethostname()} pid {os.getpid()})"


def named_url(amqp_url: str, app_name: str, role: str) -> str:
    """``amqp_url`` naming its connection (see ``connection_name``).

    The name goes in the URL's query, where aiormq reads it (``name``): aio-pika and FastStream
    drop the ``client_properties`` given beside a URL, so a connection_name passed there never
    reaches RabbitMQ.
    """
    parts = urlsplit(amqp_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "name"]
    query.append(("name", connection_name(app_name, role)))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def make_broker(
    settings: Settings, *, app_name: str, role: str, registry: CollectorRegistry = REGISTRY
) -> RabbitBroker:
    """A broker whose publishes are confirmed and fail loudly when nothing can route them; its
    connection is named after ``app_name`` and ``role`` in the RabbitMQ UI."""
    return RabbitBroker(
        named_url(settings.rabbitmq_url, app_name, role),
        default_channel=Channel(
            prefetch_count=settings.emporium_prefetch,
            publisher_confirms=True,
            on_return_raises=True,
        ),
        app_id=app_name,
        middlewares=[_metrics(registry, app_name), *_telemetry()],
        # FastStream logs every message at INFO; that is ~15% of a hop. Keep it for debugging only.
        log_level=logging.DEBUG,
        # A logger of ours, without FastStream's own text handler: its lines are JSON (brokers.logs).
        logger=logging.getLogger("emporium.faststream"),
        graceful_timeout=15.0,
        # No FastDepends: emporium's subscribers take aio-pika's message as it is (subscribe_raw).
        # Resolving the message from FastStream's context runs a sync function on a worker thread
        # for every delivery, a thread round trip per message.
        apply_types=False,
    )


async def _as_received(message: RabbitMessage) -> IncomingMessage:
    # The runtime validates bodies itself; FastStream decoding JSON first would leave a malformed
    # body neither acked nor dead-lettered.
    return message.raw_message


def subscribe_raw(
    broker: RabbitBroker | RabbitRouter, queue: Any, handle: Callable[[IncomingMessage], Awaitable[None]]
) -> RabbitSubscriber:
    """Have ``handle`` take each message of ``queue`` as received; it acks, rejects or requeues it
    itself (FastStream neither replies nor acks)."""
    subscriber = broker.subscriber(queue, ack_policy=AckPolicy.MANUAL, no_reply=True, decoder=_as_received)
    subscriber(handle)
    return subscriber


async def consume_again(subscriber: RabbitSubscriber) -> None:
    """Cancel a started raw subscriber's consumer and consume again: behind the consumers waiting
    on a single-active-consumer queue, so the one waiting longest becomes active.

    Not ``stop()`` and ``start()``: FastStream's stop first marks the subscriber stopped and then
    cancels, so a message RabbitMQ delivers in between is dropped unsettled and stays unacked on the
    channel for as long as it is open. A cancel alone leaves the subscriber running: what is
    delivered before RabbitMQ's cancel-ok is handled as usual, and nothing after it comes. If the
    consume fails (RabbitMQ away), calling this again consumes without cancelling twice."""
    queue = subscriber._queue_obj  # FastStream <0.8 keeps the queue and consumer tag here
    assert queue is not None, "the subscriber is not started"
    if subscriber._consumer_tag is not None:
        await queue.cancel(subscriber._consumer_tag)
        subscriber._consumer_tag = None
    # subscribe_raw's subscribers settle every message themselves: no_ack=False.
    subscriber._consumer_tag = await queue.consume(
        subscriber.consume,  # type: ignore[arg-type]
        no_ack=False,
        arguments=subscriber.consume_args,
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
        broker,
        message.body(),
        exchange=exchange_for(message).name,
        routing_key=message.TYPE,
        envelope=envelope,
    )
