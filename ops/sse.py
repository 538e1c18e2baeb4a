"""Server-Sent Events as the ops scripts read them (the edge's GET /orders/{id}/events).

The reader is fed one line at a time, so the synchronous demo and the asynchronous load share it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerEvent:
    event: str | None
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data or "{}")


class SseReader:
    """Turns the lines of a text/event-stream into events: one is complete at each blank line."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}
        self._data: list[str] = []

    def feed(self, line: str) -> ServerEvent | None:
        """Take one line (without its line break); the event it completes, if any."""
        if line == "":
            return self._complete()
        if line.startswith(":"):  # a comment: the edge's heartbeat
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        else:
            self._fields[name] = value
        return None

    def _complete(self) -> ServerEvent | None:
        fields, data = self._fields, self._data
        self._fields, self._data = {}, []
        if not fields and not data:
            return None
        return ServerEvent(fields.get("event"), "\n".join(data), fields.get("id"))
