"""The bot's clock and the senders': ordering a stream's events despite wrong clocks."""

from __future__ import annotations

import logging
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Final

from bot.durations import format_duration
from bot.events import Event

log = logging.getLogger(__name__)

#: How far ahead of the bot's clock a sender's clock may run and its times still count
#: (design.md: a sender's clock is not trusted for ordering beyond a small skew
#: allowance). NTP keeps clocks within a second; this leaves room for a neglected one.
CLOCK_SKEW: Final = timedelta(minutes=5)
#: How long, and for at most how many deliveries per source, what a delivery says about
#: its sender's clock is remembered: long enough that a late retry stands out against
#: the deliveries around it, short enough that a sender's clock being reset is followed.
CLOCK_MEMORY: Final = timedelta(hours=1)
CLOCK_SAMPLES: Final = 256

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class SenderClocks:
    """Puts the times senders give on the bot's own clock, for ordering a stream's events.

    A stream's saved state remembers when (on the bot's clock) the event that set it
    happened; an event that happened before that is a late delivery (a retry of a
    live_start that lost the race with its live_end) and is recorded, not applied.

    - Within one source, sender times are what orders its events, however wrong that
      sender's clock: a late retry carries its old time and is recognised as older.
    - Across sources they are comparable only on one clock. Each source's offset is
      learned from its deliveries: the smallest lag (receive time minus sender time)
      among its recent ones, since a delivery can arrive late but never early. A sender
      whose clock is hours behind thus has an offset of hours: its new events land at
      about their receive time, not hours before the state another source just set,
      and its own late retries still land before it. (Right after a start a source's
      first delivery is taken as on time; a clock that is reset is followed within
      CLOCK_MEMORY.)
    - A time further ahead than CLOCK_SKEW is no time at all (a clock set to 2099): the
      event is taken to have happened when it arrived, which orders such a sender's
      events by arrival. Not at the edge of the allowance: an event set there would
      make every event of the next five minutes older than the state, and drop them.

    The time an event shows is the sender's own; only `sane` keeps a future time out of
    the session's start and end, so a duration is never negative or absurd.
    """

    def __init__(self, *, skew: timedelta = CLOCK_SKEW) -> None:
        self._skew = skew
        self._lags: dict[str, deque[tuple[datetime, timedelta]]] = {}
        self._warned: set[str] = set()

    def sane(self, when: datetime | None, event: Event) -> datetime | None:
        """A time `event`'s sender gave, or its receive time if that lies too far ahead,
        or before 1970: that is a language's "no time" (Go's zero time is year 1, .NET's
        MinValue too), and a stream started then would show a 2,000-year duration."""
        if when is None or _EPOCH <= when <= event.received_at + self._skew:
            return when
        return event.received_at

    def order_time(self, event: Event) -> datetime:
        """When `event` happened on the bot's clock (learning its sender's offset)."""
        received = event.received_at
        sent = event.occurred_at
        if sent == received:
            # The payload had no time: the source used the receive time.
            return received
        ahead = sent - received
        if ahead > self._skew:
            self._warn(event.source, ahead)
            return received
        lags = self._lags.setdefault(event.source, deque(maxlen=CLOCK_SAMPLES))
        while lags and received - lags[0][0] > CLOCK_MEMORY:
            lags.popleft()
        lags.append((received, -ahead))
        return sent + min(lag for _at, lag in lags)

    def _warn(self, source: str, ahead: timedelta) -> None:
        # Once per source: a sender with a broken clock sends every event that way.
        if source in self._warned:
            return
        self._warned.add(source)
        log.warning(
            "source %r: the sender's clock is %s ahead of the bot's; its events are "
            "ordered by when they arrive, and times more than %s ahead are not used for "
            "session starts and ends (check the clock of the machine sending them)",
            source,
            format_duration(ahead),
            format_duration(self._skew),
        )
