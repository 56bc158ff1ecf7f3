"""TOML values as bot.config and the platforms' configs read them: how a problem names a
value (its type as TOML calls it, or a short repr), and the grammars they share."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any, Final


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


_DIGITS: Final = re.compile(r"[0-9]+")
# Discord ids (snowflakes) are unsigned 64-bit integers.
_MAX_SNOWFLAKE: Final = 2**64 - 1


def parse_snowflake(value: Any, path: str, problems: list[str]) -> int | None:
    """A Discord id written as an integer or a string of digits."""
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        shown = show(value) if isinstance(value, str) else type_name(value)
        problems.append(
            f"{path}: expected a Discord id (a positive integer or a string of digits),"
            f" got {shown}"
        )
        return None
    if not 0 < number <= _MAX_SNOWFLAKE:
        problems.append(f"{path}: a Discord id must be a positive 64-bit integer, got {number}")
        return None
    return number
