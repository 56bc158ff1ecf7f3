"""The SQLite backend of the store: one file, one connection, WAL mode.

Explicit `BEGIN IMMEDIATE` transactions; the schema is `bot.store.migrations`.

The async methods run their SQL inline, on the event loop's thread, not on a worker
thread. A statement on a local WAL database takes microseconds, far less than a thread
hop would add to each of them (and to each of a transaction's statements, all of which
would have to run on that one thread); the two things that can take long run elsewhere
already: checkpoints, which write and fsync the database file, on the Checkpointer's
thread, and a lock held by another process, which waits at most BUSY_TIMEOUT_MS before
it surfaces as StoreUnavailable(busy=True) for the caller to retry later. Because nothing
in a method suspends, a transaction can never interleave with another task's work on the
one connection.

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
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bot.errors import DatabaseTooNew, StoreUnavailable, TransactionAborted
from bot.events import Event
from bot.store import (
    Delivery,
    DeliveryInfo,
    Mute,
    NewDelivery,
    OutboxCounts,
    PruneResult,
    RoutingInputs,
    Store,
    StreamState,
    Subscription,
    WriteHealth,
)
from bot.store.migrations import MIGRATIONS, statements
from bot.store.process import LEASE_SECONDS, PROCESS_ID
from bot.store.rows import delivery_from_row, info_from_row, stream_from_row

log = logging.getLogger(__name__)

#: How long a statement on the bot's connection waits for a lock another process holds
#: (`python -m bot deliveries --retry`, a backup tool). Short on purpose: the wait blocks
#: the event loop, so /healthz and every webhook would wait with it. A longer hold is a
#: StoreUnavailable(busy=True) that the caller retries after giving the loop back.
BUSY_TIMEOUT_MS: Final = 200
#: Command-line tools (`deliveries`) block nothing else, so they wait patiently.
TOOL_BUSY_TIMEOUT_MS: Final = 5000

# An event that was dispatched and none of whose deliveries is still to go out or
# finished after the cut-off (the second parameter, epoch seconds). An event still waiting
# for the dispatch stage (after downtime longer than the retention, say) stays.
_UNFINISHED_CLAUSE: Final = """e.dispatched = 1 AND NOT EXISTS (
    SELECT 1 FROM deliveries d WHERE d.event_row = e.id
    AND (d.state IN ('pending', 'sending') OR d.updated_at >= ?))"""
# Row ids per `IN (...)` list: well inside SQLite's limit on parameters.
_IN_CHUNK: Final = 500

# The schema that added target_moves (migrations.py).
_MOVES_SCHEMA: Final = 7
_SOURCE_STATE_SCHEMA: Final = 8

# The streams columns `_mark` and `_set_mark` may name (never user input).

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


# How many statement texts a connection remembers the first word of (see `verbs`).
_VERB_CACHE_SIZE: Final = 512

# Statements that change the database (the rest only read it).
_WRITES: Final = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "COMMIT"})
_TRANSACTION: Final = frozenset({"BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK"})


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
    store: SQLiteStore
    #: The first word of each statement text seen, looked up rather than parsed per
    #: call: the store's statements are a few dozen constant strings, run thousands of
    #: times a second under load. Bounded, in case a caller ever builds statement texts.
    verbs: dict[str, str]
    reopen_wanted: bool = False
    _changes_at_begin: int = 0

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        """Run one statement, translating database trouble and recording write outcomes."""
        verb = self.verbs.get(sql)
        if verb is None:
            words = sql.lstrip()[:12].split(None, 1)
            verb = words[0].upper() if words else ""
            if len(self.verbs) < _VERB_CACHE_SIZE:
                self.verbs[sql] = verb
        before = self.total_changes
        self.store.statements_run += 1
        cursor: _Cursor | None = None
        try:
            cursor = self.cursor(_Cursor)
            cursor.execute(sql, parameters)
        except sqlite3.Error as exc:
            # The error's traceback holds this frame and so the cursor, which keeps its
            # statement after a failure, for as long as anything holds the error (often
            # a reference cycle, until the garbage collector runs). A statement not
            # finalized keeps a closed connection open (sqlite3_close_v2), and with it its
            # read-only view of the WAL index, which a reopened connection shares: every
            # write stayed refused after the file became writable (`_reopen_if_wanted`).
            if cursor is not None:
                cursor.close()
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


#: One outbox row (add_delivery, add_deliveries).
_INSERT_DELIVERY: Final = """INSERT INTO deliveries (event_row, sink, target, action, options,
                                                   not_before, created_at, updated_at)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""


class SQLiteStore:
    """The bot's SQLite database (implements `bot.store.Store`). Use it from the event
    loop only: its work runs inline there (see the module docstring)."""

    #: One process per file (its lock file, bot.instance).
    shared = False

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        background_checkpoints: bool = False,
        read_only: bool = False,
        owner: str = PROCESS_ID,
    ) -> None:
        """A store for the file at `path`, opened by `open()`.

        With `background_checkpoints` (the running bot) the write-ahead log is copied into
        the database by a thread of its own instead of by whichever commit fills it up.
        `read_only` opens an existing file for reading only, neither creating nor
        migrating it (`check`, which must not change a database a bot may be running on).
        """
        self.read_only = read_only
        #: This process, as its claims and heartbeat name it (a run of its own: a
        #: restarted bot is another process to the rows the last run left).
        self.owner = owner
        self.path = Path(path)
        self.location = str(self.path)
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: _Connection | None = None
        self._checkpointer: Checkpointer | None = None
        self._background_checkpoints = background_checkpoints and str(self.path) != ":memory:"
        #: Statements run on the bot's connection (bench and tests count them).
        self.statements_run = 0
        # True from a read-only refusal until a new connection is open.
        self._reopening = False
        #: The outcome of the last write attempt (for /healthz and the log).
        self.health = WriteHealth()
        #: The only process on the file: the first.
        self.rank = 0

    # -- lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating if needed) and migrate the database."""
        self.open_sync()

    def open_sync(self) -> None:
        """`open()` for code that runs before any event loop (the command-line tools)."""
        if self.read_only:
            self._conn = self._connect(create=False, busy_timeout_ms=self.busy_timeout_ms)
            return
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Migrations at start may wait for a lock as long as a tool would.
        self._conn = self._connect(create=True, busy_timeout_ms=TOOL_BUSY_TIMEOUT_MS)
        self._migrate()
        self._db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        self._start_checkpoints()

    def _start_checkpoints(self) -> None:
        if self._background_checkpoints:
            # SQLite still checkpoints by itself if the thread ever falls far behind.
            self._db.execute(f"PRAGMA wal_autocheckpoint = {FALLBACK_CHECKPOINT_PAGES}")
            self._checkpointer = Checkpointer(self.path)
            self._checkpointer.start()

    def _connect(self, *, create: bool, busy_timeout_ms: int) -> _Connection:
        if str(self.path) == ":memory:":
            target, uri = ":memory:", False
        else:
            # mode=rw on a reopen: a database deleted meanwhile is an error, not a new
            # empty file that forgets every card and pending delivery.
            mode = "ro" if self.read_only else "rwc" if create else "rw"
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
        conn.store = self
        conn.verbs = {}
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            if not self.read_only:
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

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._reopening = False

    @property
    def _db(self) -> _Connection:
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
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise DatabaseTooNew(
                f"{self.path} was written by a newer version of the bot (schema {version};"
                f" this one knows up to {len(MIGRATIONS)}): upgrade the bot, or point"
                " [storage] path at another file"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._transaction():
                for statement in statements(script):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
            log.info("database %s migrated to schema %d", self.path, number)

    async def schema_version(self) -> int:
        """The schema version the database is at."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @asynccontextmanager
    async def transaction(self, *, serial: bool = True) -> AsyncIterator[None]:
        """One write transaction; rolled back if the block raises (serial whatever
        `serial` says: SQLite has one writer at a time)."""
        with self._transaction():
            yield

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested step inside a transaction; only its own changes roll back if it raises."""
        with self._savepoint():
            yield

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._reopen_if_wanted()
        if self._db.in_transaction:
            # Only possible if a task awaited something else inside a transaction, which
            # the Store contract forbids: say so rather than join its transaction.
            raise RuntimeError("a transaction is already open on this store")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
            if self._checkpointer is not None:
                self._checkpointer.written()
        except BaseException:
            # Also after a failed COMMIT (disk full), which can leave the transaction open.
            if self._db.in_transaction:
                with contextlib.suppress(StoreUnavailable):
                    self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        self._db.execute("SAVEPOINT step")
        try:
            yield
        except BaseException as exc:
            # After a disk-full or I/O error SQLite may have rolled everything back
            # already: then there is no savepoint left to return to, and the caller must
            # know that the steps before this one are gone too.
            if not self._db.in_transaction:
                code = exc.code if isinstance(exc, StoreUnavailable) else ""
                raise TransactionAborted(
                    f"the transaction was rolled back: {exc}", code=code
                ) from exc
            with contextlib.suppress(StoreUnavailable):
                self._db.execute("ROLLBACK TO step")
                self._db.execute("RELEASE step")
            raise
        self._db.execute("RELEASE step")

    async def routing_inputs(self, now: float) -> RoutingInputs:
        """Subscriptions, mutes in force and moves at once. In-process: three reads."""
        return RoutingInputs(
            subscriptions=await self.subscriptions(),
            mutes=await self.active_mutes(now),
            moves=await self.moved_targets(),
        )

    async def check(self) -> str:
        """'ok', or what is wrong with the database (for /healthz): the last write's
        outcome, then a read (which never waits for a lock in WAL mode)."""
        if not self.health.ok:
            return f"error: {self.health.error}"
        try:
            self._db.execute("SELECT count(*) FROM streams").fetchone()
        except (StoreUnavailable, RuntimeError) as exc:
            return f"error: {exc}"
        return "ok"

    async def probe_write(self) -> None:
        """Write one row and commit: raises StoreUnavailable while writes are refused,
        and a success marks the database writable again (Store.health)."""
        with self._transaction():
            self._db.execute("UPDATE write_probe SET at = ? WHERE id = 1", (time.time(),))

    # -- events --------------------------------------------------------------------

    async def insert_event(
        self,
        event: Event,
        *,
        notified: bool = False,
        raw: bytes | None = None,
        parent: int | None = None,
        dispatched: bool = True,
    ) -> int | None:
        """Store an event; returns its row id, or None when (source, event id) exists."""
        cursor = self._db.execute(
            """INSERT INTO events (source, event_id, kind, streamer_key, occurred_at,
                                   received_at, notified, payload, raw, parent_id, dispatched)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (source, event_id) DO NOTHING""",
            (
                event.source,
                event.event_id,
                event.kind,
                event.streamer_key,
                event.occurred_at.isoformat(),
                # UTC, so that the text sorts as the time does (prune compares it).
                event.received_at.astimezone(UTC).isoformat(),
                int(notified),
                json.dumps(event.to_json(), ensure_ascii=False),
                raw,
                parent,
                int(dispatched),
            ),
        )
        return cursor.lastrowid if cursor.rowcount == 1 else None

    async def insert_new_events(
        self, batch: Sequence[tuple[Event, bytes | None]]
    ) -> list[int | None]:
        """Store events for the dispatch stage, in this order; per event its row id, or
        None for a duplicate. In-process, one statement each costs no round trip."""
        with self._savepoint() if self._db.in_transaction else self._transaction():
            return [
                await self.insert_event(event, raw=raw, dispatched=False) for event, raw in batch
            ]

    async def undispatched(self, *, limit: int = 100) -> list[tuple[int, Event]]:
        """Events stored but not yet dispatched, as (row id, event), in the order stored."""
        rows = self._db.execute(
            "SELECT id, payload FROM events WHERE dispatched = 0 ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [(row["id"], Event.from_json(json.loads(row["payload"]))) for row in rows]

    async def undispatched_with_streams(
        self, *, limit: int = 100
    ) -> tuple[list[tuple[int, Event]], dict[str, StreamState]]:
        """`undispatched` and its events' streams. In-process: no round trip to save."""
        batch = await self.undispatched(limit=limit)
        keys = dict.fromkeys(k for _row, e in batch if (k := e.streamer_key) is not None)
        return batch, await self.get_streams(list(keys))

    async def mark_dispatched(self, row_id: int, event: Event, *, notified: bool) -> None:
        """The dispatch stage applied the event: store it as enriched, and whether it was
        notified anywhere."""
        self._db.execute(
            "UPDATE events SET payload = ?, notified = ?, dispatched = 1 WHERE id = ?",
            (json.dumps(event.to_json(), ensure_ascii=False), int(notified), row_id),
        )

    async def mark_many_dispatched(self, marks: Sequence[tuple[int, Event, bool]]) -> None:
        """`mark_dispatched` for several events. In-process: no round trip to save."""
        with self._savepoint() if self._db.in_transaction else self._transaction():
            for row_id, event, notified in marks:
                await self.mark_dispatched(row_id, event, notified=notified)

    async def count_undispatched(self) -> int:
        """How many stored events wait for the dispatch stage (the backlog)."""
        row = self._db.execute("SELECT count(*) FROM events WHERE dispatched = 0").fetchone()
        return int(row[0])

    async def retire_event_id(
        self, source: str, event_id: str, *, received_before: datetime
    ) -> bool:
        """Free an event id stored before `received_before` for a new event; True if freed.

        The old row and the change events derived from it stay, under `<id>@<row id>`, so
        the (source, event id) key stays unique and the history complete. Call it in the
        transaction that then inserts the new event.
        """
        row = self._db.execute(
            "SELECT id, received_at FROM events WHERE source = ? AND event_id = ?",
            (source, event_id),
        ).fetchone()
        if row is None or datetime.fromisoformat(row["received_at"]) >= received_before:
            return False
        try:
            self._db.execute(
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

    async def load_event(self, row_id: int) -> Event:
        """The stored (enriched) event of a row."""
        row = self._db.execute("SELECT payload FROM events WHERE id = ?", (row_id,)).fetchone()
        if row is None:
            raise KeyError(row_id)
        return Event.from_json(json.loads(row["payload"]))

    async def find_event(self, source: str, event_id: str) -> Event | None:
        """The stored event with this (source, event id), if there is one."""
        row = self._db.execute(
            "SELECT payload FROM events WHERE source = ? AND event_id = ?", (source, event_id)
        ).fetchone()
        return Event.from_json(json.loads(row["payload"])) if row is not None else None

    async def recent_events(self, kind: str, *, limit: int = 10) -> list[Event]:
        """The latest stored events of `kind`, newest first (derived ones included)."""
        # Newest by row id: the order they were stored in. A backwards walk of the
        # primary key, fine for a tool asking now and then.
        rows = self._db.execute(
            "SELECT payload FROM events WHERE kind = ? ORDER BY id DESC LIMIT ?", (kind, limit)
        ).fetchall()
        return [Event.from_json(json.loads(row["payload"])) for row in rows]

    async def count_events(self) -> int:
        """How many events are stored (derived ones included)."""
        return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])

    async def prune(self, *, before: datetime, limit: int = 1000) -> PruneResult:
        """Remove events received before `before` with their deliveries, at most about
        `limit` rows in one transaction; `more` when another call has more to remove.

        What is still needed stays (see `bot.store.EventStore.prune`). One call is bounded
        so that it holds the write lock only briefly: another process waiting for it
        gives up after its busy timeout (BUSY_TIMEOUT_MS for the bot itself).
        """
        cutoff = before.astimezone(UTC).isoformat()
        cutoff_at = before.timestamp()
        with self._transaction():
            pinned = self._pinned_events(cutoff)
            fetch = limit + len(pinned)
            rows = self._db.execute(
                f"""SELECT e.id, (SELECT count(*) FROM deliveries d WHERE d.event_row = e.id)
                    FROM events e WHERE e.received_at < ? AND {_UNFINISHED_CLAUSE}
                    ORDER BY e.received_at, e.id LIMIT ?""",
                (cutoff, cutoff_at, fetch),
            ).fetchall()
            chosen: set[int] = set()
            size = 0
            more = len(rows) == fetch
            for event_row, deliveries in rows:
                if event_row in pinned:
                    continue
                if chosen and size + 1 + deliveries > limit:
                    more = True
                    break
                chosen.add(event_row)
                size += 1 + deliveries
            self._with_derived(chosen, pinned, cutoff, cutoff_at)
            if not chosen:
                # Whatever is old is still needed: another call now would find the same.
                return PruneResult()
            removed_deliveries = 0
            # Children (derived events) have higher row ids than their parents: deleting
            # from the top never leaves a child pointing at a deleted parent in between.
            ordered = sorted(chosen, reverse=True)
            for chunk in _chunks(ordered, _IN_CHUNK):
                marks = ",".join("?" * len(chunk))
                removed_deliveries += self._db.execute(
                    f"DELETE FROM deliveries WHERE event_row IN ({marks})", chunk
                ).rowcount
                for column in ("session_row", "end_row"):
                    self._db.execute(
                        f"UPDATE streams SET {column} = NULL WHERE {column} IN ({marks})", chunk
                    )
            for chunk in _chunks(ordered, _IN_CHUNK):
                marks = ",".join("?" * len(chunk))
                self._db.execute(f"DELETE FROM events WHERE id IN ({marks})", chunk)
        return PruneResult(events=len(chosen), deliveries=removed_deliveries, more=more)

    def _pinned_events(self, cutoff: str) -> set[int]:
        """Events that must stay whatever their age: the sessions still in use (live, or
        ended so recently that a comeback reopens them, or whose end notice is still to
        go out) and the cards that deliveries still to go out act on."""
        pinned: set[int] = set()
        rows = self._db.execute(
            """SELECT s.session_row, s.end_row FROM streams s
               LEFT JOIN events e ON e.id = s.end_row
               WHERE s.live = 1 OR s.end_row IS NULL OR e.received_at >= ?
               OR EXISTS (SELECT 1 FROM deliveries d WHERE d.event_row = s.end_row
                          AND d.state IN ('pending', 'sending'))""",
            (cutoff,),
        )
        for row in rows:
            pinned.update(value for value in row if value is not None)
        cards = self._db.execute(
            """SELECT DISTINCT card.event_row FROM deliveries d
               JOIN deliveries card ON card.id = json_extract(d.options, '$.card')
               WHERE d.state IN ('pending', 'sending')"""
        )
        pinned.update(row[0] for row in cards)
        return pinned

    def _with_derived(
        self, chosen: set[int], pinned: set[int], cutoff: str, cutoff_at: float
    ) -> None:
        """Complete `chosen` with the events derived from it, or leave out the parents of
        derived events that must stay (a parent must outlive what refers to it)."""
        kept: set[int] = set()
        while chosen:
            outside: list[tuple[int, int]] = []
            for chunk in _chunks(sorted(chosen), _IN_CHUNK):
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT id, parent_id FROM events WHERE parent_id IN ({marks})", chunk
                )
                outside.extend((row[0], row[1]) for row in rows if row[0] not in chosen)
            if not outside:
                return
            children = sorted({child for child, _parent in outside} - kept - pinned)
            old: set[int] = set()
            for chunk in _chunks(children, _IN_CHUNK):
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"""SELECT e.id FROM events e WHERE e.id IN ({marks})
                        AND e.received_at < ? AND {_UNFINISHED_CLAUSE}""",
                    (*chunk, cutoff, cutoff_at),
                )
                old.update(row[0] for row in rows)
            for child, parent in outside:
                if child in old:
                    chosen.add(child)
                else:
                    kept.update((child, parent))
                    chosen.discard(parent)

    # -- streams -------------------------------------------------------------------

    async def get_stream(self, key: str) -> StreamState | None:
        """The saved state of a stream, or None if it was never seen."""
        row = self._db.execute("SELECT * FROM streams WHERE streamer_key = ?", (key,)).fetchone()
        return stream_from_row(row, _dt) if row is not None else None

    async def get_streams(self, keys: Sequence[str]) -> dict[str, StreamState]:
        """The saved states of several streams, by key; streams never seen left out."""
        found: dict[str, StreamState] = {}
        for key in keys:
            state = await self.get_stream(key)
            if state is not None:
                found[key] = state
        return found

    async def save_dispatched(
        self,
        states: Sequence[StreamState],
        marks: Sequence[tuple[int, Event, bool]],
        *,
        now: datetime,
    ) -> None:
        """`save_streams` and `mark_many_dispatched`, all or none."""
        with self._savepoint() if self._db.in_transaction else self._transaction():
            await self.save_streams(states, now=now)
            await self.mark_many_dispatched(marks)

    async def live_streams(self) -> list[StreamState]:
        """Every stream currently live, longest-running first."""
        rows = self._db.execute(
            "SELECT * FROM streams WHERE live = 1 ORDER BY started_at, streamer_key"
        ).fetchall()
        return [stream_from_row(row, _dt) for row in rows]

    async def known_streamers(self) -> list[str]:
        """Every streamer key ever seen, sorted."""
        rows = self._db.execute("SELECT streamer_key FROM streams ORDER BY streamer_key")
        return [row[0] for row in rows]

    async def save_streams(self, states: Sequence[StreamState], *, now: datetime) -> None:
        """Insert or replace streams' states with their session marks; a key given twice
        keeps its last state. All or none, as one statement would be."""
        last = {state.streamer_key: state for state in states}
        with self._savepoint() if self._db.in_transaction else self._transaction():
            self._db.executemany(
                """INSERT INTO streams (streamer_key, display_name, url, live, info, started_at,
                                        ended_at, state_at, updated_at, session_row, end_row,
                                        change_posted_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (streamer_key) DO UPDATE SET
                     display_name = excluded.display_name, url = excluded.url,
                     live = excluded.live, info = excluded.info,
                     started_at = excluded.started_at, ended_at = excluded.ended_at,
                     state_at = excluded.state_at, updated_at = excluded.updated_at,
                     session_row = excluded.session_row, end_row = excluded.end_row,
                     change_posted_at = excluded.change_posted_at""",
                [
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
                        state.marks.session_row,
                        state.marks.end_row,
                        state.marks.change_posted_at,
                    )
                    for state in last.values()
                ],
            )

    # -- mutes and subscriptions ---------------------------------------------------

    async def mutes_for(self, sink: str, target: str, now: float) -> list[Mute]:
        """The mutes of one chat still in force at `now`."""
        rows = self._db.execute(
            """SELECT sink, target, pattern, until FROM mutes
               WHERE sink = ? AND target = ? AND (until IS NULL OR until > ?)""",
            (sink, target, now),
        ).fetchall()
        return [Mute(row[0], row[1], row[2], row[3]) for row in rows]

    async def add_mute(
        self, mute: Mute, *, created_by: str | None = None, now: float | None = None
    ) -> None:
        """Mute a chat (replacing an earlier mute of the same pattern)."""
        self._db.execute(
            """INSERT INTO mutes (sink, target, pattern, until, created_by, created_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (sink, target, pattern) DO UPDATE SET
                 until = excluded.until, created_by = excluded.created_by,
                 created_at = excluded.created_at""",
            (mute.sink, mute.target, mute.pattern, mute.until, created_by, now or time.time()),
        )

    async def active_mutes(self, now: float) -> list[Mute]:
        """Every mute of every chat still in force at `now`."""
        rows = self._db.execute(
            "SELECT sink, target, pattern, until FROM mutes WHERE until IS NULL OR until > ?",
            (now,),
        ).fetchall()
        return [Mute(row[0], row[1], row[2], row[3]) for row in rows]

    async def remove_mute(self, sink: str, target: str, pattern: str | None) -> int:
        """Unmute one pattern, or every pattern when `pattern` is None; returns how many."""
        if pattern is None:
            cursor = self._db.execute(
                "DELETE FROM mutes WHERE sink = ? AND target = ?", (sink, target)
            )
        else:
            cursor = self._db.execute(
                "DELETE FROM mutes WHERE sink = ? AND target = ? AND pattern = ?",
                (sink, target, pattern),
            )
        return cursor.rowcount

    async def subscriptions(self) -> list[Subscription]:
        """Every run-time subscription."""
        rows = self._db.execute(
            "SELECT sink, target, pattern FROM subscriptions ORDER BY id"
        ).fetchall()
        return [Subscription(row[0], row[1], row[2]) for row in rows]

    async def add_subscription(
        self, sub: Subscription, *, created_by: str | None = None, now: float | None = None
    ) -> bool:
        """Add a subscription; False if this chat already had that pattern."""
        cursor = self._db.execute(
            """INSERT INTO subscriptions (sink, target, pattern, created_by, created_at)
               VALUES (?, ?, ?, ?, ?) ON CONFLICT (sink, target, pattern) DO NOTHING""",
            (sub.sink, sub.target, sub.pattern, created_by, now or time.time()),
        )
        return cursor.rowcount == 1

    async def remove_subscription(self, sub: Subscription) -> bool:
        """Remove a subscription; False if there was none."""
        cursor = self._db.execute(
            "DELETE FROM subscriptions WHERE sink = ? AND target = ? AND pattern = ?",
            (sub.sink, sub.target, sub.pattern),
        )
        return cursor.rowcount == 1

    # -- outbox --------------------------------------------------------------------

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
        """Queue one delivery; returns its id."""
        cursor = self._db.execute(
            _INSERT_DELIVERY,
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

    async def add_deliveries(self, deliveries: Sequence[NewDelivery], *, now: float) -> None:
        """Queue several deliveries, in order; all or none, as one statement would be."""
        if not deliveries:
            return
        with self._savepoint() if self._db.in_transaction else self._transaction():
            self._db.executemany(
                _INSERT_DELIVERY,
                [
                    (
                        new.event_row,
                        new.sink,
                        new.target,
                        new.action,
                        json.dumps(new.options),
                        new.not_before,
                        now,
                        now,
                    )
                    for new in deliveries
                ],
            )

    async def claim_due(
        self, sink: str, *, now: float, busy_targets: Sequence[str] = (), limit: int = 50
    ) -> list[Delivery]:
        """Mark due pending deliveries of a sink as sending and return them, oldest first.

        Targets in `busy_targets` are skipped so one slow chat never holds up another and
        one chat's messages still go out in order.
        """
        placeholders = ",".join("?" * len(busy_targets))
        busy_clause = f"AND target NOT IN ({placeholders})" if busy_targets else ""
        # Atomic on its own, or a step of the caller's transaction.
        with self._savepoint() if self._db.in_transaction else self._transaction():
            rows = self._db.execute(
                f"""SELECT * FROM deliveries
                    WHERE sink = ? AND state = 'pending' AND not_before <= ? {busy_clause}
                    ORDER BY not_before, id LIMIT ?""",
                (sink, now, *busy_targets, limit),
            ).fetchall()
            for row in rows:
                # One process per SQLite file: the lease only says whose send it is.
                self._db.execute(
                    """UPDATE deliveries SET state = 'sending', attempts = attempts + 1,
                       updated_at = ?, claimed_by = ?, lease_until = ? WHERE id = ?""",
                    (now, self.owner, now + LEASE_SECONDS, row["id"]),
                )
        return [delivery_from_row(row, attempts_delta=1) for row in rows]

    async def next_due(
        self, sink: str, *, busy_targets: Sequence[str] = (), now: float | None = None
    ) -> float | None:
        """When the earliest pending delivery of a sink, not for a busy target, is due."""
        # One process per file: there is no other process's send to wait for, and so no
        # use for `now`.
        placeholders = ",".join("?" * len(busy_targets))
        busy_clause = f"AND target NOT IN ({placeholders})" if busy_targets else ""
        row = self._db.execute(
            f"""SELECT min(not_before) FROM deliveries
                WHERE sink = ? AND state = 'pending' {busy_clause}""",
            (sink, *busy_targets),
        ).fetchone()
        return float(row[0]) if row[0] is not None else None

    async def mark_sent(self, delivery_id: int, *, message_id: str | None, now: float) -> None:
        """The platform accepted the message; remember its id for later edits."""
        self._db.execute(
            """UPDATE deliveries SET state = 'sent', message_id = ?, last_error = NULL,
               updated_at = ? WHERE id = ?""",
            (message_id, now, delivery_id),
        )

    async def mark_retry(
        self, delivery_id: int, *, error: str, not_before: float, now: float
    ) -> None:
        """Put a delivery back in the queue for a later attempt."""
        self._db.execute(
            """UPDATE deliveries SET state = 'pending', last_error = ?, not_before = ?,
               updated_at = ? WHERE id = ?""",
            (error, not_before, now, delivery_id),
        )

    async def mark_failed(self, delivery_id: int, *, error: str, now: float) -> None:
        """Give up on a delivery."""
        self._db.execute(
            """UPDATE deliveries SET state = 'failed', last_error = ?, updated_at = ?
               WHERE id = ?""",
            (error, now, delivery_id),
        )

    async def mark_cancelled(self, delivery_id: int, *, reason: str, now: float) -> None:
        """Call off one delivery (a mute set after it was queued, say)."""
        self._db.execute(
            """UPDATE deliveries SET state = 'cancelled', last_error = ?, updated_at = ?
               WHERE id = ?""",
            (reason, now, delivery_id),
        )

    async def release_claimed(self, delivery_ids: Sequence[int], *, now: float) -> None:
        """Hand claimed deliveries that were never tried back to the queue, attempt undone."""
        for delivery_id in delivery_ids:
            self._db.execute(
                """UPDATE deliveries SET state = 'pending', attempts = max(attempts - 1, 0),
                   updated_at = ? WHERE id = ? AND state = 'sending'""",
                (now, delivery_id),
            )

    async def requeue_in_flight(self) -> int:
        """At start-up: deliveries a crash left 'sending' go back to 'pending'."""
        cursor = self._db.execute(
            "UPDATE deliveries SET state = 'pending' WHERE state = 'sending'"
        )
        return cursor.rowcount

    async def outbox_counts(self, *, now: float | None = None) -> OutboxCounts:
        """Deliveries per state and the creation time of the oldest one waiting to go out.

        A delivery held back on purpose (an end notice in its `end_grace`, never tried
        yet) is scheduled, not waiting, so it does not count as the oldest.
        """
        counts = OutboxCounts()
        for row in self._db.execute("SELECT state, count(*) FROM deliveries GROUP BY state"):
            counts.by_state[row[0]] = row[1]
        # Waiting since it was due: created, or released from its hold (outbox._due).
        row = self._db.execute(
            """SELECT min(max(created_at, coalesce(json_extract(options, '$.due'), 0)))
               FROM deliveries
               WHERE state IN ('pending', 'sending')
               AND NOT (state = 'pending' AND attempts = 0 AND not_before > ?)""",
            (time.time() if now is None else now,),
        ).fetchone()
        counts.oldest_pending_created = row[0]
        return counts

    async def oldest_due(self, sinks: Sequence[str]) -> float | None:
        """The earliest `not_before` of the pending deliveries of these sinks (for /healthz)."""
        if not sinks:
            return None
        placeholders = ",".join("?" * len(sinks))
        row = self._db.execute(
            f"""SELECT min(not_before) FROM deliveries
                WHERE state = 'pending' AND sink IN ({placeholders})""",
            tuple(sinks),
        ).fetchone()
        return float(row[0]) if row[0] is not None else None

    async def list_deliveries(
        self, states: Sequence[str] = ("pending", "sending", "failed")
    ) -> list[DeliveryInfo]:
        """Deliveries in these states, oldest first."""
        placeholders = ",".join("?" * len(states))
        rows = self._db.execute(
            f"""SELECT d.*, e.kind, e.streamer_key
                FROM deliveries d JOIN events e ON e.id = d.event_row
                WHERE d.state IN ({placeholders}) ORDER BY d.created_at, d.id""",
            tuple(states),
        ).fetchall()
        return [info_from_row(row) for row in rows]

    async def deliveries_for_event(self, event_row: int) -> list[DeliveryInfo]:
        """Every delivery row of one event, in the order they were queued."""
        rows = self._db.execute(
            """SELECT d.*, e.kind, e.streamer_key
               FROM deliveries d JOIN events e ON e.id = d.event_row
               WHERE d.event_row = ? ORDER BY d.id""",
            (event_row,),
        ).fetchall()
        return [info_from_row(row) for row in rows]

    async def retry_failed(self, *, now: float) -> int:
        """Re-queue every failed delivery, due now, attempts kept; returns how many."""
        cursor = self._db.execute(
            """UPDATE deliveries SET state = 'pending', not_before = ?, updated_at = ?
               WHERE state = 'failed'""",
            (now, now),
        )
        return cursor.rowcount

    async def cards(self, event_row: int) -> dict[tuple[str, str], int]:
        """The deliveries that posted an event's messages (a session's cards), by chat."""
        rows = self._db.execute(
            """SELECT sink, target, id FROM deliveries
               WHERE event_row = ? AND action = 'post'""",
            (event_row,),
        ).fetchall()
        return {(row[0], row[1]): row[2] for row in rows}

    async def release_held(self, event_row: int, *, now: float) -> int:
        """Make an event's deliveries that are held back for later due now; returns how many."""
        cursor = self._db.execute(
            """UPDATE deliveries SET not_before = ?, options = json_set(options, '$.due', ?),
                                     updated_at = ?
               WHERE event_row = ? AND state = 'pending' AND not_before > ?""",
            (now, now, now, event_row, now),
        )
        return cursor.rowcount

    async def cancel_pending(self, event_row: int, *, reason: str, now: float) -> int:
        """Call off an event's deliveries that were not sent yet; returns how many."""
        cursor = self._db.execute(
            """UPDATE deliveries SET state = 'cancelled', last_error = ?, updated_at = ?
               WHERE event_row = ? AND state = 'pending'""",
            (reason, now, event_row),
        )
        return cursor.rowcount

    async def reached_targets(self, event_row: int) -> set[tuple[str, str]]:
        """The (sink, target) pairs an event's deliveries went or are going out to.

        Cancelled deliveries do not count; failed ones do, since a failed card edit may
        have left anything on screen.
        """
        rows = self._db.execute(
            """SELECT DISTINCT sink, target FROM deliveries
               WHERE event_row = ? AND state != 'cancelled'""",
            (event_row,),
        ).fetchall()
        return {(row[0], row[1]) for row in rows}

    async def delivery_status(self, delivery_id: int) -> tuple[str, str | None]:
        """(state, platform message id) of one delivery."""
        row = self._db.execute(
            "SELECT state, message_id FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
        if row is None:
            raise KeyError(delivery_id)
        return row[0], row[1]

    async def set_message_id(self, delivery_id: int, message_id: str) -> None:
        """Point a delivery at another platform message (a card posted anew)."""
        self._db.execute(
            "UPDATE deliveries SET message_id = ? WHERE id = ?", (message_id, delivery_id)
        )

    async def failed_count(self, sink: str, target: str) -> int:
        """How many deliveries to one chat (or its forum topics) failed for good."""
        row = self._db.execute(
            """SELECT count(*) FROM deliveries WHERE sink = ? AND state = 'failed'
               AND (target = ? OR target LIKE ? || '/%')""",
            (sink, target, target),
        ).fetchone()
        return int(row[0])

    async def sent_elsewhere(self, sink: str, chat: str, *, since: float) -> list[float]:
        """Sends to a chat recorded by earlier runs (one process per SQLite file). By
        the index of migration 11, whose expression this repeats so SQLite uses it."""
        rows = self._db.execute(
            """SELECT updated_at FROM deliveries
               WHERE sink = ? AND substr(target, 1, instr(target || '/', '/') - 1) = ?
                 AND state = 'sent' AND updated_at > ? AND claimed_by IS NOT ?
               ORDER BY updated_at""",
            (sink, chat, since, self.owner),
        ).fetchall()
        return [float(row[0]) for row in rows]

    # -- chats that moved ----------------------------------------------------------

    async def move_target(self, sink: str, old: str, new: str, *, now: float) -> bool:
        """Follow a chat to its new id, exactly once (see `bot.store.MoveStore`)."""
        # Atomic on its own, or a step of the caller's transaction.
        with self._savepoint() if self._db.in_transaction else self._transaction():
            cursor = self._db.execute(
                """INSERT INTO target_moves (sink, old_target, new_target, moved_at)
                   VALUES (?, ?, ?, ?) ON CONFLICT (sink, old_target) DO NOTHING""",
                (sink, old, new, now),
            )
            if cursor.rowcount != 1:
                return False
            # The chat itself and its forum topics ("old/7" -> "new/7"), never "old7".
            where = "sink = ? AND (target = ? OR substr(target, 1, length(?) + 1) = ? || '/')"
            chat = (sink, old, old, old)
            moved_target = "? || substr(target, length(?) + 1)"
            self._move_chat_rows("subscriptions", where, chat, old, new)
            self._move_chat_rows("mutes", where, chat, old, new)
            # A delivery the new id already has (the same event and action) stays where it
            # was; called off if it was still to go out, so the chat gets it once.
            self._db.execute(
                f"""UPDATE deliveries SET target = {moved_target}, updated_at = ?
                    WHERE {where} AND NOT EXISTS (
                        SELECT 1 FROM deliveries AS d WHERE d.event_row = deliveries.event_row
                        AND d.sink = deliveries.sink AND d.action = deliveries.action
                        AND d.target = ? || substr(deliveries.target, length(?) + 1))""",
                (new, old, now, *chat, new, old),
            )
            self._db.execute(
                f"""UPDATE deliveries SET state = 'cancelled', updated_at = ?,
                    last_error = 'cancelled: the chat moved to ' || ? || ', which has it already'
                    WHERE {where} AND state IN ('pending', 'sending')""",
                (now, new, *chat),
            )
        return True

    def _move_chat_rows(
        self, table: str, where: str, chat: tuple[str, ...], old: str, new: str
    ) -> None:
        """Re-address the subscriptions or mutes of a chat that moved. Where the new id
        has the same pattern already, one row stays: for mutes, the one lasting longer
        (None: until unmuted)."""
        mutes = table == "mutes"
        columns = "id, target, pattern" + (", until" if mutes else "")
        rows = self._db.execute(f"SELECT {columns} FROM {table} WHERE {where}", chat).fetchall()
        for row in rows:
            target = new + row["target"][len(old) :]
            there = self._db.execute(
                f"SELECT {columns} FROM {table} WHERE sink = ? AND target = ? AND pattern = ?",
                (chat[0], target, row["pattern"]),
            ).fetchone()
            if there is None:
                self._db.execute(
                    f"UPDATE {table} SET target = ? WHERE id = ?", (target, row["id"])
                )
                continue
            if mutes:
                until = (
                    None
                    if row["until"] is None or there["until"] is None
                    else max(row["until"], there["until"])
                )
                self._db.execute("UPDATE mutes SET until = ? WHERE id = ?", (until, there["id"]))
            self._db.execute(f"DELETE FROM {table} WHERE id = ?", (row["id"],))

    async def moved_targets(self, sink: str | None = None) -> dict[tuple[str, str], str]:
        """Every recorded move (of one sink's chats, when given): (sink, old) -> new."""
        if self.read_only and await self.schema_version() < _MOVES_SCHEMA:
            return {}  # written before moves were kept (and not migrated here)
        if sink is None:
            rows = self._db.execute(
                "SELECT sink, old_target, new_target FROM target_moves"
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT sink, old_target, new_target FROM target_moves WHERE sink = ?", (sink,)
            ).fetchall()
        return {(row[0], row[1]): row[2] for row in rows}

    # -- source state --------------------------------------------------------------

    async def source_value(self, source: str, key: str) -> str | None:
        """The value stored under `key` for `source`, or None."""
        if self.read_only and await self.schema_version() < _SOURCE_STATE_SCHEMA:
            return None  # written before sources kept state (and not migrated here)
        row = self._db.execute(
            "SELECT value FROM source_state WHERE source = ? AND key = ?", (source, key)
        ).fetchone()
        return None if row is None else str(row[0])

    async def set_source_value(self, source: str, key: str, value: str, *, now: float) -> None:
        """Store `value` under `key` for `source`, committed (or a step of the caller's
        transaction)."""
        with self._savepoint() if self._db.in_transaction else self._transaction():
            self._db.execute(
                """INSERT INTO source_state (source, key, value, updated_at) VALUES (?, ?, ?, ?)
                   ON CONFLICT (source, key) DO UPDATE
                   SET value = excluded.value, updated_at = excluded.updated_at""",
                (source, key, value, now),
            )

    # -- the process -------------------------------------------------------------------

    async def heartbeat(self, *, now: float) -> int:
        """This process is alive; on one SQLite file it is the only one (its lock file
        says so), so a row a crashed run left is forgotten at once."""
        with self._transaction():
            self._db.execute("DELETE FROM processes WHERE id != ?", (self.owner,))
            self._db.execute(
                """INSERT INTO processes (id, started_at, seen_at) VALUES (?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at""",
                (self.owner, now, now),
            )
            self._db.execute(
                """UPDATE deliveries SET lease_until = ?
                   WHERE state = 'sending' AND claimed_by = ?""",
                (now + LEASE_SECONDS, self.owner),
            )
        return 1

    async def unaware_of(self, joined: float, *, now: float, quiet: float) -> int:
        """None: no other process uses this file (its lock file)."""
        del joined, now, quiet
        return 0

    async def hold_role(self, role: str) -> bool:
        """One process per SQLite file (its lock file): every role is this one's."""
        del role
        return True

    async def release_role(self, role: str) -> None:
        """Nothing to give up: no other process could take it."""
        del role

    def on_deliveries_queued(self, callback: Callable[[str], None]) -> None:
        """Nothing to listen to: this process queues all there is, and wakes its own
        workers as it does."""
        del callback

    async def take_turn(self, name: str, spacing: float) -> float:
        """The turn at `name`, if its last one (by this process, or by a run before it:
        a restart identifies with Discord again) was `spacing` ago."""
        with self._transaction():
            now = time.time()
            row = self._db.execute("SELECT at FROM turns WHERE name = ?", (name,)).fetchone()
            if row is not None and row["at"] <= now < row["at"] + spacing:
                return float(row["at"]) + spacing - now
            self._db.execute(
                """INSERT INTO turns (name, at) VALUES (?, ?)
                   ON CONFLICT (name) DO UPDATE SET at = excluded.at""",
                (name, now),
            )
        return 0.0

    # -- moving to another backend (bot.store.transfer) ------------------------------

    def table_rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of one of the TRANSFER_TABLES, as stored, in row order (read in the
        caller's transaction, so all tables are one consistent snapshot)."""
        assert table in TRANSFER_TABLES
        order = "id" if table in _IDENTITY_TABLES else "rowid"
        rows = self._db.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
        return [dict(row) for row in rows]


#: What `store migrate` copies, parents before children (deliveries refer to events).
TRANSFER_TABLES: Final = (
    "events",
    "streams",
    "deliveries",
    "mutes",
    "subscriptions",
    "target_moves",
    "source_state",
)
_IDENTITY_TABLES: Final = frozenset({"events", "deliveries", "mutes", "subscriptions"})


def _chunks(values: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


if TYPE_CHECKING:
    # mypy proves here that the SQLite backend implements the whole Store Protocol.
    _implements: type[Store] = SQLiteStore
