"""The dispatch stage: committed events -> stream state and outbox rows.

It consumes the events ingest.py stored, in the order they were stored (so in order per
streamer), a batch per transaction (a savepoint per event only when one fails). For
each: read the stream's state once, reduce (streams.py, pure), route (routing.py), mute
(muting.py), plan the session-card rows (cards.py) and write one outbox row per (event,
target, action); then save the stream (state and session marks) and mark the event
dispatched. The stage reads a batch with its streams in one call, and writes them and
its marks in one at the end (`_BatchWrites`). Alertmanager's notify pipeline (a stage
per job) is the model.

An event committed but not dispatched when the process died is still marked so in the
database, and is dispatched after the restart, exactly once: its rows and the mark that
it was dispatched commit together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final

from bot import events as ev
from bot.config import BehaviourConfig, Route, Target
from bot.errors import StoreUnavailable, TransactionAborted
from bot.events import Event, LiveInfo, utcnow
from bot.logs import ThrottledLog
from bot.pipeline.cards import CHANGE_KINDS, CardPolicy, SessionCards, StreamContext
from bot.pipeline.clocks import SenderClocks
from bot.pipeline.ingest import DIGEST_WINDOW, insert_new
from bot.pipeline.muting import apply_mutes, mutes_by_chat
from bot.pipeline.routing import (
    CONSOLE,
    Moves,
    Plan,
    Router,
)
from bot.pipeline.streams import StreamReducer, heal, needs_session_start
from bot.store import Mute, NewDelivery, SessionMarks, Store, StreamState, Subscription

log = logging.getLogger(__name__)

#: Events dispatched per transaction: enough to share commits under load, few enough
#: that one transaction never holds the write lock for long.
DISPATCH_BATCH: Final = 100
#: First and longest pause while the database refuses the dispatch stage's writes.
RETRY_FIRST_SECONDS: Final = 0.2
RETRY_MAX_SECONDS: Final = 15.0
#: Dispatched events logged one by one per minute before the rest are summarised.
DISPATCHED_LOG_BURST: Final = 60


@dataclass(slots=True)
class Dispatched:
    """What dispatching one event did: the events notified and the rows written."""

    notified: list[Event] = field(default_factory=list)
    deliveries: int = 0
    sinks: set[str] = field(default_factory=set)


@dataclass(slots=True)
class AcceptResult:
    """What `Dispatcher.accept` did: a duplicate, or the event stored and dispatched."""

    duplicate: bool
    event_row: int | None = None
    notified: list[Event] = field(default_factory=list)
    deliveries: int = 0


@dataclass(frozen=True, slots=True)
class _BatchView:
    """What every event of one batch is routed and muted against, read once."""

    subscriptions: Sequence[Subscription]
    mutes: dict[tuple[str, str], list[Mute]]
    now: float
    #: Chats that moved (old id -> new id): routes naming the old one reach the new.
    moves: Moves = field(default_factory=dict)


class _EventWrites:
    """How dispatching an event reads its stream and writes what it did: here at once,
    each event on its own (in a savepoint of its own, where a batch keeps one per event).
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def stream(self, key: str) -> StreamState | None:
        return await self._store.get_stream(key)

    async def save(self, state: StreamState) -> None:
        """The stream after the event: its state and its session marks, in one write."""
        await self._store.save_streams([state], now=utcnow())

    async def mark(self, row: int, event: Event, *, notified: bool) -> None:
        await self._store.mark_dispatched(row, event, notified=notified)

    async def write_marks(self) -> None:
        """Before an event is read back: nothing waits here."""


class _BatchWrites(_EventWrites):
    """A batch's reads done ahead and writes put off to its end, to spare round trips:
    each store call is one on PostgreSQL, and an event with nowhere to go cost four (its
    stream read, its state and its session written, its mark); now a batch costs none
    of its own for all of its events beyond its first read and its last write
    (`undispatched_with_streams`, `save_dispatched`).

    `streams` holds every stream of the batch, as it began and then as each event left
    it, so a stream's later events in the batch see what the earlier ones did. Only a
    batch that commits, or is done again as a whole, works this way: one that keeps
    each event in a savepoint writes each event's work in it (`_EventWrites`).
    """

    def __init__(self, store: Store, streams: dict[str, StreamState | None]) -> None:
        super().__init__(store)
        self._streams = streams
        self._changed: dict[str, StreamState] = {}
        self._marks: list[tuple[int, Event, bool]] = []

    @classmethod
    def of(
        cls, store: Store, batch: Sequence[tuple[int, Event]], found: dict[str, StreamState]
    ) -> _BatchWrites:
        """For a batch whose streams were read with it (`undispatched_with_streams`)."""
        keys = dict.fromkeys(k for _row, e in batch if (k := e.streamer_key) is not None)
        return cls(store, {key: found.get(key) for key in keys})

    async def stream(self, key: str) -> StreamState | None:
        if key not in self._streams:
            self._streams[key] = await self._store.get_stream(key)
        return self._streams[key]

    async def save(self, state: StreamState) -> None:
        self._streams[state.streamer_key] = state
        self._changed[state.streamer_key] = state

    async def mark(self, row: int, event: Event, *, notified: bool) -> None:
        self._marks.append((row, event, notified))

    async def write_marks(self) -> None:
        if self._marks:
            await self._store.mark_many_dispatched(self._marks)
            self._marks.clear()

    async def write(self) -> None:
        """What the batch put off, before its transaction commits."""
        await self._store.save_dispatched(list(self._changed.values()), self._marks, now=utcnow())
        self._changed.clear()
        self._marks.clear()


class Dispatcher:
    """Applies stored events: state, routes, mutes, card rules, outbox rows."""

    def __init__(
        self,
        *,
        store: Store,
        routes: Sequence[Route],
        sinks: Iterable[str],
        card_sinks: Iterable[str] | None = None,
        on_queued: Callable[[set[str]], None] | None = None,
        behaviour: BehaviourConfig | None = None,
        clock: Callable[[], float] = time.time,
        digest_window: timedelta = DIGEST_WINDOW,
    ) -> None:
        self._store = store
        self._sinks = frozenset(sinks)
        # Sinks whose messages can be edited and deleted later: every chat platform.
        self._card_sinks = (
            frozenset(card_sinks) if card_sinks is not None else self._sinks - {CONSOLE.sink}
        )
        self._on_queued = on_queued
        self._clock = clock
        self._digest_window = digest_window
        self._clocks = SenderClocks()
        # One line per event with where it went, as the "accepted" line is per webhook:
        # a flood is summarised once a minute instead of costing the loop a line each.
        self._dispatched_log = ThrottledLog(log, "dispatched events", burst=DISPATCHED_LOG_BURST)
        self._routes: tuple[Route, ...] = ()
        self.reconfigure(routes=routes, behaviour=behaviour)

    def reconfigure(
        self, *, routes: Sequence[Route], behaviour: BehaviourConfig | None = None
    ) -> None:
        """Use these routes and [behaviour] for events dispatched from now on (SIGHUP)."""
        # Without a config (unit tests, tools) ends are announced at once.
        behaviour = behaviour or BehaviourConfig(end_grace=timedelta(0))
        self._routes = tuple(routes)
        self._router = Router(
            routes=routes,
            sinks=self._sinks,
            default_policy=CardPolicy.from_behaviour(behaviour),
            behaviour=behaviour,
        )
        self._reducer = StreamReducer(clocks=self._clocks, rejoin_window=behaviour.rejoin_window)
        self._cards = SessionCards(
            store=self._store,
            card_sinks=self._card_sinks,
            change_cooldown=behaviour.change_cooldown,
        )

    # -- the stage's entry point ---------------------------------------------------

    async def dispatch_pending(self, *, limit: int = DISPATCH_BATCH) -> int:
        """Dispatch up to `limit` stored events in one transaction; how many there were.

        An event that fails for a reason of its own (a bug, not the database) is logged
        and marked dispatched unnotified, so it never holds up the events after it. The
        batch goes without a savepoint per event (two statements each) unless one fails:
        then it is done again, each event in its own.
        """
        try:
            count, touched = await self._dispatch_all(limit)
        except StoreUnavailable:
            raise
        except Exception:
            count, touched = await self._dispatch_each(limit)
        self._woken(touched)
        return count

    async def _dispatch_all(self, limit: int) -> tuple[int, set[str]]:
        store = self._store
        touched: set[str] = set()
        async with store.transaction():
            batch, streams = await store.undispatched_with_streams(limit=limit)
            if batch:
                view = await self._view()
                writes = _BatchWrites.of(store, batch, streams)
                for row, event in batch:
                    touched |= (await self._dispatch(row, event, view, writes)).sinks
                await writes.write()
        return len(batch), touched

    async def _dispatch_each(self, limit: int) -> tuple[int, set[str]]:
        store = self._store
        touched: set[str] = set()
        async with store.transaction():
            batch = await store.undispatched(limit=limit)
            if not batch:
                return 0, touched
            view = await self._view()
            writes = _EventWrites(store)
            for row, event in batch:
                try:
                    async with store.savepoint():
                        touched |= (await self._dispatch(row, event, view, writes)).sinks
                except (TransactionAborted, StoreUnavailable):
                    raise
                except Exception:
                    log.exception(
                        "could not dispatch %s %s from %s; recorded, not notified",
                        event.kind,
                        event.event_id,
                        event.source,
                    )
                    await store.mark_dispatched(row, event, notified=False)
        return len(batch), touched

    # -- one event, stored and dispatched at once (tools and tests) ----------------

    async def accept(self, event: Event, *, raw: bytes | None = None) -> AcceptResult:
        """Store the event and dispatch it, in one transaction."""
        [outcome] = await self.accept_many([(event, raw)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def accept_many(
        self, batch: Sequence[tuple[Event, bytes | None]]
    ) -> list[AcceptResult | Exception]:
        """Store and dispatch several events in one transaction, each in a savepoint.

        The running bot takes the two steps apart (ingest.py answers the webhook after
        the first); this joins them for callers that want the outcome at once. The
        result list holds, in order, each one's AcceptResult or the exception it raised;
        a failing COMMIT raises, and then none of them was stored.
        """
        store = self._store
        outcomes: list[AcceptResult | Exception] = []
        touched: set[str] = set()
        async with store.transaction():
            view = await self._view()
            writes = _EventWrites(store)
            for event, raw in batch:
                try:
                    async with store.savepoint():
                        stored = await insert_new(
                            store, event, raw=raw, digest_window=self._digest_window
                        )
                        if stored.duplicate or stored.event_row is None:
                            outcomes.append(AcceptResult(duplicate=True))
                            continue
                        done = await self._dispatch(stored.event_row, event, view, writes)
                except TransactionAborted:
                    # The database rolled the whole transaction back itself (disk full,
                    # I/O error): nothing of the batch is stored; fail it with the cause.
                    raise
                except Exception as exc:
                    outcomes.append(exc)
                    continue
                outcomes.append(
                    AcceptResult(
                        duplicate=False,
                        event_row=stored.event_row,
                        notified=done.notified,
                        deliveries=done.deliveries,
                    )
                )
                touched |= done.sinks
        self._woken(touched)
        return outcomes

    # -- the stages, for one event -------------------------------------------------

    async def _view(self) -> _BatchView:
        now = self._clock()
        inputs = await self._store.routing_inputs(now)
        return _BatchView(
            subscriptions=inputs.subscriptions,
            mutes=mutes_by_chat(inputs.mutes),
            now=now,
            moves=inputs.moves,
        )

    async def _dispatch(
        self, row: int, event: Event, view: _BatchView, writes: _EventWrites
    ) -> Dispatched:
        store = self._store
        order_at = self._clocks.order_time(event)
        key = event.streamer_key
        saved = await writes.stream(key) if key is not None else None
        prev = saved
        if needs_session_start(prev, event):
            assert prev is not None
            session = prev.marks.session_row
            # The session's start may be earlier in this batch, enriched but unwritten.
            await writes.write_marks()
            start = await store.load_event(session) if session is not None else None
            prev = heal(prev, event, start)
        else:
            prev = heal(prev, event, None)
        reduced = self._reducer.reduce(prev, event, order_at)
        stored = reduced.event
        stream = StreamContext(
            key=key,
            state=reduced.state or prev,
            marks=prev.marks if prev is not None else SessionMarks(),
        )
        # Route filters look at the stream as it is after the event.
        now_info = stream.state.info if stream.state is not None else None
        # Recorded kinds only count as notified when some route asks for them.
        plans = [(item, self._targets(item.event, view, now_info)) for item in reduced.candidates]
        plans = [(i, t) for i, t in plans if t or i.event.kind in ev.NOTIFIED_KINDS]
        await writes.mark(row, stored, notified=any(item.event is stored for item, _t in plans))
        done = Dispatched()
        # Decided once per event: a title and a category change from one update are
        # one change, and both may post under the cooldown.
        change_posts = any(i.event.kind in CHANGE_KINDS for i, _t in plans) and (
            self._cards.change_posts_allowed(stream, view.now)
        )
        for item, targets in plans:
            item_row = row
            if item.event is not stored:
                derived_row = await store.insert_event(item.event, notified=True, parent=row)
                if derived_row is None:
                    continue
                item_row = derived_row
            rows = await self._cards.rows(
                item, item_row, targets, stream, view.now, change_posts=change_posts
            )
            # One write for all the event's chats (not one each). Not held to the
            # batch's end: a later event's cards, in this batch too, read these rows.
            await store.add_deliveries(
                [
                    NewDelivery(
                        event_row=item_row if planned.event_row is None else planned.event_row,
                        sink=planned.target.sink,
                        target=planned.target.target,
                        action=planned.action,
                        options=planned.options,
                        not_before=planned.not_before,
                    )
                    for planned in rows
                ],
                now=view.now,
            )
            done.deliveries += len(rows)
            done.sinks.update(planned.target.sink for planned in rows)
            done.notified.append(item.event)
        # The stream as the event left it: its state and session marks, in one write.
        after = reduced.state if reduced.state is not None else saved
        if after is not None and (reduced.state is not None or stream.marks != after.marks):
            await writes.save(replace(after, marks=stream.marks))
        self._dispatched_log.log(
            "dispatched %s %s for %s: %d deliveries",
            event.kind,
            event.event_id,
            key or "-",
            done.deliveries,
        )
        return done

    def _targets(
        self, event: Event, view: _BatchView, info: LiveInfo | None = None
    ) -> dict[Target, Plan]:
        at = datetime.fromtimestamp(view.now, UTC)
        plans = self._router.plan(event, view.subscriptions, view.moves, info=info, at=at)
        apply_mutes(
            plans,
            view.mutes,
            streamer_key=event.streamer_key,
            kind=event.kind,
            card_sinks=self._card_sinks,
        )
        return plans

    def _woken(self, sinks: set[str]) -> None:
        if sinks and self._on_queued is not None:
            self._on_queued(sinks)


class DispatchStage:
    """Runs the dispatcher over whatever ingest stored, until stopped."""

    def __init__(self, dispatcher: Dispatcher, *, batch: int = DISPATCH_BATCH) -> None:
        self._dispatcher = dispatcher
        self._batch = batch
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        #: Seconds between looks at the store when nothing woke the stage: events
        #: stored by a run that ended before dispatching them are picked up at start.
        self.poll_seconds = 5.0
        #: The error that keeps the stage from dispatching (for /healthz), None while
        #: it works; the database being unavailable is /healthz's `database` instead.
        self.error: str | None = None

    def wake(self) -> None:
        """Events were committed: dispatch them now."""
        self._idle.clear()
        self._wakeup.set()

    async def idle(self) -> None:
        """Wait until everything stored so far is dispatched (tests, tools)."""
        self.wake()
        await self._idle.wait()

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set; an event half-way is finished first (its
        transaction is short), the rest waits in the store for the next start."""
        delay = RETRY_FIRST_SECONDS
        # (A route naming a chat that moved is said once per start by the preflight,
        # which finds the move at the platform: bot.preflight, TargetProblems.)
        self._wakeup.set()  # what the last run left undispatched
        while not stop.is_set():
            self._wakeup.clear()
            try:
                count = await self._dispatcher.dispatch_pending(limit=self._batch)
            except StoreUnavailable as exc:
                # The store logs the outage once; here only how long we wait.
                log.debug("dispatch: database unavailable (%s); next try in %.1fs", exc, delay)
                await self._sleep(stop, delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            except Exception as exc:
                # Not one event's fault (those are set aside one by one): reading the
                # batch itself failed. The bot stays up, webhooks are still stored, and
                # the stage tries again, logging each time with growing pauses.
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception(
                    "dispatch: could not dispatch stored events; next try in %.0fs", delay
                )
                await self._sleep(stop, delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            delay = RETRY_FIRST_SECONDS
            self.error = None
            if count >= self._batch:
                await asyncio.sleep(0)  # more are waiting: give webhooks the loop, go on
                continue
            # Fewer than a batch was all there was when it was read; what was stored
            # since then woke the stage. Looking again regardless was a write
            # transaction for nothing after every batch, which on PostgreSQL held the
            # write lock the senders' claims wait for.
            if not self._wakeup.is_set():
                self._idle.set()
                await self._sleep(stop, self.poll_seconds)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*waiters, return_exceptions=True)
