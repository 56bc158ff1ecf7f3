"""The stream-state reducer: (saved state, event) -> (new state, events that may notify).

Pure: no database, no clock of its own. The dispatch stage reads a stream's saved state
once, hands it here with the event and when the event happened on the bot's clock, saves
the state this returns, and routes the candidates. Everything the bot believes about a
session (live or not, since when, its title and categories, a comeback within
`rejoin_window`) is decided here, so it can be tested with plain values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final

from bot import events as ev
from bot.events import Event, LiveInfo
from bot.pipeline.clocks import CLOCK_SKEW, SenderClocks
from bot.store import SessionMarks, StreamState

log = logging.getLogger(__name__)

#: The kinds that change a stream's saved state (and are ordered against it).
STATE_KINDS: Final = frozenset(
    {ev.LIVE_START, ev.LIVE_END, ev.TITLE_CHANGE, ev.CATEGORY_CHANGE, ev.STREAM_UPDATE}
)

# A saved state time that says nothing (see `heal`): no event is older than it.
_NO_TIME: Final = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Candidate:
    """An event that may be notified; `resumed` marks a live_start reopening old cards."""

    event: Event
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class Reduction:
    """What one event does to its stream.

    `event` is the event as enriched from the saved state (name, url, info and session
    start the payload left out); `state` the stream's new state, None when it stays as
    it was; `candidates` the events that may be notified, in order (the event itself
    and any title/category change derived from it).
    """

    event: Event
    state: StreamState | None
    candidates: tuple[Candidate, ...]


def needs_session_start(prev: StreamState | None, event: Event) -> bool:
    """Whether `heal` needs the event that opened the saved session (rarely: only for a
    state an older version saved with a start time in the future)."""
    return (
        prev is not None
        and prev.started_at is not None
        and prev.started_at > event.received_at + CLOCK_SKEW
    )


def heal(
    prev: StreamState | None, event: Event, session_start: Event | None
) -> StreamState | None:
    """The saved state, minus times in the future that an older version stored.

    This version never saves a state time later than the event that set it arrived,
    nor a session start or end beyond the skew allowance. An older one took a sender's
    time as it came: one event dated 2099 left every later one older than the state. A
    state time beyond the allowance says nothing, so it counts as the beginning of time:
    no event is older, and the next one replaces it. Such a start becomes the time its
    live_start (`session_start`) arrived, so the duration at the end is sane.
    """
    if prev is None:
        return None
    limit = event.received_at + CLOCK_SKEW
    state_at = _NO_TIME if prev.state_at > limit else prev.state_at
    started_at = prev.started_at
    if started_at is not None and started_at > limit:
        arrived = session_start.received_at if session_start is not None else None
        started_at = arrived if arrived is not None and arrived <= limit else None
    ended_at = prev.ended_at
    if ended_at is not None and ended_at > limit:
        ended_at = None
    if (state_at, started_at, ended_at) == (prev.state_at, prev.started_at, prev.ended_at):
        return prev
    log.info(
        "%s: the saved state has times in the future (from an older version); they are not used",
        prev.streamer_key,
    )
    return replace(prev, state_at=state_at, started_at=started_at, ended_at=ended_at)


class StreamReducer:
    """Applies events to stream states (the reducer's settings and the sender clocks)."""

    def __init__(self, *, clocks: SenderClocks, rejoin_window: timedelta) -> None:
        self._clocks = clocks
        self.rejoin_window = rejoin_window

    def reduce(self, prev: StreamState | None, event: Event, order_at: datetime) -> Reduction:
        """Apply `event` to the stream's saved state `prev` (already healed).

        `order_at` is when the event happened on the bot's clock (SenderClocks).
        """
        key = event.streamer_key
        if key is None:
            return Reduction(event, None, (Candidate(event),))
        started = self._clocks.sane(event.started_at, event)
        if started != event.started_at:
            event = event.with_changes(started_at=started)
        event = _fill_from_state(event, prev)
        if prev is not None and event.kind in STATE_KINDS and order_at < prev.state_at:
            log.info(
                "%s %s for %s is older than the stream's saved state; recorded, not notified",
                event.kind,
                event.event_id,
                key,
            )
            return Reduction(event, None, ())
        kind = event.kind
        if kind == ev.LIVE_START:
            return self._on_start(event, prev, order_at)
        if kind == ev.LIVE_END:
            return self._on_end(event, prev, order_at)
        if kind in (ev.TITLE_CHANGE, ev.CATEGORY_CHANGE):
            changed = _state(
                event,
                prev,
                order_at,
                live=True if prev is None else prev.live,
                info=event.live,
                started_at=event.started_at,
                ended_at=prev.ended_at if prev else None,
            )
            return Reduction(event, changed, (Candidate(event),))
        if kind == ev.STREAM_UPDATE:
            state, changes = _on_update(event, prev, order_at)
            return Reduction(event, state, changes)
        if kind == ev.REPLAY_READY:
            replay = _replay(event, prev)
            return Reduction(replay or event, None, (Candidate(replay),) if replay else ())
        if event.replay_url and (replay := _replay(event, prev)) is not None:
            # A source's own kind carrying a replay (Livepeer's recording.ready): the
            # event as it is, and the ended cards' link.
            return Reduction(event, None, (Candidate(event), Candidate(replay)))
        if prev is not None and prev.live and event.live is not None:
            # Sources like Livepeer attach the stream's current state to every event;
            # a renamed stream shows up as a title change.
            state, changes = _on_update(event, prev, order_at)
            return Reduction(event, state, (Candidate(event), *changes))
        return Reduction(event, None, (Candidate(event),))

    def _on_start(self, event: Event, prev: StreamState | None, order_at: datetime) -> Reduction:
        info = event.live or LiveInfo()
        if prev is not None and prev.live and _same_session(prev, info):
            log.info(
                "live_start for %s repeats the session in progress; not notified",
                prev.streamer_key,
            )
            # ...but what it says may have changed since (a recorder restarted after a
            # rename): those are title / category changes.
            state, changes = _on_update(event, prev, order_at)
            return Reduction(event, state, changes)
        if prev is not None and self._resumes(event, prev):
            # The same session after a short drop: it keeps its cards and its start time,
            # so the final duration covers the whole stream.
            event = event.with_changes(started_at=prev.started_at, ended_at=None)
            state = _state(
                event,
                prev,
                order_at,
                live=True,
                info=info,
                started_at=prev.started_at,
                ended_at=None,
            )
            log.info(
                "%s is live again within rejoin_window; its cards reopen, no new ping",
                prev.streamer_key,
            )
            derived = _changes(event, prev.info, event.live or info)
            return Reduction(
                event, state, (Candidate(event, resumed=True), *map(Candidate, derived))
            )
        sane = self._clocks.sane
        started = sane(info.start_time, event) or sane(event.occurred_at, event)
        event = event.with_changes(started_at=started, ended_at=None)
        state = _state(
            event, prev, order_at, live=True, info=info, started_at=started, ended_at=None
        )
        return Reduction(event, state, (Candidate(event),))

    def _resumes(self, event: Event, prev: StreamState) -> bool:
        """Whether a live_start comes within rejoin_window of the stream's last live_end."""
        window = self.rejoin_window
        if prev.live or prev.ended_at is None or prev.started_at is None or not window:
            return False
        if prev.marks.session_row is None:
            return False
        at = self._clocks.sane(event.occurred_at, event)
        assert at is not None
        return timedelta(0) <= at - prev.ended_at <= window

    def _on_end(self, event: Event, prev: StreamState | None, order_at: datetime) -> Reduction:
        if prev is not None and not prev.live:
            # Already ended (a repeat), or a disabled/deleted stream that was not live.
            log.info(
                "%s for %s while not live; recorded, not notified", event.kind, prev.streamer_key
            )
            return Reduction(event, None, ())
        if prev is None and event.details.get("only_if_live"):
            return Reduction(event, None, ())
        started = event.started_at or (prev.started_at if prev else None)
        if prev is None:
            # Never seen live (the bot was installed mid-stream, or a recorder replays
            # its history): nobody here was told it started, so nobody is told it ended.
            # The state is kept, so what comes next is compared with something.
            log.info(
                "%s for %s, never seen live; recorded, not notified",
                event.kind,
                event.streamer_key,
            )
            ended = self._clocks.sane(event.occurred_at, event)
            state = _state(
                event,
                None,
                order_at,
                live=False,
                info=event.live,
                started_at=started,
                ended_at=ended,
            )
            return Reduction(event, state, ())
        ended = self._clocks.sane(event.occurred_at, event)
        assert ended is not None
        if started is not None and ended < started:
            # An end before its start: the two came from clocks that disagree (another
            # source started the session). The bot's clock is the one they share.
            ended = max(order_at, started)
        event = event.with_changes(started_at=started, ended_at=ended)
        state = _state(
            event, prev, order_at, live=False, info=event.live, started_at=started, ended_at=ended
        )
        return Reduction(event, state, (Candidate(event),))


def _on_update(
    event: Event, prev: StreamState | None, order_at: datetime
) -> tuple[StreamState | None, tuple[Candidate, ...]]:
    new = event.live
    if new is None:
        return None, ()
    old = prev.info if prev is not None else None
    live = prev.live if prev is not None else False
    state = _state(
        event,
        prev,
        order_at,
        live=live,
        info=new,
        started_at=prev.started_at if prev else None,
        ended_at=prev.ended_at if prev else None,
    )
    if old is None or not live:
        return state, ()
    return state, tuple(Candidate(change) for change in _changes(event, old, new))


def _state(
    event: Event,
    prev: StreamState | None,
    order_at: datetime,
    *,
    live: bool,
    info: LiveInfo | None,
    started_at: datetime | None,
    ended_at: datetime | None,
) -> StreamState:
    key = event.streamer_key
    assert key is not None
    merged = _merge(prev.info if prev else LiveInfo(), info)
    return StreamState(
        streamer_key=key,
        display_name=event.display_name or (prev.display_name if prev else None),
        url=event.url or (prev.url if prev else None),
        live=live,
        info=merged,
        started_at=started_at,
        ended_at=ended_at,
        # On the bot's clock (SenderClocks), so never later than this event arrived.
        state_at=max(order_at, prev.state_at) if prev else order_at,
        marks=prev.marks if prev else SessionMarks(),
    )


def _same_session(prev: StreamState, info: LiveInfo) -> bool:
    """Whether a live_start describes the session already in progress."""
    if info.live_id is not None or prev.info.live_id is not None:
        return info.live_id == prev.info.live_id
    if info.start_time is not None and prev.started_at is not None:
        # The saved info keeps the start time as sent, for a session whose start was
        # taken as its arrival (a start time in the future, SenderClocks.sane).
        return info.start_time in (prev.started_at, prev.info.start_time)
    # Nothing tells the two apart: a recorder that restarted re-announces the same
    # session, and a second ping would be the double post users hate most.
    return True


def _replay(event: Event, prev: StreamState | None) -> Event | None:
    """The replay of the stream's last session, as its ended cards show it; None when
    there is no ended session to attach it to (never seen, or live again)."""
    if prev is None or prev.live or prev.marks.session_row is None or prev.ended_at is None:
        log.info(
            "%s for %s: no ended session to add the replay to; recorded only",
            event.kind,
            event.streamer_key,
        )
        return None
    own = event.kind == ev.REPLAY_READY
    return event.with_changes(
        kind=ev.REPLAY_READY,
        event_id=event.event_id if own else f"{event.event_id}#{ev.REPLAY_READY}",
        display_name=event.display_name or prev.display_name,
        url=event.url or prev.url,
        live=prev.info,
        started_at=prev.started_at,
        ended_at=prev.ended_at,
    )


def _merge(base: LiveInfo, new: LiveInfo | None) -> LiveInfo:
    """`new` over `base`, keeping what `new` does not say."""
    if new is None:
        return base
    return LiveInfo(
        title=new.title if new.title is not None else base.title,
        categories=new.categories or base.categories,
        cover=new.cover or base.cover,
        avatar=new.avatar or base.avatar,
        uid=new.uid or base.uid,
        uname=new.uname or base.uname,
        status=new.status or base.status,
        live_id=new.live_id or base.live_id,
        start_time=new.start_time or base.start_time,
    )


def _fill_from_state(event: Event, prev: StreamState | None) -> Event:
    """Fill name, url, live info and session start that the payload left out."""
    if prev is None:
        return event
    changes: dict[str, object] = {}
    if event.display_name is None and prev.display_name:
        changes["display_name"] = prev.display_name
    if event.url is None and prev.url:
        changes["url"] = prev.url
    if event.kind in (ev.TITLE_CHANGE, ev.CATEGORY_CHANGE):
        if event.old_live is None:
            changes["old_live"] = prev.info
        changes["live"] = _merge(prev.info, event.live)
    elif event.kind == ev.LIVE_START:
        # A new session keeps the stream's look but none of the last session's identity.
        last_look = replace(prev.info, live_id=None, start_time=None, status=None)
        changes["live"] = _merge(last_look, event.live)
    elif event.kind != ev.STREAM_UPDATE:
        # What the payload leaves out is best filled by what we last knew (a title set
        # while offline, the final title at the end, artwork for an error notice).
        changes["live"] = _merge(prev.info, event.live)
    if event.kind != ev.LIVE_START and prev.live and event.started_at is None:
        changes["started_at"] = prev.started_at
    return event.with_changes(**changes) if changes else event


def _changes(event: Event, old: LiveInfo, new: LiveInfo) -> list[Event]:
    """Title and category change events for what differs between `old` and `new`."""
    derived: list[Event] = []
    if new.title is not None and new.title != old.title:
        derived.append(_derive(event, ev.TITLE_CHANGE, old, new))
    if new.categories and new.categories != old.categories:
        derived.append(_derive(event, ev.CATEGORY_CHANGE, old, new))
    return derived


def _derive(event: Event, kind: str, old: LiveInfo, new: LiveInfo) -> Event:
    return event.with_changes(
        kind=kind,
        event_id=f"{event.event_id}#{kind}",
        live=_merge(old, new),
        old_live=old,
    )
