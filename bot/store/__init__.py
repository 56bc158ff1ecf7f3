"""The storage seam: what the bot keeps, as an async `Store` Protocol and its row types.

Everything outside this package talks to the database through these Protocols, one per
aggregate (events, streams, mutes, subscriptions, outbox, card refs, chat moves), combined
in `Store`. A backend is one module here that implements `Store` and passes the contract suite
(tests/store_contract.py): `sqlite.py` today, `postgres.py` next. Backend errors never
leak: every "the database cannot do this now" surfaces as `bot.errors.StoreUnavailable`.

Transactions: each method is atomic on its own; `async with store.transaction():` makes
the calls inside it, from the same task, one atomic unit, and `store.savepoint()` nests a
step that can fail alone. Nothing but
database work may be awaited inside a transaction (no sends, no sleeps): a backend may
hold a lock or a pooled connection for its whole length.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bot.errors import StoreUnavailable
from bot.events import Event, LiveInfo

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bot.config import StorageConfig

log = logging.getLogger(__name__)

#: The SQLite database's file name when [storage] names none (beside bot.toml).
DEFAULT_DATABASE = "bot.sqlite3"

#: Every state a delivery row can be in.
DELIVERY_STATES = ("pending", "sending", "sent", "failed", "cancelled")

# -- row types -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionMarks:
    """A stream's session bookkeeping: the live_start event row that opened its current
    (or last) session, the live_end row that closed it, and when a change notice was last
    queued as a post (epoch seconds)."""

    session_row: int | None = None
    end_row: int | None = None
    change_posted_at: float | None = None


@dataclass(frozen=True, slots=True)
class StreamState:
    """What the bot knows about one stream: whether it is live, and since when."""

    streamer_key: str
    display_name: str | None
    url: str | None
    live: bool
    info: LiveInfo
    started_at: datetime | None
    ended_at: datetime | None
    state_at: datetime
    #: Read and saved with the state, so a dispatch reads and writes each stream once.
    marks: SessionMarks = field(default_factory=SessionMarks)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row as a worker claims it: an event to deliver to one chat of one sink."""

    id: int
    event_row: int
    sink: str
    target: str
    action: str
    options: dict[str, Any]
    attempts: int
    created_at: float
    not_before: float


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A delivery to queue (`OutboxStore.add_deliveries`): the fields a dispatch decides."""

    event_row: int
    sink: str
    target: str
    not_before: float
    action: str = "post"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    """One outbox row in full, with its event's kind and streamer (the CLI, tests)."""

    id: int
    event_row: int
    sink: str
    target: str
    action: str
    options: dict[str, Any]
    state: str
    attempts: int
    created_at: float
    updated_at: float
    not_before: float
    last_error: str | None
    message_id: str | None
    kind: str
    streamer_key: str | None


@dataclass(frozen=True, slots=True)
class Mute:
    """A mute of one chat: every stream (pattern "*") or the streams a glob matches."""

    sink: str
    target: str
    pattern: str
    until: float | None


@dataclass(frozen=True, slots=True)
class Subscription:
    """Streams matching `pattern` are routed to this chat, added at run time by a command."""

    sink: str
    target: str
    pattern: str


@dataclass(frozen=True, slots=True)
class RoutingInputs:
    """What the dispatch stage routes and mutes a batch of events against."""

    subscriptions: list[Subscription]
    #: The mutes in force, of every chat.
    mutes: list[Mute]
    #: Chats that moved: (sink, old id) -> new id.
    moves: dict[tuple[str, str], str]


@dataclass(slots=True)
class OutboxCounts:
    """How many deliveries are in each state, and the oldest still waiting."""

    by_state: dict[str, int] = field(default_factory=dict)
    oldest_pending_created: float | None = None


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What one `prune` call removed, and whether more is left for another call."""

    events: int = 0
    deliveries: int = 0
    more: bool = False


@dataclass(slots=True)
class WriteHealth:
    """Whether the last write that changed something went through, and since when.

    Reads keep working on a full disk, so only writes decide: the state changes on a
    write that commits changes (ok) or on any failed write (unavailable). A transaction
    that changed nothing tells nothing. Each change of state is logged once, so a flood
    of refused webhooks does not flood the log.
    """

    ok: bool = True
    error: str | None = None
    since: float = field(default_factory=time.time)
    failures: int = 0

    def succeeded(self) -> None:
        """A write committed."""
        if not self.ok:
            log.warning(
                "database writable again after %.0fs (%d refused calls meanwhile)",
                time.time() - self.since,
                self.failures,
            )
            self.ok, self.error, self.since, self.failures = True, None, time.time(), 0

    def failed(self, exc: StoreUnavailable) -> None:
        """A write failed: the database is unavailable until a write succeeds."""
        self.failures += 1
        error = str(exc)
        if self.ok:
            log.error(
                "database unavailable (%s); webhooks are answered 503 and deliveries wait"
                " until it recovers",
                error,
            )
            self.ok, self.since = False, time.time()
        elif error != self.error:
            log.error("database still unavailable, now: %s", error)
        self.error = error


# -- the Protocols, one per aggregate ----------------------------------------------------


class EventStore(Protocol):
    """Normalized events, unique on (source, event id)."""

    async def insert_event(
        self,
        event: Event,
        *,
        notified: bool = False,
        raw: bytes | None = None,
        parent: int | None = None,
        dispatched: bool = True,
    ) -> int | None:
        """Store an event; its row id, or None when (source, event id) exists already.

        An event stored with `dispatched=False` waits for the dispatch stage
        (`undispatched`), which applies it and then calls `mark_dispatched`.
        """

    async def insert_new_events(
        self, batch: Sequence[tuple[Event, bytes | None]]
    ) -> list[int | None]:
        """Store events (with their raw bodies) for the dispatch stage, in this order, as
        `insert_event(event, raw=raw, dispatched=False)` each would: per event its row id,
        or None for a duplicate (of a stored event or of one earlier in the batch). All
        or none: one that cannot be stored fails the call (the intake then stores them
        one by one). One statement where the backend can (the intake's webhooks)."""

    async def undispatched(self, *, limit: int = 100) -> list[tuple[int, Event]]:
        """Events stored but not yet dispatched, as (row id, event), in the order stored."""

    async def undispatched_with_streams(
        self, *, limit: int = 100
    ) -> tuple[list[tuple[int, Event]], dict[str, StreamState]]:
        """`undispatched`, and the saved states of those events' streams by key (as
        `get_streams` gives them): one statement where the backend can (a dispatch
        batch's start)."""

    async def mark_dispatched(self, row_id: int, event: Event, *, notified: bool) -> None:
        """The dispatch stage applied the event: store it as enriched, and whether it was
        notified anywhere."""

    async def mark_many_dispatched(self, marks: Sequence[tuple[int, Event, bool]]) -> None:
        """`mark_dispatched` for several events, as (row id, enriched event, notified):
        one statement where the backend can (the end of a dispatch batch)."""

    async def count_undispatched(self) -> int:
        """How many stored events wait for the dispatch stage (the backlog)."""

    async def retire_event_id(
        self, source: str, event_id: str, *, received_before: datetime
    ) -> bool:
        """Free an event id stored before `received_before` for a new event; True if freed.

        The old row and the events derived from it stay, under `<id>@<row id>`, so the key
        stays unique and the history complete. Call it in the transaction that inserts the
        new event.
        """

    async def load_event(self, row_id: int) -> Event:
        """The stored event of a row; KeyError if there is none."""

    async def find_event(self, source: str, event_id: str) -> Event | None:
        """The stored event with this (source, event id), if there is one."""

    async def recent_events(self, kind: str, *, limit: int = 10) -> list[Event]:
        """The latest stored events of `kind`, newest first (derived ones included)."""

    async def count_events(self) -> int:
        """How many events are stored (derived ones included)."""

    async def prune(self, *, before: datetime, limit: int = 1000) -> PruneResult:
        """Remove events received before `before` with their deliveries, in one transaction
        of at most about `limit` rows (an event and its deliveries go together); call again
        while `more` is true.

        An event goes only when each of its deliveries finished (sent, failed, cancelled)
        before `before` too, and nothing still needed refers to it: it is not the opening
        live_start (whose posts are the cards) or the live_end of a stream that is live,
        whose end is recent or still held back or going out; no delivery still to go out
        edits or deletes a card it posted; no kept event was derived from it. A stream
        whose old session is pruned forgets that session (its marks become None).

        Pruning frees the event's (source, event id) for a new event. That is safe only
        because no sender repeats a webhook for as long as the shortest retention the
        config accepts (`bot.config.MIN_RETENTION`, 2 days: longer than the 24 h
        DIGEST_WINDOW and Kick's 48 h redelivery window), so a retry always finds its
        event still stored and no pruned event is notified twice.
        """


class StreamStore(Protocol):
    """Each stream's live state and session marks."""

    async def get_stream(self, key: str) -> StreamState | None:
        """The saved state of a stream, with its session marks; None if never seen."""

    async def get_streams(self, keys: Sequence[str]) -> dict[str, StreamState]:
        """The saved states of several streams, by key, each as `get_stream` gives it;
        streams never seen are left out. One statement where the backend can (the
        streams of a dispatch batch)."""

    async def save_streams(self, states: Sequence[StreamState], *, now: datetime) -> None:
        """Insert or replace streams' states with their session marks (each state's
        `marks`); a key given twice keeps its last state. One statement where the
        backend can: what an event, or a dispatch batch, did to its streams."""

    async def save_dispatched(
        self,
        states: Sequence[StreamState],
        marks: Sequence[tuple[int, Event, bool]],
        *,
        now: datetime,
    ) -> None:
        """What a dispatch batch put off to its end: `save_streams(states)` and
        `mark_many_dispatched(marks)`, all or none, in one statement where the backend
        can."""

    async def live_streams(self) -> list[StreamState]:
        """Every stream currently live, longest-running first."""

    async def known_streamers(self) -> list[str]:
        """Every streamer key ever seen, sorted."""


class MuteStore(Protocol):
    """Mutes of chats, optionally expiring."""

    async def mutes_for(self, sink: str, target: str, now: float) -> list[Mute]:
        """The mutes of one chat still in force at `now`."""

    async def add_mute(
        self, mute: Mute, *, created_by: str | None = None, now: float | None = None
    ) -> None:
        """Mute a chat (replacing an earlier mute of the same pattern)."""

    async def remove_mute(self, sink: str, target: str, pattern: str | None) -> int:
        """Unmute one pattern, or every pattern when `pattern` is None; how many went."""

    async def active_mutes(self, now: float) -> list[Mute]:
        """Every mute of every chat still in force at `now`."""


class SubscriptionStore(Protocol):
    """Run-time routes added by /subscribe."""

    async def subscriptions(self) -> list[Subscription]:
        """Every run-time subscription, oldest first."""

    async def add_subscription(
        self, sub: Subscription, *, created_by: str | None = None, now: float | None = None
    ) -> bool:
        """Add a subscription; False if this chat already had that pattern."""

    async def remove_subscription(self, sub: Subscription) -> bool:
        """Remove a subscription; False if there was none."""


class OutboxStore(Protocol):
    """Delivery rows: one per (event, chat, action), claimed by the workers."""

    async def add_delivery(
        self,
        *,
        event_row: int,
        sink: str,
        target: str,
        options: dict[str, Any] | None = None,
        action: str = "post",
        not_before: float,
        now: float,
    ) -> int:
        """Queue one delivery; its id."""

    async def add_deliveries(self, deliveries: Sequence[NewDelivery], *, now: float) -> None:
        """Queue several deliveries at once (an event's, in one round trip on a server),
        all or none, as if each were added in turn."""

    async def claim_due(
        self, sink: str, *, now: float, busy_targets: Sequence[str] = (), limit: int = 50
    ) -> list[Delivery]:
        """Mark due pending deliveries of a sink as sending and return them, oldest first.

        Targets in `busy_targets` are skipped, so one slow chat never holds up another and
        one chat's messages still go out in order.
        """

    async def next_due(
        self, sink: str, *, busy_targets: Sequence[str] = (), now: float | None = None
    ) -> float | None:
        """When the earliest pending delivery of a sink, not for a busy target, is due.

        A store several processes share tells, by `now` (the caller's clock), the chats
        another process is sending to: their rows are due for this one only once that
        process's lease runs out, like its claims.
        """

    async def mark_sent(self, delivery_id: int, *, message_id: str | None, now: float) -> None:
        """The platform accepted the message; remember its id for later edits."""

    async def mark_retry(
        self, delivery_id: int, *, error: str, not_before: float, now: float
    ) -> None:
        """Put a delivery back in the queue for a later attempt."""

    async def mark_failed(self, delivery_id: int, *, error: str, now: float) -> None:
        """Give up on a delivery."""

    async def mark_cancelled(self, delivery_id: int, *, reason: str, now: float) -> None:
        """Call off one delivery (a mute set after it was queued, say)."""

    async def release_claimed(self, delivery_ids: Sequence[int], *, now: float) -> None:
        """Hand claimed deliveries that were never tried back to the queue, attempt undone."""

    async def requeue_in_flight(self) -> int:
        """At start-up: deliveries a crash left 'sending' go back to 'pending'; how many."""

    async def outbox_counts(self, *, now: float | None = None) -> OutboxCounts:
        """Deliveries per state and when the oldest one waiting to go out became due.

        A delivery held back on purpose (an end notice in its `end_grace`, never tried
        yet) is scheduled, not waiting, so it does not count as the oldest.
        """

    async def oldest_due(self, sinks: Sequence[str]) -> float | None:
        """The earliest `not_before` of the pending deliveries of these sinks."""

    async def list_deliveries(
        self, states: Sequence[str] = ("pending", "sending", "failed")
    ) -> list[DeliveryInfo]:
        """Deliveries in these states, oldest first."""

    async def deliveries_for_event(self, event_row: int) -> list[DeliveryInfo]:
        """Every delivery row of one event, in the order they were queued."""

    async def retry_failed(self, *, now: float) -> int:
        """Re-queue every failed delivery, due now, attempts kept; how many."""

    async def release_held(self, event_row: int, *, now: float) -> int:
        """Make an event's deliveries that are held back for later due now; how many."""

    async def cancel_pending(self, event_row: int, *, reason: str, now: float) -> int:
        """Call off an event's deliveries that were not sent yet; how many."""

    async def failed_count(self, sink: str, target: str) -> int:
        """How many deliveries to one chat (or its forum topics) failed for good."""

    async def sent_elsewhere(self, sink: str, chat: str, *, since: float) -> list[float]:
        """When each delivery to `chat` (its forum topics included) that another
        process, or an earlier run of this one, recorded as sent after `since` was
        recorded, oldest first: what a per-chat rate limit still counts when this
        process is to send there next."""


class CardStore(Protocol):
    """Card refs: which delivery posted a session's message in each chat, and its id."""

    async def cards(self, event_row: int) -> dict[tuple[str, str], int]:
        """The deliveries that posted an event's messages (a session's cards), by chat."""

    async def reached_targets(self, event_row: int) -> set[tuple[str, str]]:
        """The (sink, target) pairs an event's deliveries went or are going out to.

        Cancelled deliveries do not count; failed ones do, since a failed card edit may
        have left anything on screen.
        """

    async def delivery_status(self, delivery_id: int) -> tuple[str, str | None]:
        """(state, platform message id) of one delivery; KeyError if there is none."""

    async def set_message_id(self, delivery_id: int, message_id: str) -> None:
        """Point a delivery at another platform message (a card posted anew)."""


class MoveStore(Protocol):
    """Chats that were given a new id (a Telegram group upgraded to a supergroup): each
    move is followed once, and remembered so a route naming the old id still reaches it."""

    async def move_target(self, sink: str, old: str, new: str, *, now: float) -> bool:
        """Follow a chat to its new id, in one transaction: its subscriptions and mutes,
        and its deliveries in every state (pending ones go to `new`; sent and failed ones
        take their card refs and failure counts along), its forum topics' ("old/7")
        included; and remember old -> new. False, changing nothing, when this chat's move
        was recorded already (whoever learns of it first moves it, exactly once).

        Where `new` already has the same subscription or mute, the two merge (a mute
        lasts as long as the longer of them); where it already has a delivery of the
        same event and action, the old one stays behind, called off if not yet sent.
        """

    async def moved_targets(self, sink: str | None = None) -> dict[tuple[str, str], str]:
        """Every recorded move (of one sink's chats, when given): (sink, old) -> new."""


class SourceStateStore(Protocol):
    """Small values a source keeps between runs, by (source name, key)."""

    async def source_value(self, source: str, key: str) -> str | None:
        """The value stored under `key` for `source`, or None."""

    async def set_source_value(self, source: str, key: str, value: str, *, now: float) -> None:
        """Store `value` under `key` for `source` (replacing what was there), committed."""


class ProcessStore(Protocol):
    """The bot processes on the database: several share a PostgreSQL one, and split the
    outbox and the platforms' global rate limits between them."""

    async def heartbeat(self, *, now: float) -> int:
        """This process is alive at `now`: its row is renewed and the leases of the
        deliveries it is sending are extended; processes silent for longer than the lease
        are forgotten (their deliveries are taken over once their leases run out). How
        many processes are alive, this one included."""

    async def unaware_of(self, joined: float, *, now: float, quiet: float) -> int:
        """How many other processes may not have counted one whose row was there by
        `joined`: heard from within `quiet` seconds of `now`, their last heartbeat before
        `joined` (each counts the processes after writing its own row, so one that beat
        later has counted it). A process that joins waits for 0 before its first request
        to a platform. Always 0 on SQLite, which one process uses alone."""

    async def hold_role(self, role: str) -> bool:
        """Whether this process holds `role` (taking it when it is free): a job only one
        process on the database may do at a time, such as Telegram's long poll. A held
        role stays this process's while it runs, and passes to the next process that
        asks once its holder is gone. Ask again now and then: a role can be lost (the
        database connection that held it broke) and must then be given up."""

    async def release_role(self, role: str) -> None:
        """Give `role` up (another process may take it now); nothing when not held."""

    def on_deliveries_queued(self, callback: Callable[[str], None]) -> None:
        """Call `callback(sink)` whenever a process on the database (another, or this
        one) has committed deliveries for `sink`, so that every process's outbox worker
        looks at once rather than at its next idle poll. Nothing on SQLite, which one
        process uses alone. Listening starts at the next heartbeat, and is taken up again
        there after the database was lost."""

    async def take_turn(self, name: str, spacing: float) -> float:
        """Take the turn at `name`, a thing the bot's processes do one at a time at least
        `spacing` seconds apart (Discord's IDENTIFY, limited per bot token), if the last
        one was taken that long ago: 0, and it is this process's now. Else nothing is
        taken and the answer is the seconds until it may be (at most `spacing`): ask
        again then. Read on the database's clock where it has one, so the processes'
        clocks need not agree; a last turn in the future (a clock that jumped back)
        does not count."""


class Store(
    EventStore,
    StreamStore,
    MuteStore,
    SubscriptionStore,
    OutboxStore,
    CardStore,
    MoveStore,
    SourceStateStore,
    ProcessStore,
    Protocol,
):
    """The whole store: every aggregate, plus its lifecycle and health."""

    #: Where the data lives, for messages (a file for SQLite, a redacted URL otherwise).
    location: str
    #: The outcome of the last write attempt (for /healthz and the log).
    health: WriteHealth
    #: Whether other bot processes may use the database at the same time (PostgreSQL);
    #: SQLite's lock file keeps its database to one.
    shared: bool
    #: This process's place among the live ones at its last heartbeat, by id (0: the
    #: first), so that they agree who takes what of a limit does not divide evenly.
    rank: int

    async def open(self) -> None:
        """Connect, creating and migrating the schema as needed."""

    async def close(self) -> None:
        """Let go of every connection (idempotent)."""

    async def schema_version(self) -> int:
        """The schema version the database is at."""

    async def routing_inputs(self, now: float) -> RoutingInputs:
        """`subscriptions()`, `active_mutes(now)` and `moved_targets()` at once: one
        statement where the backend can (every dispatch batch reads all three)."""

    def transaction(self, *, serial: bool = True) -> AbstractAsyncContextManager[None]:
        """One write transaction; rolled back if the block raises.

        Write transactions run one at a time on the database (`serial`), so that a
        read-then-write step (a stream's state, a card's refs, a claim) needs no other
        lock. `serial=False` is for a transaction that only inserts rows a unique key
        dedupes (the intake's new events, ingest.py): it may run beside the others where
        the backend can (PostgreSQL, several processes); SQLite's writes are serial
        whatever it says.
        """

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested step inside a transaction; only its own changes roll back if it raises."""

    async def check(self) -> str:
        """'ok', or what is wrong with the database (for /healthz)."""

    async def probe_write(self) -> None:
        """Write and commit one row: StoreUnavailable while writes are refused; a success
        marks the database writable again (`health`)."""


#: Query parameters of a PostgreSQL URL that carry a secret (libpq takes them there too).
_SECRET_PARAMS: Final = frozenset({"password", "sslpassword"})


def redacted(url: str) -> str:
    """The URL without its password (in the user part or as `?password=`), for logs,
    /healthz and error messages."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    if parts.query:
        query = [
            (name, "***" if name.lower() in _SECRET_PARAMS else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)


def create_store(storage: StorageConfig, *, tool: bool = False, read_only: bool = False) -> Store:
    """The store [storage] names, not yet opened.

    `tool` is for the command-line tools, which block nothing else and so may wait
    patiently for a lock; the running bot gives its event loop back instead, and copies
    SQLite's write-ahead log on a thread of its own. `read_only` (a tool that only looks,
    like `check`) opens an existing database without creating or migrating it, and
    refuses writes.
    """
    # The backend module is imported here only: it is the one that imports its driver.
    if storage.url is not None:
        from bot.store.postgres import PostgresStore  # noqa: PLC0415

        # Any number of bot processes (and tools) share one PostgreSQL database.
        return PostgresStore(
            storage.url,
            password=storage.password,
            read_only=read_only,
            lease=storage.lease.total_seconds(),
        )
    from bot.store.sqlite import BUSY_TIMEOUT_MS, TOOL_BUSY_TIMEOUT_MS, SQLiteStore  # noqa: PLC0415

    return SQLiteStore(
        storage.path,
        busy_timeout_ms=TOOL_BUSY_TIMEOUT_MS if tool or read_only else BUSY_TIMEOUT_MS,
        background_checkpoints=not (tool or read_only),
        read_only=read_only,
    )


__all__ = [
    "DELIVERY_STATES",
    "CardStore",
    "Delivery",
    "DeliveryInfo",
    "EventStore",
    "MoveStore",
    "Mute",
    "MuteStore",
    "NewDelivery",
    "OutboxCounts",
    "OutboxStore",
    "ProcessStore",
    "PruneResult",
    "RoutingInputs",
    "SessionMarks",
    "Store",
    "StoreUnavailable",
    "StreamState",
    "StreamStore",
    "Subscription",
    "SubscriptionStore",
    "WriteHealth",
    "create_store",
    "redacted",
]
