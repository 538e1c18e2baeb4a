"""The pure parts of `emporium dlq`: where it connects, which queues it accepts, how it shows a letter."""

import pytest

from brokers.deadletters import DeadLetter
from brokers.dlq import DlqError, pretty_body, require_dlq_name
from brokers.management import management_client, queues_ui, vhost_of, with_vhost
from brokers.settings import Settings
from ops.dlq import describe


def _letter(**changes) -> DeadLetter:
    fields = dict(
        origin_queue="inventory",
        reason="retries-exhausted",
        attempts=4,
        error="UnknownSku: SKU X-1 is not in inventory",
        dead_lettered_at="2025-01-01T00:00:00+00:00",
        message_id="m-1",
        correlation_id="c-1",
        type="inventory.restock",
        body=b'{"sku":"X-1","quantity":5}',
    )
    return DeadLetter(**{**fields, **changes})


def test_a_dead_letter_is_described_field_by_field_with_its_body_indented():
    assert describe(_letter()) == [
        ("origin queue", "inventory"),
        ("reason", "retries-exhausted"),
        ("attempts", "4"),
        ("error", "UnknownSku: SKU X-1 is not in inventory"),
        ("type", "inventory.restock"),
        ("message id", "m-1"),
        ("correlation id", "c-1"),
        ("dead-lettered at", "2025-01-01T00:00:00+00:00"),
        ("body", '{\n  "sku": "X-1",\n  "quantity": 5\n}'),
    ]


def test_missing_properties_show_as_a_dash():
    rows = dict(describe(_letter(message_id=None, correlation_id=None, type=None, dead_lettered_at="")))
    assert [rows[k] for k in ("message id", "correlation id", "type", "dead-lettered at")] == ["-"] * 4


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b'{"name": "L\xc3\xa4mpe"}', '{\n  "name": "L\u00e4mpe"\n}'),
        (b"not json at all", "not json at all"),
        (b"\xff\xfe\x00binary", "<9 bytes, not UTF-8 text>"),
        (b"", ""),
    ],
)
def test_bodies_are_pretty_json_else_text_else_their_size(body, shown):
    assert pretty_body(body) == shown


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://guest:guest@127.0.0.1:5672", "/"),
        ("amqp://guest:guest@127.0.0.1:5672/", "/"),
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "/"),
        ("amqp://guest:guest@127.0.0.1:5672/emporium-test-1", "emporium-test-1"),
        ("amqp://guest:guest@127.0.0.1:5672/shop%20eu", "shop eu"),
    ],
)
def test_the_vhost_is_read_from_the_amqp_url(url, vhost):
    assert vhost_of(url) == vhost


@pytest.mark.parametrize("vhost", ["/", "emporium-test-1", "shop eu", "a/b"])
def test_a_vhost_put_into_a_url_reads_back_the_same(vhost):
    url = with_vhost("amqp://u:p@rabbit:5672/other", vhost)
    assert url.startswith("amqp://u:p@rabbit:5672/")
    assert vhost_of(url) == vhost


def test_the_management_client_moves_credentials_from_the_url_into_basic_auth():
    client = management_client(Settings(rabbitmq_management_url="http://ops:s%40cret@rabbit:15672"))
    assert str(client.base_url) == "http://rabbit:15672"
    request = client.build_request("GET", "/api/queues")
    assert str(request.url) == "http://rabbit:15672/api/queues"
    signed = next(client.auth.auth_flow(request))
    assert signed.headers["authorization"] == "Basic b3BzOnNAY3JldA=="  # ops:s@cret


@pytest.mark.parametrize("queue", ["inventory", "inventory.dlq.old", ".dlq", "dlq"])
def test_only_dead_letter_queues_are_accepted(queue):
    with pytest.raises(DlqError, match="is not a dead-letter queue"):
        require_dlq_name(queue)


def test_dead_letter_queue_names_are_accepted():
    require_dlq_name("inventory.dlq")
    require_dlq_name("inventory.queries.dlq")
    require_dlq_name("unrouted-events")  # where events no queue was bound for are parked


@pytest.mark.parametrize(
    ("rabbitmq_url", "vhost"),
    [
        ("amqp://u:p@rabbit:5672/", "%2F"),
        ("amqp://u:p@rabbit:5672", "%2F"),
        ("amqp://rabbit/t%2Fa%20b", "t%2Fa%20b"),
    ],
)
def test_the_queues_page_of_the_ui_names_the_vhost_and_never_the_credentials(rabbitmq_url: str, vhost: str):
    settings = Settings(
        rabbitmq_url=rabbitmq_url, rabbitmq_management_url="http://admin:s3cret@mq.local:15672/"
    )
    assert queues_ui(settings) == f"http://mq.local:15672/#/queues/{vhost}"
