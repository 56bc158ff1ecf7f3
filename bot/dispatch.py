"""From an accepted event to outbox rows: state, routes, subscriptions, mutes.

Webhook handlers reach `Dispatcher.accept_many` through the group commit in intake.py
(`accept` is the one-event form). In one SQLite transaction it dedupes each event,
applies it to the stream's saved live state (filling in what the payload left out, such
as when a session started), derives title/category changes from full-state updates, and
writes one delivery row per target that should hear about it, following the session-card
policy of cards.py. Rendering and sending happen later, from the outbox, so the webhook
answers fast and an accepted event survives a crash.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final

from bot import events as ev
from bot.cards import CARD_SINKS, CHANGE_KINDS, EDIT, POST, CardPolicy, card_actions
from bot.config import BehaviourConfig
from bot.durations import format_duration
from bot.errors import TransactionAborted
from bot.events import Event, LiveInfo, utcnow
from bot.sources.base import is_body_digest
from bot.store import SessionMarks, Store, StreamState

log = logging.getLogger(__name__)

_STATE_KINDS = frozenset(
    {ev.LIVE_START, ev.LIVE_END, ev.TITLE_CHANGE, ev.CATEGORY_CHANGE, ev.STREAM_UPDATE}
)

#: How far ahead of the bot's clock a sender's clock may run and its times still count
#: (design.md: a sender's clock is not trusted for ordering beyond a small skew
#: allowance). NTP keeps clocks within a second; this leaves room for a neglected one.
CLOCK_SKEW: Final = timedelta(minutes=5)
#: How long, and for at most how many deliveries per source, what a delivery says about
#: its sender's clock is remembered: long enough that a late retry stands out against
#: the deliveries around it, short enough that a sender's clock being reset is followed.
CLOCK_MEMORY: Final = timedelta(hours=1)
CLOCK_SAMPLES: Final = 256

#: How long a payload without an id of its own is a duplicate of an identical body. Its
#: id is a hash of the body (sources/base.py `body_digest`; only OneLiveRec payloads
#: without `id` get one, Livepeer and FastPix require theirs), and the same body can
#: honestly come again: the docs' live_start has neither `id` nor `ts`, so tomorrow's
#: stream sends the very bytes of today's. Within the window it is the sender retrying;
#: after it, a new event. OneLiveRec documents no retry schedule, so the window is the
#: horizon the bot's own outbox retries a delivery for (`[delivery] max_age`, 24 h by
#: default): a sender still retrying a day later is not one we know of. The price: a
#: stream that ends and starts again within the day, sending byte-identical payloads
#: with neither `id` nor `ts`, is taken for a retry. Ids a provider sets are unique for
#: good and dedupe forever.
DIGEST_WINDOW: Final = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Route:
    """Where events for streams matching `patterns` go (from config or /subscribe)."""

    patterns: tuple[str, ...]
    events: frozenset[str]
    discord_channels: tuple[int, ...] = ()
    telegram_chats: tuple[str, ...] = ()
    mention_roles: tuple[int, ...] = ()
    # Overrides of [behaviour] for this route's chats; None: the global setting.
    on_change: str | None = None
    on_end: str | None = None
    end_grace: timedelta | None = None

    def policy(self, default: CardPolicy) -> CardPolicy:
        """The card policy for this route's chats: its overrides over `default`."""
        return CardPolicy(
            on_change=self.on_change or default.on_change,
            on_end=self.on_end or default.on_end,
            end_grace=default.end_grace if self.end_grace is None else self.end_grace,
        )

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
class Plan:
    """What one target does with one event: its card policy and the delivery's options."""

    policy: CardPolicy
    # Stored with each delivery row: the Discord roles a live_start pings.
    options: dict[str, object] = field(default_factory=dict)
    # A /mute holds back every new message here; a card already posted is still kept
    # current (edited to ended, say), which notifies nobody and never leaves it stale.
    muted: bool = False


@dataclass(frozen=True, slots=True)
class _Candidate:
    """An event that may be notified; `resumed` marks a live_start reopening old cards."""

    event: Event
    resumed: bool = False


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


class Dispatcher:
    """Turns accepted events into stored state and outbox rows."""

    def __init__(
        self,
        *,
        store: Store,
        routes: Sequence[Route],
        sinks: Iterable[str],
        on_queued: Callable[[set[str]], None] | None = None,
        behaviour: BehaviourConfig | None = None,
        clock: Callable[[], float] = time.time,
        digest_window: timedelta = DIGEST_WINDOW,
    ) -> None:
        self._store = store
        self._sinks = frozenset(sinks)
        self._on_queued = on_queued
        self._clock = clock
        self._digest_window = digest_window
        self._clocks = SenderClocks()
        self.reconfigure(routes=routes, behaviour=behaviour)

    def reconfigure(
        self, *, routes: Sequence[Route], behaviour: BehaviourConfig | None = None
    ) -> None:
        """Use these routes and [behaviour] for events accepted from now on (SIGHUP)."""
        # Without a config (unit tests, tools) ends are announced at once.
        self._behaviour = behaviour or BehaviourConfig(end_grace=timedelta(0))
        self._default_policy = CardPolicy.from_behaviour(self._behaviour)
        self._routes = tuple(routes)

    async def accept(self, event: Event, *, raw: bytes | None = None) -> AcceptResult:
        """Store the event and queue its deliveries, all in one transaction."""
        [outcome] = await self.accept_many([(event, raw)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def accept_many(
        self, batch: Sequence[tuple[Event, bytes | None]]
    ) -> list[AcceptResult | Exception]:
        """Accept several events in one transaction (a group commit).

        Each event succeeds or fails on its own (a savepoint each): the result list holds,
        in order, each one's AcceptResult or the exception it raised. A failing COMMIT
        raises, and then none of them was stored.
        """
        store = self._store
        now = self._clock()
        outcomes: list[AcceptResult | Exception] = []
        touched: set[str] = set()
        async with store.transaction():
            for event, raw in batch:
                try:
                    async with store.savepoint():
                        result, sinks = await self._accept_one(event, raw, now)
                except TransactionAborted:
                    # The database rolled the whole transaction back itself (disk full,
                    # I/O error): nothing of the batch is stored; fail it with the cause.
                    raise
                except Exception as exc:
                    outcomes.append(exc)
                    continue
                outcomes.append(result)
                touched |= sinks
        if touched and self._on_queued is not None:
            self._on_queued(touched)
        return outcomes

    async def _accept_one(
        self, event: Event, raw: bytes | None, now: float
    ) -> tuple[AcceptResult, set[str]]:
        store = self._store
        if is_body_digest(event.event_id):
            # An id made from the body dedupes retries within the window only: after it,
            # the stored row's id is moved aside and the same body is a new event.
            await store.retire_event_id(
                event.source,
                event.event_id,
                received_before=event.received_at - self._digest_window,
            )
        if await store.has_event(event.source, event.event_id):
            return AcceptResult(duplicate=True), set()
        stored, candidates = await self._apply_state(event, self._clocks.order_time(event))
        # Recorded kinds only count as notified when some route asks for them.
        plans = [(item, await self.targets_for(item.event)) for item in candidates]
        plans = [(i, t) for i, t in plans if t or i.event.kind in ev.NOTIFIED_KINDS]
        notify_self = any(item.event is stored for item, _targets in plans)
        row = await store.insert_event(stored, notified=notify_self, raw=raw)
        assert row is not None  # has_event said it is new, inside this transaction
        result = AcceptResult(duplicate=False, event_row=row)
        touched: set[str] = set()
        # Decided once per webhook: a title and a category change from one update are
        # one change, and both may post under the cooldown.
        change_posts = any(i.event.kind in CHANGE_KINDS for i, _t in plans) and (
            await self._change_posts_allowed(stored.streamer_key, now)
        )
        for item, targets in plans:
            item_row = row
            if item.event is not stored:
                derived_row = await store.insert_event(item.event, notified=True, parent=row)
                if derived_row is None:
                    continue
                item_row = derived_row
            queued = await self._queue(item, item_row, targets, now, change_posts=change_posts)
            result.deliveries += len(queued)
            touched.update(target.sink for target, *_rest in queued)
            result.notified.append(item.event)
        return result, touched

    # -- live state ----------------------------------------------------------------

    async def _apply_state(
        self, event: Event, order_at: datetime
    ) -> tuple[Event, list[_Candidate]]:
        """Update the stream's saved state; returns the enriched event and the candidates.

        The candidates are the enriched event itself when it may be notified (recorded
        kinds only go out where a route names them), and any derived change events.
        `order_at` is when the event happened on the bot's clock (SenderClocks).
        """
        key = event.streamer_key
        if key is None:
            return event, [_Candidate(event)]
        prev = await self._heal(await self._store.get_stream(key), event)
        started = self._clocks.sane(event.started_at, event)
        if started != event.started_at:
            event = event.with_changes(started_at=started)
        event = _fill_from_state(event, prev)
        if prev is not None and event.kind in _STATE_KINDS and order_at < prev.state_at:
            log.info(
                "%s %s for %s is older than the stream's saved state; recorded, not notified",
                event.kind,
                event.event_id,
                key,
            )
            return event, []

        kind = event.kind
        if kind == ev.LIVE_START:
            return await self._on_start(event, prev, order_at)
        if kind == ev.LIVE_END:
            return await self._on_end(event, prev, order_at)
        if kind in (ev.TITLE_CHANGE, ev.CATEGORY_CHANGE):
            await self._save(
                event,
                prev,
                order_at,
                live=True if prev is None else prev.live,
                info=event.live,
                started_at=event.started_at,
                ended_at=prev.ended_at if prev else None,
            )
            return event, [_Candidate(event)]
        if kind == ev.STREAM_UPDATE:
            return event, await self._on_update(event, prev, order_at)
        if prev is not None and prev.live and event.live is not None:
            # Sources like Livepeer attach the stream's current state to every event;
            # a renamed stream shows up as a title change.
            return event, [_Candidate(event), *await self._on_update(event, prev, order_at)]
        return event, [_Candidate(event)]

    async def _heal(self, prev: StreamState | None, event: Event) -> StreamState | None:
        """The saved state, minus times in the future that an older version stored.

        This version never saves a state time later than the event that set it arrived,
        nor a session start or end beyond the skew allowance. An older one took a
        sender's time as it came: one event dated 2099 left every later one older than
        the state. A state time beyond the allowance says nothing, so it counts as the
        beginning of time: no event is older, and the next one replaces it. Such a start
        becomes the time its live_start arrived, so the duration at the end is sane.
        """
        if prev is None:
            return None
        limit = event.received_at + CLOCK_SKEW
        state_at = _NO_TIME if prev.state_at > limit else prev.state_at
        started_at = prev.started_at
        if started_at is not None and started_at > limit:
            session = (await self._marks(prev.streamer_key)).session_row
            start = await self._store.load_event(session) if session is not None else None
            arrived = start.received_at if start is not None else None
            started_at = arrived if arrived is not None and arrived <= limit else None
        ended_at = prev.ended_at
        if ended_at is not None and ended_at > limit:
            ended_at = None
        if (state_at, started_at, ended_at) == (prev.state_at, prev.started_at, prev.ended_at):
            return prev
        log.info(
            "%s: the saved state has times in the future (from an older version); "
            "they are not used",
            prev.streamer_key,
        )
        return replace(prev, state_at=state_at, started_at=started_at, ended_at=ended_at)

    async def _on_start(
        self, event: Event, prev: StreamState | None, order_at: datetime
    ) -> tuple[Event, list[_Candidate]]:
        info = event.live or LiveInfo()
        if prev is not None and prev.live and _same_session(prev, info):
            log.info(
                "live_start for %s repeats the session in progress; not notified",
                prev.streamer_key,
            )
            # ...but what it says may have changed since (a recorder restarted after a
            # rename): those are title / category changes.
            return event, await self._on_update(event, prev, order_at)
        if prev is not None and await self._resumes(event, prev):
            # The same session after a short drop: it keeps its cards and its start time,
            # so the final duration covers the whole stream.
            event = event.with_changes(started_at=prev.started_at, ended_at=None)
            await self._save(
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
            changes = _changes(event, prev.info, event.live or info)
            return event, [_Candidate(event, resumed=True), *map(_Candidate, changes)]
        sane = self._clocks.sane
        started = sane(info.start_time, event) or sane(event.occurred_at, event)
        event = event.with_changes(started_at=started, ended_at=None)
        await self._save(
            event, prev, order_at, live=True, info=info, started_at=started, ended_at=None
        )
        return event, [_Candidate(event)]

    async def _resumes(self, event: Event, prev: StreamState) -> bool:
        """Whether a live_start comes within rejoin_window of the stream's last live_end."""
        window = self._behaviour.rejoin_window
        if prev.live or prev.ended_at is None or prev.started_at is None or not window:
            return False
        if (await self._marks(prev.streamer_key)).session_row is None:
            return False
        at = self._clocks.sane(event.occurred_at, event)
        assert at is not None
        return timedelta(0) <= at - prev.ended_at <= window

    async def _on_end(
        self, event: Event, prev: StreamState | None, order_at: datetime
    ) -> tuple[Event, list[_Candidate]]:
        if prev is not None and not prev.live:
            # Already ended (a repeat), or a disabled/deleted stream that was not live.
            log.info(
                "%s for %s while not live; recorded, not notified", event.kind, prev.streamer_key
            )
            return event, []
        if prev is None and event.details.get("only_if_live"):
            return event, []
        started = event.started_at or (prev.started_at if prev else None)
        ended = self._clocks.sane(event.occurred_at, event)
        assert ended is not None
        if started is not None and ended < started:
            # An end before its start: the two came from clocks that disagree (another
            # source started the session). The bot's clock is the one they share.
            ended = max(order_at, started)
        event = event.with_changes(started_at=started, ended_at=ended)
        await self._save(
            event, prev, order_at, live=False, info=event.live, started_at=started, ended_at=ended
        )
        return event, [_Candidate(event)]

    async def _on_update(
        self, event: Event, prev: StreamState | None, order_at: datetime
    ) -> list[_Candidate]:
        new = event.live
        if new is None:
            return []
        old = prev.info if prev is not None else None
        live = prev.live if prev is not None else False
        await self._save(
            event,
            prev,
            order_at,
            live=live,
            info=new,
            started_at=prev.started_at if prev else None,
            ended_at=prev.ended_at if prev else None,
        )
        if old is None or not live:
            return []
        return [_Candidate(change) for change in _changes(event, old, new)]

    async def _save(
        self,
        event: Event,
        prev: StreamState | None,
        order_at: datetime,
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
            # On the bot's clock (SenderClocks), so never later than this event arrived.
            state_at=max(order_at, prev.state_at) if prev else order_at,
        )
        await self._store.save_stream(state, now=utcnow())

    # -- session cards -------------------------------------------------------------

    async def _marks(self, key: str) -> SessionMarks:
        """The stream's session marks as stored now (none for a stream never seen)."""
        state = await self._store.get_stream(key)
        return state.marks if state is not None else SessionMarks()

    async def _queue(
        self,
        item: _Candidate,
        row: int,
        targets: dict[Target, Plan],
        now: float,
        *,
        change_posts: bool,
    ) -> list[_Row]:
        """Write the outbox rows for one candidate; returns them."""
        store = self._store
        event = item.event
        key = event.streamer_key
        if key is not None and event.kind == ev.LIVE_START and not item.resumed:
            await self._close_last_session(key, now)
            await store.set_session(key, row)
        if key is not None and event.kind == ev.LIVE_END:
            await store.set_end(key, row)
        if item.resumed:
            assert key is not None
            rows = await self._resume_rows(key, targets, now)
        else:
            rows = await self._card_rows(event, targets, now, change_posts=change_posts)
        for target, action, options, not_before in rows:
            await store.add_delivery(
                event_row=row,
                sink=target.sink,
                target=target.target,
                action=action,
                options=options,
                not_before=not_before,
                now=now,
            )
        return rows

    async def _card_rows(
        self, event: Event, targets: dict[Target, Plan], now: float, *, change_posts: bool
    ) -> list[_Row]:
        """Posts, card edits and deletes for an event, per each target's card policy."""
        key = event.streamer_key
        cards = await self._session_cards(event)
        rows: list[_Row] = []
        for target, plan in targets.items():
            due = now
            options = plan.options
            if event.kind == ev.LIVE_END and plan.policy.end_grace:
                # The end waits out the grace period in the outbox, where a restart
                # cannot lose it and a comeback can still call it off.
                due = now + plan.policy.end_grace.total_seconds()
                options = {**options, "due": due}
            if target.sink not in CARD_SINKS:
                rows.append((target, POST, options, due))
                continue
            card = cards.get((target.sink, target.target))
            for action in card_actions(event.kind, plan.policy, has_card=card is not None):
                if action == POST and (
                    plan.muted or (event.kind in CHANGE_KINDS and not change_posts)
                ):
                    continue
                extra = {} if action == POST else {"card": card}
                rows.append((target, action, {**options, **extra}, due))
        if event.kind in CHANGE_KINDS and key is not None:
            if any(t.sink in CARD_SINKS and action == POST for t, action, *_r in rows):
                await self._store.set_change_posted_at(key, now)
            elif not change_posts:
                log.info("%s for %s: no change notice posted (change_cooldown)", event.kind, key)
        return rows

    async def _session_cards(self, event: Event) -> dict[tuple[str, str], int]:
        """The cards of the session this event belongs to: (sink, target) -> delivery id.

        Only changes while live and the end touch cards. A title set while offline
        belongs to no session: the last session's card stays as it ended.
        """
        key = event.streamer_key
        if key is None or event.kind not in (*CHANGE_KINDS, ev.LIVE_END):
            return {}
        if event.kind != ev.LIVE_END:
            state = await self._store.get_stream(key)
            if state is None or not state.live:
                return {}
        session = (await self._marks(key)).session_row
        return await self._store.cards(session) if session is not None else {}

    async def _change_posts_allowed(self, key: str | None, now: float) -> bool:
        """False while a change notice for this stream was posted less than a cooldown ago."""
        if key is None:
            return True
        last = (await self._marks(key)).change_posted_at
        cooldown = self._behaviour.change_cooldown.total_seconds()
        return last is None or now - last >= cooldown

    async def _close_last_session(self, key: str, now: float) -> None:
        """A new session begins: the last one's end, if still held back, goes out first.

        That happens when end_grace is longer than rejoin_window: the comeback is a new
        session, so the old end is announced now, ahead of the new card, not after it.
        """
        end = (await self._marks(key)).end_row
        if end is not None and await self._store.release_held(end, now=now):
            log.info(
                "%s: a new session began during the last one's end_grace; announcing that end now",
                key,
            )

    async def _resume_rows(self, key: str, targets: dict[Target, Plan], now: float) -> list[_Row]:
        """A comeback within rejoin_window: call off the end where it is still waiting,
        and turn the cards back to live where the end was already shown. Nobody is pinged.
        """
        store = self._store
        end = (await self._marks(key)).end_row
        if end is None:
            return []
        cancelled = await store.cancel_pending(
            end, reason="cancelled: the stream came back within end_grace", now=now
        )
        if cancelled:
            log.info(
                "%s came back before its end was announced: %d end notices called off",
                key,
                cancelled,
            )
        shown = await store.reached_targets(end)
        session = (await self._marks(key)).session_row
        cards = await store.cards(session) if session is not None else {}
        rows: list[_Row] = []
        for target, plan in targets.items():
            if (target.sink, target.target) not in shown:
                continue  # the chat never saw the end: its card still says live
            options = {k: v for k, v in plan.options.items() if k != "mention_roles"}
            card = cards.get((target.sink, target.target))
            if card is not None:
                rows.append((target, EDIT, {**options, "card": card}, now))
            elif not plan.muted:
                rows.append((target, POST, options, now))
        return rows

    # -- routing -------------------------------------------------------------------

    async def targets_for(self, event: Event) -> dict[Target, Plan]:
        """Every (sink, target) this event should go to, after subscriptions and mutes.

        Each target's plan carries its card policy (the first matching route's) and the
        delivery options (the Discord roles to ping on live_start).
        """
        key = event.streamer_key
        wanted: dict[Target, Plan] = {}
        for route in self._routes:
            if not route.matches(key, event.kind):
                continue
            policy = route.policy(self._default_policy)
            self._add(wanted, Target("console", ""), policy)
            for channel in route.discord_channels:
                plan = self._add(wanted, Target("discord", str(channel)), policy)
                if plan is not None and event.kind == ev.LIVE_START and route.mention_roles:
                    roles = plan.options.setdefault("mention_roles", [])
                    assert isinstance(roles, list)
                    roles.extend(r for r in route.mention_roles if r not in roles)
            for chat in route.telegram_chats:
                self._add(wanted, Target("telegram", chat), policy)
        if event.kind in ev.NOTIFIED_KINDS:
            for sub in await self._store.subscriptions():
                if glob_match(key or "", sub.pattern):
                    self._add(wanted, Target(sub.sink, sub.target), self._default_policy)
        now = self._clock()
        for target in list(wanted):
            # Mutes are per chat: a forum topic ("-100123/42") follows its chat's mutes.
            chat = target.target.partition("/")[0]
            mutes = await self._store.mutes_for(target.sink, chat, now)
            if any(glob_match(key or "", mute.pattern) for mute in mutes):
                log.info("%s for %s muted in %s %s", event.kind, key, target.sink, target.target)
                if target.sink in CARD_SINKS:
                    wanted[target].muted = True
                else:
                    del wanted[target]
        return wanted

    def _add(self, wanted: dict[Target, Plan], target: Target, policy: CardPolicy) -> Plan | None:
        if target.sink not in self._sinks:
            return None
        # The first route that reaches a chat decides its policy.
        return wanted.setdefault(target, Plan(policy))


# (target, action, options, not_before) of one outbox row to write.
_Row = tuple[Target, str, dict[str, object], float]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# A saved state time that says nothing (see `_heal`): no event is older than it.
_NO_TIME: Final = datetime.min.replace(tzinfo=UTC)


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
