"""From an accepted event to outbox rows: state, routes, subscriptions, mutes.

`Dispatcher.accept` is what the webhook handler calls. In one SQLite transaction it
dedupes the event, applies it to the stream's saved live state (filling in what the
payload left out, such as when a session started), derives title/category changes
from full-state updates, and writes one delivery row per target that should hear about
it. Rendering and sending happen later, from the outbox, so the webhook answers fast
and an accepted event survives a crash.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from bot import events as ev
from bot.events import Event, LiveInfo, utcnow
from bot.store import Store, StreamState

log = logging.getLogger(__name__)

#: Sinks whose posted messages can be edited later (the console cannot).
CARD_SINKS = frozenset({"discord", "telegram"})
_CHANGE_KINDS = frozenset({ev.TITLE_CHANGE, ev.CATEGORY_CHANGE})
_STATE_KINDS = frozenset(
    {ev.LIVE_START, ev.LIVE_END, ev.TITLE_CHANGE, ev.CATEGORY_CHANGE, ev.STREAM_UPDATE}
)


@dataclass(frozen=True, slots=True)
class Route:
    """Where events for streams matching `patterns` go (from config or /subscribe)."""

    patterns: tuple[str, ...]
    events: frozenset[str]
    discord_channels: tuple[int, ...] = ()
    telegram_chats: tuple[str, ...] = ()
    mention_roles: tuple[int, ...] = ()

    def matches(self, streamer_key: str | None, kind: str) -> bool:
        """True when this route wants events of `kind` for this stream."""
        return kind in self.events and any(
            glob_match(streamer_key or "", pattern) for pattern in self.patterns
        )


@dataclass(frozen=True, slots=True)
class Target:
    """One place a delivery goes: a sink and, for chat sinks, a channel/chat id."""

    sink: str
    target: str


@dataclass(slots=True)
class AcceptResult:
    """What accepting an event did: duplicate, or how many events and deliveries."""

    duplicate: bool
    event_row: int | None = None
    notified: list[Event] = field(default_factory=list)
    deliveries: int = 0


def glob_match(key: str, pattern: str) -> bool:
    """Case-insensitive glob match of a streamer key (`twitch/*`, `*/quinn`, `*`)."""
    return fnmatch.fnmatchcase(key.casefold(), pattern.casefold())


class Dispatcher:
    """Turns accepted events into stored state and outbox rows."""

    def __init__(
        self,
        *,
        store: Store,
        routes: Sequence[Route],
        sinks: Iterable[str],
        on_queued: Callable[[set[str]], None] | None = None,
        on_change: str = "edit",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._on_change = on_change
        self._routes = tuple(routes)
        self._sinks = frozenset(sinks)
        self._on_queued = on_queued
        self._clock = clock

    def accept(self, event: Event, *, raw: bytes | None = None) -> AcceptResult:
        """Store the event and queue its deliveries, all in one transaction."""
        store = self._store
        now = self._clock()
        with store.transaction():
            if store.has_event(event.source, event.event_id):
                return AcceptResult(duplicate=True)
            stored, candidates = self._apply_state(event)
            # Recorded kinds only count as notified when some route asks for them.
            plans = [(item, self.targets_for(item)) for item in candidates]
            plans = [(i, t) for i, t in plans if t or i.kind in ev.NOTIFIED_KINDS]
            notify_self = any(item is stored for item, _targets in plans)
            row = store.insert_event(stored, notified=notify_self, raw=raw)
            assert row is not None  # has_event said it is new, inside this transaction
            result = AcceptResult(duplicate=False, event_row=row)
            touched: set[str] = set()
            for item, targets in plans:
                item_row = row
                if item is not stored:
                    derived_row = store.insert_event(item, notified=True, parent=row)
                    if derived_row is None:
                        continue
                    item_row = derived_row
                if item.kind == ev.LIVE_START and item.streamer_key is not None:
                    store.set_session(item.streamer_key, item_row)
                for target, options in targets.items():
                    for action, action_options in self._actions(item, target, options):
                        store.add_delivery(
                            event_row=item_row,
                            sink=target.sink,
                            target=target.target,
                            action=action,
                            options=action_options,
                            not_before=now,
                            now=now,
                        )
                        result.deliveries += 1
                    touched.add(target.sink)
                result.notified.append(item)
        if touched and self._on_queued is not None:
            self._on_queued(touched)
        return result

    # -- live state ----------------------------------------------------------------

    def _apply_state(self, event: Event) -> tuple[Event, list[Event]]:
        """Update the stream's saved state; returns the enriched event and the candidates.

        The candidates are the enriched event itself when it may be notified (recorded
        kinds only go out where a route names them), and any derived change events.
        """
        key = event.streamer_key
        if key is None:
            return event, [event]
        prev = self._store.get_stream(key)
        event = _fill_from_state(event, prev)
        if prev is not None and event.kind in _STATE_KINDS and event.occurred_at < prev.state_at:
            log.info(
                "%s %s for %s is older than the stream's saved state; recorded, not notified",
                event.kind,
                event.event_id,
                key,
            )
            return event, []

        kind = event.kind
        if kind == ev.LIVE_START:
            return self._on_start(event, prev)
        if kind == ev.LIVE_END:
            return self._on_end(event, prev)
        if kind in (ev.TITLE_CHANGE, ev.CATEGORY_CHANGE):
            self._save(event, prev, live=True if prev is None else prev.live, info=event.live,
                       started_at=event.started_at, ended_at=prev.ended_at if prev else None)
            return event, [event]
        if kind == ev.STREAM_UPDATE:
            return event, self._on_update(event, prev)
        if prev is not None and prev.live and event.live is not None:
            # Sources like Livepeer attach the stream's current state to every event;
            # a renamed stream shows up as a title change.
            return event, [event, *self._on_update(event, prev)]
        return event, [event]

    def _on_start(self, event: Event, prev: StreamState | None) -> tuple[Event, list[Event]]:
        info = event.live or LiveInfo()
        if prev is not None and prev.live and _same_session(prev, info):
            log.info("live_start for %s repeats the session in progress; not notified",
                     prev.streamer_key)
            # ...but what it says may have changed since (a recorder restarted after a
            # rename): those are title / category changes.
            return event, self._on_update(event, prev)
        started = info.start_time or event.occurred_at
        event = event.with_changes(started_at=started, ended_at=None)
        self._save(event, prev, live=True, info=info, started_at=started, ended_at=None)
        return event, [event]

    def _on_end(self, event: Event, prev: StreamState | None) -> tuple[Event, list[Event]]:
        if prev is not None and not prev.live:
            # Already ended (a repeat), or a disabled/deleted stream that was not live.
            log.info("%s for %s while not live; recorded, not notified",
                     event.kind, prev.streamer_key)
            return event, []
        if prev is None and event.details.get("only_if_live"):
            return event, []
        started = event.started_at or (prev.started_at if prev else None)
        event = event.with_changes(started_at=started, ended_at=event.occurred_at)
        self._save(event, prev, live=False, info=event.live, started_at=started,
                   ended_at=event.occurred_at)
        return event, [event]

    def _on_update(self, event: Event, prev: StreamState | None) -> list[Event]:
        new = event.live
        if new is None:
            return []
        old = prev.info if prev is not None else None
        live = prev.live if prev is not None else False
        self._save(event, prev, live=live, info=new,
                   started_at=prev.started_at if prev else None,
                   ended_at=prev.ended_at if prev else None)
        if old is None or not live:
            return []
        derived: list[Event] = []
        if new.title is not None and new.title != old.title:
            derived.append(_derive(event, ev.TITLE_CHANGE, old, new))
        if new.categories and new.categories != old.categories:
            derived.append(_derive(event, ev.CATEGORY_CHANGE, old, new))
        return derived

    def _save(
        self,
        event: Event,
        prev: StreamState | None,
        *,
        live: bool,
        info: LiveInfo | None,
        started_at: datetime | None,
        ended_at: datetime | None,
    ) -> None:
        key = event.streamer_key
        assert key is not None
        merged = _merge(prev.info if prev else LiveInfo(), info)
        state = StreamState(
            streamer_key=key,
            display_name=event.display_name or (prev.display_name if prev else None),
            url=event.url or (prev.url if prev else None),
            live=live,
            info=merged,
            started_at=started_at,
            ended_at=ended_at,
            state_at=max(event.occurred_at, prev.state_at) if prev else event.occurred_at,
        )
        self._store.save_stream(state, now=utcnow())

    # -- routing -------------------------------------------------------------------

    def _actions(
        self, event: Event, target: Target, options: dict[str, object]
    ) -> list[tuple[str, dict[str, object]]]:
        """What to do in one chat: post a message, edit the session's card, or both.

        A title or category change edits the live card posted at live_start (when there
        is one) and, per `[behaviour] on_change`, also posts a notice of its own.
        """
        if event.kind not in _CHANGE_KINDS or target.sink not in CARD_SINKS:
            return [("post", options)]
        key = event.streamer_key
        session = self._store.session_row(key) if key is not None else None
        card = (
            self._store.card_delivery(session, target.sink, target.target)
            if session is not None
            else None
        )
        actions: list[tuple[str, dict[str, object]]] = []
        if card is not None and self._on_change in ("edit", "both"):
            actions.append(("edit", {**options, "card": card}))
        if card is None or self._on_change in ("post", "both"):
            actions.append(("post", options))
        return actions

    def targets_for(self, event: Event) -> dict[Target, dict[str, object]]:
        """Every (sink, target) this event should go to, after subscriptions and mutes.

        The value is the delivery's options (the Discord roles to ping on live_start).
        """
        key = event.streamer_key
        wanted: dict[Target, dict[str, object]] = {}
        for route in self._routes:
            if not route.matches(key, event.kind):
                continue
            self._add(wanted, Target("console", ""))
            for channel in route.discord_channels:
                options = self._add(wanted, Target("discord", str(channel)))
                if event.kind == ev.LIVE_START and route.mention_roles:
                    roles = options.setdefault("mention_roles", [])
                    assert isinstance(roles, list)
                    roles.extend(r for r in route.mention_roles if r not in roles)
            for chat in route.telegram_chats:
                self._add(wanted, Target("telegram", chat))
        if event.kind in ev.NOTIFIED_KINDS:
            for sub in self._store.subscriptions():
                if glob_match(key or "", sub.pattern):
                    self._add(wanted, Target(sub.sink, sub.target))
        now = self._clock()
        for target in list(wanted):
            # Mutes are per chat: a forum topic ("-100123/42") follows its chat's mutes.
            chat = target.target.partition("/")[0]
            mutes = self._store.mutes_for(target.sink, chat, now)
            if any(glob_match(key or "", mute.pattern) for mute in mutes):
                log.info("%s for %s muted in %s %s", event.kind, key, target.sink, target.target)
                del wanted[target]
        return wanted

    def _add(self, wanted: dict[Target, dict[str, object]], target: Target) -> dict[str, object]:
        if target.sink not in self._sinks:
            return {}
        return wanted.setdefault(target, {})


def _same_session(prev: StreamState, info: LiveInfo) -> bool:
    """Whether a live_start describes the session already in progress."""
    if info.live_id is not None or prev.info.live_id is not None:
        return info.live_id == prev.info.live_id
    if info.start_time is not None and prev.started_at is not None:
        return info.start_time == prev.started_at
    # Nothing tells the two apart: a recorder that restarted re-announces the same
    # session, and a second ping would be the double post users hate most.
    return True


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


def _derive(event: Event, kind: str, old: LiveInfo, new: LiveInfo) -> Event:
    return event.with_changes(
        kind=kind,
        event_id=f"{event.event_id}#{kind}",
        live=_merge(old, new),
        old_live=old,
    )
