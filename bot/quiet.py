"""Quiet hours: time windows, in a chat's own time zone, during which sends are silent.

A window is `"22:00-08:00"` (every day) or `"mon-fri 22:00-08:00"`, `"sat,sun
00:00-24:00"`: days, then a start and an end time, as Alertmanager's time intervals
have them (weekdays and times of day, in a location). A window whose end is not after
its start runs past midnight and belongs to the day it starts on: `"fri 22:00-08:00"`
covers Friday night and Saturday morning. Times are in the IANA time zone the route
(or `[behaviour]`) names, through zoneinfo, so daylight-saving changes need no thought.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Final

DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_INDEX: Final = {name: index for index, name in enumerate(DAYS)}
_WINDOW: Final = re.compile(
    r"(?:(?P<days>[a-z,\-\s]+?)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})"
)
_MINUTES_A_DAY: Final = 24 * 60


class WindowError(ValueError):
    """A window or time zone that cannot be read; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class QuietWindow:
    """One window: the weekdays it starts on (0 = Monday) and its minutes of the day."""

    days: frozenset[int]
    start: int
    end: int
    text: str

    def contains(self, local: datetime) -> bool:
        """Whether a wall-clock time (in the window's zone) falls in the window."""
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        # Past midnight: the evening part on its own days, the morning part the day after.
        return (day in self.days and minute >= self.start) or (
            (day - 1) % 7 in self.days and minute < self.end
        )


def parse_window(text: str) -> QuietWindow:
    """A window from its text; WindowError says what is wrong with it."""
    found = _WINDOW.fullmatch(text.strip().lower())
    if found is None:
        raise WindowError(
            f'{text[:40]!r} is not a window like "22:00-08:00" or "mon-fri 22:00-08:00"'
        )
    days = _days(found.group("days")) if found.group("days") else frozenset(range(7))
    start, end = _minute(found.group("start")), _minute(found.group("end"))
    if start == _MINUTES_A_DAY:
        raise WindowError(f"{text[:40]!r}: a window cannot start at 24:00")
    if start == end:
        raise WindowError(
            f"{text[:40]!r} is empty (it ends when it starts); 00:00-24:00 is all day"
        )
    return QuietWindow(days=days, start=start, end=end, text=text.strip())


def load_zone(name: str) -> tzinfo:
    """The IANA time zone of this name ("Europe/Berlin", "UTC")."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise WindowError(
            f'{name[:60]!r} is not an IANA time zone (like "Europe/Berlin" or "UTC")'
        ) from None


def is_quiet(windows: Iterable[QuietWindow], zone: tzinfo | None, at: datetime) -> bool:
    """Whether `at` (an aware time) falls in any of the windows, read in `zone` (UTC if
    none is set)."""
    local = at.astimezone(zone or UTC)
    return any(window.contains(local) for window in windows)


def _minute(text: str) -> int:
    hours, _, minutes = text.partition(":")
    hour, minute = int(hours), int(minutes)
    if minute > 59 or hour > 24 or (hour == 24 and minute):
        raise WindowError(f"{text!r} is not a time of day (00:00 to 24:00)")
    return hour * 60 + minute


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        first, dash, last = part.partition("-")
        if first.strip() not in _DAY_INDEX or (dash and last.strip() not in _DAY_INDEX):
            raise WindowError(
                f"{part[:20]!r} is not a day or a range of days ({', '.join(DAYS)}; e.g."
                ' "mon-fri" or "sat,sun")'
            )
        begin = _DAY_INDEX[first.strip()]
        end = _DAY_INDEX[last.strip()] if dash else begin
        index = begin
        while True:  # a range may wrap: "fri-mon" is Friday to Monday
            days.add(index)
            if index == end:
                break
            index = (index + 1) % 7
    return frozenset(days)
