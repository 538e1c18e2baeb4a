"""Every RabbitMQ connection of an actor host and of the edge has a name in the management UI that
says which program opened it, for what, and in which process."""

from __future__ import annotations

import os
import socket
from urllib.parse import quote

import httpx

from brokers.management import vhost_of
from brokers.settings import Settings
from edge.link import RabbitLink
from tests.helpers import eventually

# An actor host's one connection and the edge's three: commands, queries, the saga's events.
CONNECTIONS = 4


async def test_every_connection_of_an_actor_host_and_the_edge_names_its_process_actors_and_role(
    start_host, settings: Settings, management: httpx.Client
):
    await start_host("orders", "payments")
    link = RabbitLink(settings)
    await link.open()
    try:

        async def names() -> list[str]:
            vhost = quote(vhost_of(settings.rabbitmq_url), safe="")
            connections = management.get(f"/api/vhosts/{vhost}/connections").raise_for_status().json()
            return [c.get("client_properties", {}).get("connection_name", "") for c in connections]

        found = await eventually(names, until=lambda n: len(n) == CONNECTIONS, what="the connections")
    finally:
        await link.close()

    process = f"{socket.gethostname()} pid {os.getpid()}"
    assert all(name and process in name for name in found), found
    assert len(set(found)) == CONNECTIONS, found  # each says what it is for
    (host,) = [name for name in found if not name.startswith("emporium-edge ")]
    assert "orders" in host and "payments" in host, host
