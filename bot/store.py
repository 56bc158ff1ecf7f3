"""SQLite state: events, streams' live state, mutes, subscriptions and the delivery outbox.

One connection, WAL mode, explicit `BEGIN IMMEDIATE` transactions. The schema carries its
version in `PRAGMA user_version` and grows only by appending to MIGRATIONS, so a
database written by any earlier version opens and is upgraded in place.

`synchronous=NORMAL` is SQLite's recommended setting for WAL: a commit survives the
process being killed (the promise the webhook's 2xx makes); only a power cut can lose
the last few transactions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from bot.errors import StoreUnavailable
from bot.events import Event, LiveInfo

log = logging.getLogger(__name__)

#: How long a statement on the bot's connection waits for a lock another process holds
#: (`python -m bot deliveries --retry`, a backup tool). Short on purpose: the wait blocks
#: the event loop, so /healthz and every webhook would wait with it. A longer hold is a
#: StoreUnavailable(busy=True) that the caller retries after giving the loop back.
BUSY_TIMEOUT_MS: Final = 200
#: Command-line tools (`deliveries`) block nothing else, so they wait patiently.
TOOL_BUSY_TIMEOUT_MS: Final = 5000

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the first schema.
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        event_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        streamer_key TEXT,
        occurred_at TEXT NOT NULL,
        received_at TEXT NOT NULL,
        notified INTEGER NOT NULL,
        payload TEXT NOT NULL,
        raw BLOB,
        parent_id INTEGER REFERENCES events(id),
        UNIQUE (source, event_id)
    );
    CREATE INDEX events_by_streamer ON events (streamer_key, occurred_at);

    CREATE TABLE streams (
        streamer_key TEXT PRIMARY KEY,
        display_name TEXT,
        url TEXT,
        live INTEGER NOT NULL DEFAULT 0,
        info TEXT NOT NULL DEFAULT '{}',
        started_at TEXT,
        ended_at TEXT,
        state_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );

    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        event_row INTEGER NOT NULL REFERENCES events(id),
        sink TEXT NOT NULL,
        target TEXT NOT NULL,
        action TEXT NOT NULL DEFAULT 'post',
        options TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_error TEXT,
        message_id TEXT,
        UNIQUE (event_row, sink, target, action)
    );
    CREATE INDEX deliveries_due ON deliveries (sink, state, not_before);

    CREATE TABLE mutes (
        id INTEGER PRIMARY KEY,
        sink TEXT NOT NULL,
        target TEXT NOT NULL,
        pattern TEXT NOT NULL,
        until REAL,
        created_by TEXT,
        created_at REAL NOT NULL,
        UNIQUE (sink, target, pattern)
    );

    CREATE TABLE subscriptions (
        id INTEGER PRIMARY KEY,
        sink TEXT NOT NULL,
        target TEXT NOT NULL,
        pattern TEXT NOT NULL,
        created_by TEXT,
        created_at REAL NOT NULL,
        UNIQUE (sink, target, pattern)
    );
    """,
    # 2: each stream remembers the live_start event of its session, whose posted
    # messages are the "cards" later changes edit in place.
    """
    ALTER TABLE streams ADD COLUMN session_row INTEGER REFERENCES events(id);
    CREATE INDEX deliveries_by_event ON deliveries (event_row, sink, target, action);
    """,
    # 3: session cards beyond edits. A delayed end notice can be called off when the
    # stream comes back ('cancelled'; SQLite cannot alter a CHECK, so the table is
    # rebuilt the documented way), a card can be deleted ('delete' action, no schema
    # change), and each stream remembers its last live_end and its last posted change
    # notice (rejoin window, change cooldown).
    """
    CREATE TABLE deliveries_v3 (
        id INTEGER PRIMARY KEY,
        event_row INTEGER NOT NULL REFERENCES events(id),
        sink TEXT NOT NULL,
        target TEXT NOT NULL,
        action TEXT NOT NULL DEFAULT 'post',
        options TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'cancelled')),
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_error TEXT,
        message_id TEXT,
        UNIQUE (event_row, sink, target, action)
    );
    INSERT INTO deliveries_v3 (id, event_row, sink, target, action, options, state, attempts,
                               not_before, created_at, updated_at, last_error, message_id)
        SELECT id, event_row, sink, target, action, options, state, attempts, not_before,
               created_at, updated_at, last_error, message_id FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_v3 RENAME TO deliveries;
    CREATE INDEX deliveries_due ON deliveries (sink, state, not_before);
    CREATE INDEX deliveries_by_event ON deliveries (event_row, sink, target, action);
    ALTER TABLE streams ADD COLUMN end_row INTEGER REFERENCES events(id);
    ALTER TABLE streams ADD COLUMN change_posted_at REAL;
    """,
    # 4: one row the bot rewrites to find out whether a database that refused writes
    # takes them again (Store.probe_write), when nothing else is waiting to be written.
    """
    CREATE TABLE write_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
    INSERT INTO write_probe (id, at) VALUES (1, 0);
    """,
)


# The streams columns `_mark` and `_set_mark` may name (never user input).
_SESSION_MARKS: Final = frozenset({"session_row", "end_row", "change_posted_at"})

#: WAL pages after which SQLite checkpoints on its own even with the checkpoint thread
#: running: a safety net (about 40 MB), not the normal path.
FALLBACK_CHECKPOINT_PAGES: Final = 10_000


class Checkpointer:
    """Copies the write-ahead log into the database on a thread of its own, soon after writes.

    Left to SQLite, the commit that fills the log to 1000 pages also runs the checkpoint,
    which writes and fsyncs the database file: a stall of about 10 ms for that webhook and
    everything else on the event loop (the 99th percentile of `Dispatcher.accept` was
    10.7 ms; with this thread 0.8 ms). sqlite3 lets go of the GIL while it works, so here
    the loop carries on. PASSIVE never blocks the bot's own connection.
    """

    #: Seconds to wait after a write before checkpointing, so a burst shares one.
    delay = 0.1

    def __init__(self, path: Path) -> None:
        self._path = path
        self._written = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def written(self) -> None:
        """A transaction committed: checkpoint soon."""
        self._written.set()

    def stop(self) -> None:
        """Run a last checkpoint and end the thread."""
        self._stopping.set()
        self._written.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            while True:
                self._written.wait()
                if not self._stopping.wait(self.delay):
                    self._written.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("background checkpoint of %s failed: %s", self._path, exc)
                if self._stopping.is_set():
                    return
        finally:
            conn.close()


# Statements that change the database (the rest only read it).
_WRITES: Final = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "COMMIT"})
_TRANSACTION: Final = frozenset({"BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK"})


@dataclass(slots=True)
class WriteHealth:
    """Whether the last write that changed something went through, and since when.

    Reads keep working on a full disk, so only writes decide: the state changes on a
    write that commits changes (ok) or on any failed statement (unavailable). A
    transaction that changed nothing tells nothing. Each change of state is logged once,
    so a flood of refused webhooks does not flood the log.
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
        """A statement failed: the database is unavailable until a write succeeds."""
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


def unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    """The StoreUnavailable for an sqlite3 error, keeping SQLite's own words and code."""
    code = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
    busy = code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return StoreUnavailable(f"{code}: {exc}", code=code, busy=busy)


def _translated(exc: sqlite3.Error) -> bool:
    """True for errors that mean "the database cannot do this now", not a bug of ours.

    Constraint violations and API misuse (IntegrityError, ProgrammingError) stay as they
    are: retrying them would never help.
    """
    return isinstance(exc, sqlite3.OperationalError) or type(exc) in (
        sqlite3.DatabaseError,
        sqlite3.InternalError,
    )


class _Cursor(sqlite3.Cursor):
    """A cursor whose fetches raise StoreUnavailable like its connection's statements."""

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.Error as exc:
            raise _connection(self).refused(exc) from exc

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.Error as exc:
            raise _connection(self).refused(exc) from exc

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.Error as exc:
            raise _connection(self).refused(exc) from exc


def _connection(cursor: sqlite3.Cursor) -> _Connection:
    conn = cursor.connection
    assert isinstance(conn, _Connection)
    return conn


class _Connection(sqlite3.Connection):
    """The store's connection: database trouble surfaces as StoreUnavailable, writes are
    tracked in `health`, and a read-only refusal asks the store to reopen the file."""

    health: WriteHealth
    reopen_wanted: bool = False
    _changes_at_begin: int = 0

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        """Run one statement, translating database trouble and recording write outcomes."""
        words = sql.lstrip()[:12].split(None, 1)
        verb = words[0].upper() if words else ""
        before = self.total_changes
        try:
            cursor = self.cursor(_Cursor)
            cursor.execute(sql, parameters)
        except sqlite3.Error as exc:
            raise self.refused(exc, write=verb in _WRITES or verb in _TRANSACTION) from exc
        if verb == "BEGIN":
            self._changes_at_begin = before
        elif verb == "COMMIT":
            if self.total_changes > self._changes_at_begin:
                self.health.succeeded()
        elif verb in _WRITES and not self.in_transaction and self.total_changes > before:
            self.health.succeeded()
        return cursor

    def refused(self, exc: sqlite3.Error, *, write: bool = False) -> Exception:
        """What to raise for `exc`: StoreUnavailable or the error itself; a refused
        write marks the database unavailable until a write goes through."""
        if not _translated(exc):
            return exc
        error = unavailable(exc)
        if error.code.startswith("SQLITE_READONLY"):
            # SQLite opened the file read-only (it could not open it for writing then);
            # only a new connection notices that it became writable again.
            self.reopen_wanted = True
        if write:
            self.health.failed(error)
        return error


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


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row: an event to deliver to one target of one sink."""

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
class DeliveryInfo:
    """One outbox row as `python -m bot deliveries` lists it."""

    id: int
    sink: str
    target: str
    action: str
    state: str
    attempts: int
    created_at: float
    not_before: float
    last_error: str | None
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


@dataclass(slots=True)
class OutboxCounts:
    """How many deliveries are in each state, and the oldest still waiting."""

    by_state: dict[str, int] = field(default_factory=dict)
    oldest_pending_created: float | None = None


class Store:
    """The bot's SQLite database. Not thread-safe: use it from the event loop only."""

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: _Connection | None = None
        self._checkpointer: Checkpointer | None = None
        self._background_checkpoints = False
        # True from a read-only refusal until a new connection is open.
        self._reopening = False
        #: The outcome of the last write attempt (for /healthz and the log).
        self.health = WriteHealth()

    # -- lifecycle -----------------------------------------------------------------

    def open(self, *, background_checkpoints: bool = False) -> None:
        """Open (creating if needed) and migrate the database.

        With `background_checkpoints` (the running bot) the write-ahead log is copied into
        the database by a thread of its own instead of by whichever commit fills it up.
        """
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Migrations at start may wait for a lock as long as a tool would.
        self._conn = self._connect(create=True, busy_timeout_ms=TOOL_BUSY_TIMEOUT_MS)
        self._migrate()
        self.conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        self._background_checkpoints = background_checkpoints and str(self.path) != ":memory:"
        self._start_checkpoints()

    def _start_checkpoints(self) -> None:
        if self._background_checkpoints:
            # SQLite still checkpoints by itself if the thread ever falls far behind.
            self.conn.execute(f"PRAGMA wal_autocheckpoint = {FALLBACK_CHECKPOINT_PAGES}")
            self._checkpointer = Checkpointer(self.path)
            self._checkpointer.start()

    def _connect(self, *, create: bool, busy_timeout_ms: int) -> _Connection:
        if str(self.path) == ":memory:":
            target, uri = ":memory:", False
        else:
            # mode=rw on a reopen: a database deleted meanwhile is an error, not a new
            # empty file that forgets every card and pending delivery.
            mode = "rwc" if create else "rw"
            target, uri = f"{self.path.resolve().as_uri()}?mode={mode}", True
        try:
            conn = sqlite3.connect(
                target,
                isolation_level=None,
                check_same_thread=False,
                uri=uri,
                factory=_Connection,
            )
        except sqlite3.Error as exc:
            error = unavailable(exc)
            self.health.failed(error)
            raise error from exc
        assert isinstance(conn, _Connection)
        conn.health = self.health
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _reopen_if_wanted(self) -> None:
        """After a read-only refusal, connect anew, in case the file is writable now.

        Every connection of the process goes, the checkpoint thread's too: SQLite shares
        one read-only view of the WAL index among a process's connections to a file, so
        a new connection beside an old read-only one would stay read-only.
        """
        conn = self._conn
        if conn is None:
            if not self._reopening:
                return  # closed on purpose
        elif not conn.reopen_wanted or conn.in_transaction:
            return
        else:
            self._reopening = True
            if self._checkpointer is not None:
                self._checkpointer.stop()
                self._checkpointer = None
            conn.close()
            self._conn = None
        # Left closed if this fails (the file is gone, say); the next call tries again.
        self._conn = self._connect(create=False, busy_timeout_ms=self.busy_timeout_ms)
        self._reopening = False
        log.info("database %s reopened after a read-only refusal", self.path)
        self._start_checkpoints()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._reopening = False

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection."""
        if self._conn is None:
            if self._reopening:
                raise StoreUnavailable(
                    "SQLITE_CANTOPEN: the database could not be opened again",
                    code="SQLITE_CANTOPEN",
                )
            raise RuntimeError("store is not open")
        return self._conn

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path} was written by a newer version of the bot (schema {version})"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                for statement in _statements(script):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {number}")
            log.info("database %s migrated to schema %d", self.path, number)

    @property
    def schema_version(self) -> int:
        """The schema version the database is at."""
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction; rolled back if the block raises."""
        self._reopen_if_wanted()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
            if self._checkpointer is not None:
                self._checkpointer.written()
        except BaseException:
            # Also after a failed COMMIT (disk full), which can leave the transaction open.
            if self.conn.in_transaction:
                with contextlib.suppress(StoreUnavailable):
                    self.conn.execute("ROLLBACK")
            raise

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested step inside a transaction; only its own changes roll back if it raises."""
        self.conn.execute("SAVEPOINT step")
        try:
            yield
        except BaseException:
            # After a disk-full or I/O error SQLite may have rolled everything back
            # already: then there is no savepoint left to return to.
            if self.conn.in_transaction:
                with contextlib.suppress(StoreUnavailable):
                    self.conn.execute("ROLLBACK TO step")
                    self.conn.execute("RELEASE step")
            raise
        self.conn.execute("RELEASE step")

    def check(self) -> str:
        """'ok', or what is wrong with the database (for /healthz): the last write's
        outcome, then a read (which never waits for a lock in WAL mode)."""
        if not self.health.ok:
            return f"error: {self.health.error}"
        try:
            self.conn.execute("SELECT count(*) FROM streams").fetchone()
        except (StoreUnavailable, RuntimeError) as exc:
            return f"error: {exc}"
        return "ok"

    def probe_write(self) -> None:
        """Write one row and commit: raises StoreUnavailable while writes are refused,
        and a success marks the database writable again (Store.health)."""
        with self.transaction():
            self.conn.execute("UPDATE write_probe SET at = ? WHERE id = 1", (time.time(),))

    # -- events --------------------------------------------------------------------

    def has_event(self, source: str, event_id: str) -> bool:
        """True when this (source, event id) was stored before."""
        row = self.conn.execute(
            "SELECT 1 FROM events WHERE source = ? AND event_id = ?", (source, event_id)
        ).fetchone()
        return row is not None

    def insert_event(
        self,
        event: Event,
        *,
        notified: bool,
        raw: bytes | None = None,
        parent: int | None = None,
    ) -> int | None:
        """Store an event; returns its row id, or None when (source, event id) exists."""
        cursor = self.conn.execute(
            """INSERT INTO events (source, event_id, kind, streamer_key, occurred_at,
                                   received_at, notified, payload, raw, parent_id)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (source, event_id) DO NOTHING""",
            (
                event.source,
                event.event_id,
                event.kind,
                event.streamer_key,
                event.occurred_at.isoformat(),
                event.received_at.isoformat(),
                int(notified),
                json.dumps(event.to_json(), ensure_ascii=False),
                raw,
                parent,
            ),
        )
        return cursor.lastrowid if cursor.rowcount == 1 else None

    def retire_event_id(self, source: str, event_id: str, *, received_before: datetime) -> bool:
        """Free an event id stored before `received_before` for a new event; True if freed.

        The old row and the change events derived from it stay, under `<id>@<row id>`, so
        the (source, event id) key stays unique and the history complete. Call it in the
        transaction that then inserts the new event.
        """
        row = self.conn.execute(
            "SELECT id, received_at FROM events WHERE source = ? AND event_id = ?",
            (source, event_id),
        ).fetchone()
        if row is None or datetime.fromisoformat(row["received_at"]) >= received_before:
            return False
        try:
            self.conn.execute(
                """UPDATE events SET event_id = event_id || '@' || id
                   WHERE id = ? OR parent_id = ?""",
                (row["id"], row["id"]),
            )
        except sqlite3.IntegrityError:
            # A sender chose an id shaped like ours: the old row stays where it is, and
            # the new event is a duplicate of it, as before there was a window.
            log.warning("event id %s of source %r could not be moved aside", event_id, source)
            return False
        return True

    def load_event(self, row_id: int) -> Event:
        """The stored (enriched) event of a row."""
        row = self.conn.execute("SELECT payload FROM events WHERE id = ?", (row_id,)).fetchone()
        if row is None:
            raise KeyError(row_id)
        return Event.from_json(json.loads(row["payload"]))

    def count_events(self) -> int:
        """How many events are stored (derived ones included)."""
        return int(self.conn.execute("SELECT count(*) FROM events").fetchone()[0])

    # -- streams -------------------------------------------------------------------

    def get_stream(self, key: str) -> StreamState | None:
        """The saved state of a stream, or None if it was never seen."""
        row = self.conn.execute("SELECT * FROM streams WHERE streamer_key = ?", (key,)).fetchone()
        return _stream_from_row(row) if row is not None else None

    # A stream's session marks: the live_start that opened its current (or last) session,
    # the live_end that closed it, and when a change notice was last posted.

    def set_session(self, key: str, event_row: int) -> None:
        """Record which live_start event opened the stream's current session."""
        self._set_mark(key, "session_row", event_row)

    def session_row(self, key: str) -> int | None:
        """The live_start event row of the stream's current (or last) session."""
        row = self._mark(key, "session_row")
        return None if row is None else int(row)

    def set_end(self, key: str, event_row: int) -> None:
        """Record the live_end event that closed the stream's last session."""
        self._set_mark(key, "end_row", event_row)

    def end_row(self, key: str) -> int | None:
        """The live_end event row of the stream's last session, if it ended."""
        row = self._mark(key, "end_row")
        return None if row is None else int(row)

    def set_change_posted_at(self, key: str, when: float) -> None:
        """Remember that a change notice for this stream was queued as a post at `when`."""
        self._set_mark(key, "change_posted_at", when)

    def change_posted_at(self, key: str) -> float | None:
        """When a change notice for this stream was last queued as a post."""
        return self._mark(key, "change_posted_at")

    def _mark(self, key: str, column: str) -> float | None:
        assert column in _SESSION_MARKS
        row = self.conn.execute(
            f"SELECT {column} FROM streams WHERE streamer_key = ?", (key,)
        ).fetchone()
        value: float | None = row[0] if row is not None else None
        return value

    def _set_mark(self, key: str, column: str, value: float) -> None:
        assert column in _SESSION_MARKS
        self.conn.execute(f"UPDATE streams SET {column} = ? WHERE streamer_key = ?", (value, key))

    def live_streams(self) -> list[StreamState]:
        """Every stream currently live, longest-running first."""
        rows = self.conn.execute(
            "SELECT * FROM streams WHERE live = 1 ORDER BY started_at, streamer_key"
        ).fetchall()
        return [_stream_from_row(row) for row in rows]

    def known_streamers(self) -> list[str]:
        """Every streamer key ever seen, sorted."""
        rows = self.conn.execute("SELECT streamer_key FROM streams ORDER BY streamer_key")
        return [row[0] for row in rows]

    def save_stream(self, state: StreamState, *, now: datetime) -> None:
        """Insert or replace a stream's state."""
        self.conn.execute(
            """INSERT INTO streams (streamer_key, display_name, url, live, info, started_at,
                                    ended_at, state_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (streamer_key) DO UPDATE SET
                 display_name = excluded.display_name, url = excluded.url,
                 live = excluded.live, info = excluded.info,
                 started_at = excluded.started_at, ended_at = excluded.ended_at,
                 state_at = excluded.state_at, updated_at = excluded.updated_at""",
            (
                state.streamer_key,
                state.display_name,
                state.url,
                int(state.live),
                json.dumps(state.info.to_json(), ensure_ascii=False),
                _iso(state.started_at),
                _iso(state.ended_at),
                state.state_at.isoformat(),
                now.isoformat(),
            ),
        )

    # -- mutes and subscriptions ---------------------------------------------------

    def mutes_for(self, sink: str, target: str, now: float) -> list[Mute]:
        """The mutes of one chat still in force at `now`."""
        rows = self.conn.execute(
            """SELECT sink, target, pattern, until FROM mutes
               WHERE sink = ? AND target = ? AND (until IS NULL OR until > ?)""",
            (sink, target, now),
        ).fetchall()
        return [Mute(row[0], row[1], row[2], row[3]) for row in rows]

    def add_mute(
        self, mute: Mute, *, created_by: str | None = None, now: float | None = None
    ) -> None:
        """Mute a chat (replacing an earlier mute of the same pattern)."""
        self.conn.execute(
            """INSERT INTO mutes (sink, target, pattern, until, created_by, created_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (sink, target, pattern) DO UPDATE SET
                 until = excluded.until, created_by = excluded.created_by,
                 created_at = excluded.created_at""",
            (mute.sink, mute.target, mute.pattern, mute.until, created_by, now or time.time()),
        )

    def remove_mute(self, sink: str, target: str, pattern: str | None) -> int:
        """Unmute one pattern, or every pattern when `pattern` is None; returns how many."""
        if pattern is None:
            cursor = self.conn.execute(
                "DELETE FROM mutes WHERE sink = ? AND target = ?", (sink, target)
            )
        else:
            cursor = self.conn.execute(
                "DELETE FROM mutes WHERE sink = ? AND target = ? AND pattern = ?",
                (sink, target, pattern),
            )
        return cursor.rowcount

    def subscriptions(self) -> list[Subscription]:
        """Every run-time subscription."""
        rows = self.conn.execute(
            "SELECT sink, target, pattern FROM subscriptions ORDER BY id"
        ).fetchall()
        return [Subscription(row[0], row[1], row[2]) for row in rows]

    def add_subscription(
        self, sub: Subscription, *, created_by: str | None = None, now: float | None = None
    ) -> bool:
        """Add a subscription; False if this chat already had that pattern."""
        cursor = self.conn.execute(
            """INSERT INTO subscriptions (sink, target, pattern, created_by, created_at)
               VALUES (?, ?, ?, ?, ?) ON CONFLICT (sink, target, pattern) DO NOTHING""",
            (sub.sink, sub.target, sub.pattern, created_by, now or time.time()),
        )
        return cursor.rowcount == 1

    def remove_subscription(self, sub: Subscription) -> bool:
        """Remove a subscription; False if there was none."""
        cursor = self.conn.execute(
            "DELETE FROM subscriptions WHERE sink = ? AND target = ? AND pattern = ?",
            (sub.sink, sub.target, sub.pattern),
        )
        return cursor.rowcount == 1

    # -- outbox --------------------------------------------------------------------

    def add_delivery(
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
        """Queue one delivery; returns its id."""
        cursor = self.conn.execute(
            """INSERT INTO deliveries (event_row, sink, target, action, options, not_before,
                                       created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                event_row,
                sink,
                target,
                action,
                json.dumps(options or {}),
                not_before,
                now,
                now,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def claim_due(
        self, sink: str, *, now: float, busy_targets: Sequence[str] = (), limit: int = 50
    ) -> list[Delivery]:
        """Mark due pending deliveries of a sink as sending and return them, oldest first.

        Targets in `busy_targets` are skipped so one slow chat never holds up another and
        one chat's messages still go out in order.
        """
        placeholders = ",".join("?" * len(busy_targets))
        busy_clause = f"AND target NOT IN ({placeholders})" if busy_targets else ""
        with self.transaction():
            rows = self.conn.execute(
                f"""SELECT * FROM deliveries
                    WHERE sink = ? AND state = 'pending' AND not_before <= ? {busy_clause}
                    ORDER BY not_before, id LIMIT ?""",
                (sink, now, *busy_targets, limit),
            ).fetchall()
            for row in rows:
                self.conn.execute(
                    """UPDATE deliveries SET state = 'sending', attempts = attempts + 1,
                       updated_at = ? WHERE id = ?""",
                    (now, row["id"]),
                )
        return [_delivery_from_row(row, attempts_delta=1) for row in rows]

    def next_due(self, sink: str, *, busy_targets: Sequence[str] = ()) -> float | None:
        """When the earliest pending delivery of a sink, not for a busy target, is due."""
        placeholders = ",".join("?" * len(busy_targets))
        busy_clause = f"AND target NOT IN ({placeholders})" if busy_targets else ""
        row = self.conn.execute(
            f"""SELECT min(not_before) FROM deliveries
                WHERE sink = ? AND state = 'pending' {busy_clause}""",
            (sink, *busy_targets),
        ).fetchone()
        return float(row[0]) if row[0] is not None else None

    def mark_sent(self, delivery_id: int, *, message_id: str | None, now: float) -> None:
        """The platform accepted the message; remember its id for later edits."""
        self.conn.execute(
            """UPDATE deliveries SET state = 'sent', message_id = ?, last_error = NULL,
               updated_at = ? WHERE id = ?""",
            (message_id, now, delivery_id),
        )

    def mark_retry(self, delivery_id: int, *, error: str, not_before: float, now: float) -> None:
        """Put a delivery back in the queue for a later attempt."""
        self.conn.execute(
            """UPDATE deliveries SET state = 'pending', last_error = ?, not_before = ?,
               updated_at = ? WHERE id = ?""",
            (error, not_before, now, delivery_id),
        )

    def mark_failed(self, delivery_id: int, *, error: str, now: float) -> None:
        """Give up on a delivery."""
        self.conn.execute(
            """UPDATE deliveries SET state = 'failed', last_error = ?, updated_at = ?
               WHERE id = ?""",
            (error, now, delivery_id),
        )

    def release_claimed(self, delivery_ids: Sequence[int], *, now: float) -> None:
        """Hand claimed deliveries that were never tried back to the queue, attempt undone."""
        for delivery_id in delivery_ids:
            self.conn.execute(
                """UPDATE deliveries SET state = 'pending', attempts = max(attempts - 1, 0),
                   updated_at = ? WHERE id = ? AND state = 'sending'""",
                (now, delivery_id),
            )

    def requeue_in_flight(self) -> int:
        """At start-up: deliveries a crash left 'sending' go back to 'pending'."""
        cursor = self.conn.execute(
            "UPDATE deliveries SET state = 'pending' WHERE state = 'sending'"
        )
        return cursor.rowcount

    def outbox_counts(self, *, now: float | None = None) -> OutboxCounts:
        """Deliveries per state and the creation time of the oldest one waiting to go out.

        A delivery held back on purpose (an end notice in its `end_grace`, never tried
        yet) is scheduled, not waiting, so it does not count as the oldest.
        """
        counts = OutboxCounts()
        for row in self.conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state"):
            counts.by_state[row[0]] = row[1]
        # Waiting since it was due: created, or released from its hold (outbox._due).
        row = self.conn.execute(
            """SELECT min(max(created_at, coalesce(json_extract(options, '$.due'), 0)))
               FROM deliveries
               WHERE state IN ('pending', 'sending')
               AND NOT (state = 'pending' AND attempts = 0 AND not_before > ?)""",
            (time.time() if now is None else now,),
        ).fetchone()
        counts.oldest_pending_created = row[0]
        return counts

    def oldest_due(self, sinks: Sequence[str]) -> float | None:
        """The earliest `not_before` of the pending deliveries of these sinks (for /healthz)."""
        if not sinks:
            return None
        placeholders = ",".join("?" * len(sinks))
        row = self.conn.execute(
            f"""SELECT min(not_before) FROM deliveries
                WHERE state = 'pending' AND sink IN ({placeholders})""",
            tuple(sinks),
        ).fetchone()
        return float(row[0]) if row[0] is not None else None

    def list_deliveries(
        self, states: Sequence[str] = ("pending", "sending", "failed")
    ) -> list[DeliveryInfo]:
        """Deliveries in these states with their event's kind and streamer, oldest first."""
        placeholders = ",".join("?" * len(states))
        rows = self.conn.execute(
            f"""SELECT d.id, d.sink, d.target, d.action, d.state, d.attempts, d.created_at,
                       d.not_before, d.last_error, e.kind, e.streamer_key
                FROM deliveries d JOIN events e ON e.id = d.event_row
                WHERE d.state IN ({placeholders}) ORDER BY d.created_at, d.id""",
            tuple(states),
        ).fetchall()
        return [
            DeliveryInfo(
                id=row["id"],
                sink=row["sink"],
                target=row["target"],
                action=row["action"],
                state=row["state"],
                attempts=row["attempts"],
                created_at=row["created_at"],
                not_before=row["not_before"],
                last_error=row["last_error"],
                kind=row["kind"],
                streamer_key=row["streamer_key"],
            )
            for row in rows
        ]

    def retry_failed(self, *, now: float) -> int:
        """Re-queue every failed delivery, due now, attempts kept; returns how many."""
        cursor = self.conn.execute(
            """UPDATE deliveries SET state = 'pending', not_before = ?, updated_at = ?
               WHERE state = 'failed'""",
            (now, now),
        )
        return cursor.rowcount

    def cards(self, event_row: int) -> dict[tuple[str, str], int]:
        """The deliveries that posted an event's messages (a session's cards), by chat."""
        rows = self.conn.execute(
            """SELECT sink, target, id FROM deliveries
               WHERE event_row = ? AND action = 'post'""",
            (event_row,),
        ).fetchall()
        return {(row[0], row[1]): row[2] for row in rows}

    def release_held(self, event_row: int, *, now: float) -> int:
        """Make an event's deliveries that are held back for later due now; returns how many."""
        cursor = self.conn.execute(
            """UPDATE deliveries SET not_before = ?, options = json_set(options, '$.due', ?),
                                     updated_at = ?
               WHERE event_row = ? AND state = 'pending' AND not_before > ?""",
            (now, now, now, event_row, now),
        )
        return cursor.rowcount

    def cancel_pending(self, event_row: int, *, reason: str, now: float) -> int:
        """Call off an event's deliveries that were not sent yet; returns how many."""
        cursor = self.conn.execute(
            """UPDATE deliveries SET state = 'cancelled', last_error = ?, updated_at = ?
               WHERE event_row = ? AND state = 'pending'""",
            (reason, now, event_row),
        )
        return cursor.rowcount

    def reached_targets(self, event_row: int) -> set[tuple[str, str]]:
        """The (sink, target) pairs an event's deliveries went or are going out to.

        Cancelled deliveries do not count; failed ones do, since a failed card edit may
        have left anything on screen.
        """
        rows = self.conn.execute(
            """SELECT DISTINCT sink, target FROM deliveries
               WHERE event_row = ? AND state != 'cancelled'""",
            (event_row,),
        ).fetchall()
        return {(row[0], row[1]) for row in rows}

    def delivery_status(self, delivery_id: int) -> tuple[str, str | None]:
        """(state, platform message id) of one delivery."""
        row = self.conn.execute(
            "SELECT state, message_id FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
        if row is None:
            raise KeyError(delivery_id)
        return row[0], row[1]

    def set_message_id(self, delivery_id: int, message_id: str) -> None:
        """Point a delivery at another platform message (a card posted anew)."""
        self.conn.execute(
            "UPDATE deliveries SET message_id = ? WHERE id = ?", (message_id, delivery_id)
        )

    def failed_count(self, sink: str, target: str) -> int:
        """How many deliveries to one chat (or its forum topics) failed for good."""
        row = self.conn.execute(
            """SELECT count(*) FROM deliveries WHERE sink = ? AND state = 'failed'
               AND (target = ? OR target LIKE ? || '/%')""",
            (sink, target, target),
        ).fetchone()
        return int(row[0])

    def deliveries_for_event(self, event_row: int) -> list[sqlite3.Row]:
        """All delivery rows of one event (for tests and the CLI)."""
        return self.conn.execute(
            "SELECT * FROM deliveries WHERE event_row = ? ORDER BY id", (event_row,)
        ).fetchall()


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _stream_from_row(row: sqlite3.Row) -> StreamState:
    state_at = datetime.fromisoformat(row["state_at"])
    return StreamState(
        streamer_key=row["streamer_key"],
        display_name=row["display_name"],
        url=row["url"],
        live=bool(row["live"]),
        info=LiveInfo.from_json(json.loads(row["info"])),
        started_at=_dt(row["started_at"]),
        ended_at=_dt(row["ended_at"]),
        state_at=state_at,
    )


def _delivery_from_row(row: sqlite3.Row, *, attempts_delta: int = 0) -> Delivery:
    return Delivery(
        id=row["id"],
        event_row=row["event_row"],
        sink=row["sink"],
        target=row["target"],
        action=row["action"],
        options=json.loads(row["options"]),
        attempts=row["attempts"] + attempts_delta,
        created_at=row["created_at"],
        not_before=row["not_before"],
    )
