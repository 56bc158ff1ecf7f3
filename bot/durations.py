"""Durations as people write them ("90s", "5m", "2h", "1d", "1h30m") and as they read them."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)\s*([smhdw])")
_WHOLE = re.compile(r"^\s*(?:\d+\s*[smhdw]\s*)+$")


def parse_duration(text: str) -> timedelta:
    """Parse "30m", "2h", "1d", "1h30m", "90s" (case-insensitive); ValueError otherwise."""
    lowered = text.lower()
    if not _WHOLE.match(lowered):
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit, like 90s, 30m, 2h or 1d"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(lowered))
    return timedelta(seconds=seconds)


def looks_like_duration(text: str) -> bool:
    """True when `text` parses as a duration (used to tell `/mute 2h` from `/mute name`)."""
    return bool(_WHOLE.match(text.lower()))


def format_duration(value: timedelta | float | int, *, parts: int = 2) -> str:
    """ "2h 13m", "45s", "3d 4h": the `parts` largest non-zero units, never empty."""
    total = int(value.total_seconds() if isinstance(value, timedelta) else value)
    if total <= 0:
        return "0s"
    out: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, total = divmod(total, size)
        if amount:
            out.append(f"{amount}{unit}")
    return " ".join(out[:parts])
