"""Every line a process writes is one JSON object with its level and time, libraries' lines too."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from brokers.logs import configure_logging


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_library_records_and_our_events_come_out_as_json_lines(restore_logging, capsys):
    configure_logging("INFO")
    structlog.get_logger().warning("order.refused", order_id="o-1")
    logging.getLogger("uvicorn.error").warning("Started server process [%d]", 42)
    logging.getLogger("faststream").info("FastStream app started")
    logging.getLogger("emporium.faststream").error("consumer failed", extra={"queue": "orders"})
    try:
        raise ValueError("broken")
    except ValueError:
        logging.getLogger("aio_pika").exception("channel closed")
    logging.getLogger("httpx").info("HTTP Request: GET /x")  # below its level: not written

    ours, uvicorn, faststream, consumer, failure = _lines(capsys)
    assert (ours["event"], ours["order_id"], ours["level"]) == ("order.refused", "o-1", "warning")
    assert (uvicorn["event"], uvicorn["level"], uvicorn["logger"]) == (
        "Started server process [42]",
        "warning",
        "uvicorn.error",
    )
    assert faststream["logger"] == "faststream" and consumer["queue"] == "orders"
    assert "ValueError: broken" in failure["exception"]
    assert all(line["timestamp"].endswith("Z") for line in (ours, uvicorn, faststream, consumer, failure))


def test_a_filtered_level_drops_lower_lines_of_every_kind(restore_logging, capsys):
    configure_logging("WARNING")
    structlog.get_logger().info("order.seen")
    logging.getLogger("uvicorn.error").info("Waiting for application startup.")
    structlog.get_logger().warning("order.late")
    assert [line["event"] for line in _lines(capsys)] == ["order.late"]
