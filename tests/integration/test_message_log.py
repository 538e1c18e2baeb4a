"""EMPORIUM_LOG_MESSAGES: one log line per message an actor takes, so one order can be followed
through the logs by its correlation id (and none when it is off, the default)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import structlog

from brokers.logs import configure_logging
from tests.helpers import eventually, send
from tests.integration.support import product_created


@pytest.fixture
def json_logs(caplog):
    """The event of every log line the process writes as configure_logging sets it up (the records
    carry structlog's event dicts; the JSON renderer turns each into one line)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO")
    caplog.set_level(logging.INFO)

    def lines() -> list[dict[str, Any]]:
        return [record.msg for record in caplog.records if isinstance(record.msg, dict)]

    yield lines
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def handled(lines: list[dict[str, Any]], correlation_id: str) -> list[dict[str, Any]]:
    return [
        e for e in lines if e.get("event") == "message.handled" and e.get("correlation_id") == correlation_id
    ]


async def test_with_the_setting_each_message_taken_is_one_line_with_its_ids_and_outcome(
    start_host, broker, json_logs
):
    await start_host("inventory", emporium_log_messages=True)
    event = product_created("SKU-LOGGED")

    first = await send(broker, event, correlation_id="follow-me")
    await send(broker, event, message_id=first.message_id, correlation_id="follow-me")  # a copy

    lines = await eventually(
        lambda: _async(handled(json_logs(), "follow-me")), until=lambda found: len(found) == 2
    )
    assert [(e["actor"], e["type"], e["message_id"], e["outcome"]) for e in lines] == [
        ("inventory", "product.created", first.message_id, "applied"),
        ("inventory", "product.created", first.message_id, "duplicate"),
    ]
    assert all(e["level"] == "info" and "timestamp" in e for e in lines)


async def test_without_the_setting_no_line_is_written_per_message(
    start_host, broker, mongo, settings, json_logs
):
    await start_host("inventory")
    await send(broker, product_created("SKU-QUIET"), correlation_id="quiet")

    stock = mongo[settings.database_name("inventory")]["stock"]
    await eventually(lambda: stock.find_one({"_id": "SKU-QUIET"}), what="the SKU applied")
    assert handled(json_logs(), "quiet") == []


async def _async(value: Any) -> Any:
    return value
