"""How config problems name a TOML value: its type as TOML calls it, or a short repr."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any


def type_name(value: Any) -> str:
    """ "integer", "string", "table"...: TOML's names, which the user wrote, not Python's."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, (date, time)):
        return type(value).__name__
    return "null" if value is None else type(value).__name__


def show(value: Any, limit: int = 60) -> str:
    """A short repr of a user value for a message (never used for secrets)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
