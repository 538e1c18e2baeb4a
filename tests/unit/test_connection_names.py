"""How emporium's RabbitMQ connections are named (tests/integration/test_connection_names.py reads
the names back from RabbitMQ)."""

from __future__ import annotations

import os
import socket

import aiormq

from brokers.factory import connection_name, named_url


def test_a_connection_name_says_program_role_and_process():
    assert connection_name("emporium-edge", "queries") == (
        f"emporium-edge queries ({socket.gethostname()} pid {os.getpid()})"
    )


async def test_the_name_rides_in_the_url_where_aiormq_reads_it_and_the_rest_of_the_url_stays():
    url = named_url(
        "amqp://shop:s%40fe@rabbit:5672/emporium?heartbeat=30&name=old", "emporium-edge", "queries"
    )

    connection = aiormq.Connection(url)

    assert connection.connection_name == connection_name("emporium-edge", "queries")
    assert connection.url.query["heartbeat"] == "30"
    assert (connection.url.user, connection.url.password, connection.url.path) == (
        "shop",
        "s@fe",
        "/emporium",
    )
