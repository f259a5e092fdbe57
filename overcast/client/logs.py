"""Formatting of CloudWatch log events as the User API returns them."""

from __future__ import annotations

import datetime
from typing import Any


def format_event(event: dict[str, Any]) -> str:
    ts = event.get("timestamp")
    if ts is None:
        return str(event.get("message", "")).rstrip("\n")
    when = datetime.datetime.fromtimestamp(ts / 1000, tz=datetime.UTC)
    return f"{when:%Y-%m-%d %H:%M:%S} {str(event.get('message', '')).rstrip(chr(10))}"


def format_events(events: list[dict[str, Any]]) -> str:
    return "\n".join(format_event(e) for e in events)
