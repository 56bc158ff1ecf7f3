"""The PostgreSQL backend of the store: a pool of asyncpg connections to one database that
several bot processes can share (`[storage] url`).

asyncpg, not psycopg 3: it is asyncio-native (no thread hop per query), speaks the binary
protocol with prepared statements cached per connection, and is the driver the asyncio
world runs PostgreSQL on; its errors carry PostgreSQL's SQLSTATE, which is what decides
here between "the database cannot do this now" (StoreUnavailable) and a bug.

Transactions follow the Store contract: every method is atomic on its own (one
statement on a pooled connection, autocommitted, or a transaction of its own), and
`transaction()` binds one connection to the calling task (a context variable) until it
commits, so the task's calls inside it are one unit and other tasks are not part of it.
Write transactions take one transaction-scoped advisory lock, so they run one at a time
across every process on the database, as SQLite's `BEGIN IMMEDIATE` makes them run:
the pipeline's read-then-write steps (a stream's session, a card's refs) need no other
locking to stay correct with several processes. Outbox claims take it too, so the check
that no other process is sending to a chat sees every claim made before it (a chat's
messages stay in order); single statements (a send's outcome, a heartbeat) do not, and
neither do the intake's inserts of new events (`transaction(serial=False)`): the unique
key dedupes them without it (a second insert of a key waits for the first to commit,
then does nothing), and they are most of the writes under load, which the lock made
every process's webhooks wait for in turn (docs/performance.md).

Several processes: each names itself (bot.store.process) on the deliveries it claims,
for a lease its heartbeat renews; a dead process's claims are claimable again once the
lease runs out. `hold_role` elects the one process that does a job only one may do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar, overload

import asyncpg
from asyncpg.pool import PoolConnectionProxy

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
    redacted,
)
from bot.store.migrations import statements
from bot.store.postgres_schema import POSTGRES_MIGRATIONS
from bot.store.process import LEASE_SECONDS, PROCESS_ID
from bot.store.rows import delivery_from_row, info_from_row, stream_from_row

log = logging.getLogger(__name__)

#: The advisory lock every write transaction holds: one at a time on the database
#: (the number is arbitrary; it only has to be the same in every process).
WRITE_LOCK: Final = 0x5354_4D42  # "STMB"
#: The advisory lock migrations hold, so two processes starting at once migrate once.
MIGRATION_LOCK: Final = 0x5354_4D43
#: A serial write transaction's start: one simple-protocol query, one round trip.
_BEGIN_SERIAL: Final = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
#: Whether delivery `d`'s chat has a send in flight under a live lease ($3: now), by
#: another row: its process goes on with the chat, so nobody else claims for it. By
#: chat, forum topics ("-100123/42") with their group: Telegram counts a group's
#: messages together, and the process sending to it keeps that count (with the others'
#: recent sends from the database, `sent_elsewhere`), so no two send there at once.
_CHAT_IN_A_LIVE_SEND: Final = """EXISTS (
    SELECT 1 FROM deliveries s
    WHERE s.sink = d.sink AND split_part(s.target, '/', 1) = split_part(d.target, '/', 1)
    AND s.id != d.id AND s.state = 'sending' AND coalesce(s.lease_until, 0) >= $3)"""
#: A claim of due deliveries ($1 and $3: now, $2: the sink, $4: busy targets, $5: how
#: many, $6: this process, $7: its lease's end). See `claim_due` for the locking.
_CLAIM: Final = f"""UPDATE deliveries SET state = 'sending', attempts = attempts + 1,
       updated_at = $1, claimed_by = $6, lease_until = $7
WHERE id IN (
    SELECT d.id FROM deliveries d
    WHERE d.sink = $2 AND d.not_before <= $3
    AND (d.state = 'pending' OR (d.state = 'sending' AND coalesce(d.lease_until, 0) < $3))
    AND NOT (d.target = ANY($4::text[]))
    AND NOT {_CHAT_IN_A_LIVE_SEND}
    ORDER BY d.not_before, d.id LIMIT $5
    FOR UPDATE OF d SKIP LOCKED)
RETURNING *"""
#: A claim on its own is one round trip where a transaction begun by hand is three
#: (BEGIN and the lock, the claim, COMMIT), and each batch of every send begins with
#: one: this function takes the write lock and claims, in its statement's transaction,
#: which ends (with the lock) as it returns. A volatile PL/pgSQL function takes a new
#: snapshot for each statement, so the claim sees every claim committed before the
#: lock was granted, as in a transaction begun by hand. It lives in the connection's
#: own temporary schema: nothing to migrate, and its SQL stays here, beside the rest.
_CLAIM_FUNCTION: Final = f"""CREATE OR REPLACE FUNCTION pg_temp.streambot_claim(
    double precision, text, double precision, text[], integer, text, double precision)
RETURNS SETOF deliveries LANGUAGE plpgsql AS $claim$
BEGIN
    PERFORM pg_advisory_xact_lock({WRITE_LOCK});
    RETURN QUERY {_CLAIM};
END $claim$"""
_CALL_CLAIM: Final = "SELECT * FROM pg_temp.streambot_claim($1, $2, $3, $4, $5, $6, $7)"
#: Every array type the store's statements take, for a new connection to learn at once:
#: asyncpg looks up a type it has no codec of its own for (an array of timestamps, of
#: bytes...) with a catalog query of some 5 ms the first time a connection meets it,
#: which was inside the first webhooks and sends that each connection served.
_TYPES_USED: Final = """SELECT NULL::bigint[], NULL::bool[], NULL::bytea[], NULL::float8[],
       NULL::text[], NULL::timestamptz[]"""
#: The class of the roles' advisory locks (`hold_role`: this, and the role name's hash).
ROLE_LOCKS: Final = 0x5354_4D45
#: How long a statement waits for a lock (another process's transaction) before it is a
#: StoreUnavailable(busy=True) for the caller to retry: long transactions never happen
#: here, so a wait this long means something is stuck.
LOCK_TIMEOUT: Final = "10s"
POOL_MAX: Final = 10
#: How long `close` tries to take the process's heartbeat row away.
CLOSE_GOODBYE_SECONDS: Final = 2.0
# The schemas that added target_moves and source_state (postgres_schema.py): a read-only
# store (`check`) on an older or empty database reads them as empty.
_MOVES_SCHEMA: Final = 7
_SOURCE_STATE_SCHEMA: Final = 8

# SQLSTATE classes and codes that mean "not now" rather than "wrong": connection trouble
# (08), insufficient resources (53: disk full, out of memory, too many connections),
# operator intervention (57: shutdown, cancel), system errors (58), a read-only server
# (25006), lock timeouts (55P03) and transaction conflicts (40: serialization, deadlock).
_UNAVAILABLE_CLASSES: Final = ("08", "53", "57", "58", "40")
_UNAVAILABLE_CODES: Final = frozenset({"25006", "55P03", "55006"})
_BUSY_CODES: Final = frozenset({"55P03", "40001", "40P01"})

T = TypeVar("T")
#: A pooled connection (what `pool.acquire()` hands out).
Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"


@dataclass(slots=True)
class _Transaction:
    """The connection a task's transaction runs on, and whether it changed anything."""

    conn: Conn
    changed: bool = False
    #: Savepoints opened so far, for each one's name.
    savepoints: int = 0


_current: ContextVar[_Transaction | None] = ContextVar("postgres_transaction", default=None)


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The StoreUnavailable for a driver or network error, or None for one that is a bug
    (a constraint violated, a statement wrong), which stays as it is."""
    code = getattr(exc, "sqlstate", None)
    if isinstance(code, str):
        if not (code.startswith(_UNAVAILABLE_CLASSES) or code in _UNAVAILABLE_CODES):
            return None
        message = getattr(exc, "message", None) or str(exc)
        return StoreUnavailable(f"{code}: {message}", code=code, busy=code in _BUSY_CODES)
    if isinstance(exc, OSError | asyncpg.InterfaceError | TimeoutError):
        name = type(exc).__name__
        return StoreUnavailable(f"{name}: {exc}", code=name)
    return None


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset of a connection handed back: nothing beyond what asyncpg always
    does (roll back a transaction left open). Its default reset is a round trip on every
    release (unlock all advisory locks, close cursors, UNLISTEN, RESET ALL), on every
    store call; pooled connections here never leave session state: their advisory locks
    are transaction-scoped, and the roles' session locks and the LISTEN have connections
    of their own."""
    del conn


async def _rollback(conn: Conn, statement: str) -> None:
    """Undo a transaction or a savepoint the block raised out of. A connection that
    cannot (it broke, or the task is being cancelled) is the pool's to reset, and the
    block's own error is the one to raise."""
    with contextlib.suppress(Exception):
        await conn.execute(statement)


def _changed(status: str) -> bool:
    """Whether a command status ("UPDATE 3", "INSERT 0 1", "DELETE 0") changed rows."""
    words = status.split()
    return bool(words) and words[-1].isdigit() and int(words[-1]) > 0


# Store.take_turn: the turn is taken (a row returned) when its last one is `spacing` ago,
# or more than `spacing` in the future (a server clock that jumped back); else how long
# until it may be. Only that far ahead: `excluded.at` is read before the statement waits
# for the row, so a process that asked a hair before another, and waited for its
# commit, sees that turn a little in its future; counting it as a clock jump gave both
# the turn (two IDENTIFYs a millisecond apart, refused by Discord).
_TAKE_TURN: Final = """
    INSERT INTO turns AS turn (name, at) VALUES ($1, extract(epoch FROM clock_timestamp()))
    ON CONFLICT (name) DO UPDATE SET at = excluded.at
    WHERE turn.at + $2 <= excluded.at OR turn.at > excluded.at + $2
    RETURNING 0"""
_TURN_WAIT: Final = """
    SELECT at + $2 - extract(epoch FROM clock_timestamp()) FROM turns WHERE name = $1"""
#: The NOTIFY channel of Store.add_delivery, its payload the sink.
QUEUED_CHANNEL: Final = "streambot_queued"
#: Tries of Store.take_turn before it answers "wait the spacing".
_TURN_READS: Final = 3


class PostgresStore:
    """The bot's PostgreSQL database (implements `bot.store.Store`)."""

    #: Any number of bot processes, on any machines.
    shared = True

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        read_only: bool = False,
        pool_max: int = POOL_MAX,
        lease: float = LEASE_SECONDS,
        owner: str = PROCESS_ID,
    ) -> None:
        """A store for the database at `url` (password in it, or given), opened by `open()`.

        `read_only` (`check`) opens an existing database for reading only, neither
        creating nor migrating it. Any number of bot processes may open one database.
        """
        #: How long this process's claims and heartbeat hold unrenewed ([storage] lease).
        self.lease = lease
        #: This process, on its claims and its heartbeat row (bot.store.process).
        self.owner = owner
        # The connection holding this process's roles (`hold_role`), and which it holds.
        self._roles_conn: asyncpg.Connection | None = None
        self._roles: set[str] = set()
        self._roles_lock = asyncio.Lock()
        # The connection LISTENing for queued deliveries (`on_deliveries_queued`).
        self._listener: asyncpg.Connection | None = None
        self.rank = 0
        # Whether this store has written the process's heartbeat row (`close` removes it).
        self._beaten = False
        self._on_queued: Callable[[str], None] | None = None
        # The server pids of this store's pooled connections, whose NOTIFYs are its own.
        self._own_pids: set[int] = set()
        # Whether a claim can be one statement (`_CLAIM_FUNCTION`; a role without the
        # TEMPORARY privilege cannot make it).
        self._claims_in_one = True
        self._url = url
        self._password = password
        self.read_only = read_only
        self.location = redacted(url)
        self._pool_max = pool_max
        self._pool: asyncpg.Pool | None = None
        #: The outcome of the last write attempt (for /healthz and the log).
        self.health = WriteHealth()

    # -- lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        """Connect the pool and bring the schema up to date (unless read-only)."""
        settings = self._settings()
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                password=self._password,
                # Every connection opened, and made ready (`_own_connection`), before the
                # first webhook, and kept, with its prepared statements, however quiet
                # the bot is: a notification is rarely more than one an hour, and each
                # found its connection closed (5 idle minutes, asyncpg's default) and
                # its statements forgotten (likewise), and paid for them again.
                min_size=self._pool_max,
                max_size=self._pool_max,
                max_inactive_connection_lifetime=0,
                max_cached_statement_lifetime=0,
                server_settings=settings,
                # asyncpg's prepared-statement cache cannot work through a transaction-
                # pooling PgBouncer; the statements here are few, so it costs little.
                statement_cache_size=0 if "pgbouncer" in self._url else 100,
                init=self._own_connection,
                reset=_keep_session,
            )
        except Exception as exc:
            error = unavailable(exc) or StoreUnavailable(
                f"{type(exc).__name__}: {exc}", code=type(exc).__name__
            )
            self.health.failed(error)
            raise error from exc
        if not self.read_only:
            await self._migrate()

    async def _own_connection(self, conn: asyncpg.Connection) -> None:
        """A new pooled connection: what it NOTIFYs is this process's own (`_heard`),
        and the types of the store's statements are known to it from the start."""
        pid = conn.get_server_pid()
        self._own_pids.add(pid)
        conn.add_termination_listener(lambda _conn: self._own_pids.discard(pid))
        await conn.fetchrow(_TYPES_USED)

    def _settings(self) -> dict[str, str]:
        """The server settings of every connection this store opens."""
        settings = {
            "lock_timeout": LOCK_TIMEOUT,
            "application_name": "streambot",
            # A machine that vanishes (no FIN, no RST) is noticed within about 25 s, so
            # the locks and leases its connections held move on within the lease.
            "tcp_keepalives_idle": "10",
            "tcp_keepalives_interval": "5",
            "tcp_keepalives_count": "3",
        }
        if self.read_only:
            settings["default_transaction_read_only"] = "on"
        return settings

    async def hold_role(self, role: str) -> bool:
        """Whether this process holds `role`: a session advisory lock on a connection of
        its own, so PostgreSQL lets go of it the moment the process (or its machine, by
        the keepalives) is gone. A broken connection loses every role it held: they are
        asked for anew on a new one, and may have gone to another process meanwhile."""
        async with self._roles_lock:
            for attempt in (1, 2):
                try:
                    return await self._take_role(role)
                except Exception as exc:
                    error = unavailable(exc)
                    if error is None:
                        raise
                    self._drop_roles(f"the connection holding them broke ({error})")
                    if attempt == 2:
                        raise error from exc
            raise AssertionError("unreachable")

    async def _take_role(self, role: str) -> bool:
        conn = self._roles_conn
        if conn is not None and conn.is_closed():
            self._drop_roles("the connection holding them closed")
            conn = None
        if conn is None:
            conn = self._roles_conn = await asyncpg.connect(
                self._url, password=self._password, server_settings=self._settings()
            )
        if role in self._roles:
            await conn.fetchval("SELECT 1")  # the connection is there: the lock is held
            return True
        taken = bool(
            await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", ROLE_LOCKS, role)
        )
        if taken:
            self._roles.add(role)
        return taken

    async def release_role(self, role: str) -> None:
        """Unlock `role` on the roles' connection, so the next process asking takes it."""
        async with self._roles_lock:
            if role not in self._roles:
                return
            self._roles.discard(role)
            conn = self._roles_conn
            if conn is None or conn.is_closed():
                return  # gone with its connection already
            try:
                await conn.fetchval(
                    "SELECT pg_advisory_unlock($1, hashtext($2))", ROLE_LOCKS, role
                )
            except Exception as exc:
                error = unavailable(exc)
                if error is None:
                    raise
                # Dropping the connection frees every lock it held: this one goes too.
                self._drop_roles(f"the connection holding them broke ({error})")

    def _drop_roles(self, why: str) -> None:
        if self._roles:
            log.warning("database: roles %s lost: %s", ", ".join(sorted(self._roles)), why)
        self._roles.clear()
        if self._roles_conn is not None:
            self._roles_conn.terminate()
            self._roles_conn = None

    async def close(self) -> None:
        """Take this process's heartbeat row away, so that the others take its share of
        the limits at once (and one that starts next need not wait for it to count
        them), then close every connection (idempotent). A process killed leaves its
        row; the others forget it once it is older than the lease."""
        if self._beaten and self._pool is not None:
            self._beaten = False
            # A database out of reach must not hold the shutdown up: the row then ages out.
            with contextlib.suppress(StoreUnavailable, TimeoutError):
                async with asyncio.timeout(CLOSE_GOODBYE_SECONDS):
                    await self._write("DELETE FROM processes WHERE id = $1", self.owner)
        if self._listener is not None:
            listener, self._listener = self._listener, None
            with contextlib.suppress(Exception):
                await listener.close()
        if self._roles_conn is not None:
            roles, self._roles_conn = self._roles_conn, None
            self._roles.clear()
            with contextlib.suppress(Exception):
                await roles.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _migrate(self) -> None:
        async with self._pool_conn() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                version = await self._version(conn)
                if version > len(POSTGRES_MIGRATIONS):
                    raise DatabaseTooNew(
                        f"{self.location} was written by a newer version of the bot (schema"
                        f" {version}; this one knows up to {len(POSTGRES_MIGRATIONS)}):"
                        " upgrade the bot, or point [storage] url at another database"
                    )
                for number, script in enumerate(POSTGRES_MIGRATIONS[version:], start=version + 1):
                    async with conn.transaction():
                        for statement in statements(script):
                            await conn.execute(statement)
                        await conn.execute("UPDATE streambot_schema SET version = $1", number)
                    log.info("database %s migrated to schema %d", self.location, number)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    @staticmethod
    async def _version(conn: Conn) -> int:
        exists = await conn.fetchval("SELECT to_regclass('streambot_schema') IS NOT NULL")
        if not exists:
            return 0
        return int(await conn.fetchval("SELECT version FROM streambot_schema"))

    async def schema_version(self) -> int:
        """The schema version the database is at."""
        return await self._read(self._version)

    # -- connections and transactions ---------------------------------------------------

    @asynccontextmanager
    async def _pool_conn(self) -> AsyncIterator[Conn]:
        if self._pool is None:
            raise RuntimeError("store is not open")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except Exception as exc:
            error = unavailable(exc)
            if error is None:
                raise
            raise error from exc

    async def _read(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `work` on the task's transaction connection, or on a pooled one."""
        tx = _current.get()
        if tx is not None:
            return await self._in(tx, work, write=False)
        async with self._pool_conn() as conn:
            return await work(conn)

    async def _write(self, sql: str, *args: Any) -> str:
        """Run one changing statement; its command status ("UPDATE 2")."""
        return await self._change(lambda c: c.execute(sql, *args), _changed)

    async def _write_returning(self, sql: str, *args: Any) -> Any:
        """One changing statement whose first value is wanted (`RETURNING id`)."""
        return await self._change(lambda c: c.fetchval(sql, *args), lambda v: v is not None)

    async def _write_rows(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """One changing statement whose rows are wanted (`RETURNING ...`)."""
        return await self._change(lambda c: c.fetch(sql, *args), bool)

    async def _change(
        self, work: Callable[[Conn], Awaitable[T]], changed: Callable[[T], bool]
    ) -> T:
        """A changing statement (`work`): in the task's transaction, or autocommitted on
        a pooled connection. `changed` tells from its outcome whether it changed
        anything: a write that did says the database takes writes (`health`)."""
        tx = _current.get()
        if tx is not None:
            outcome = await self._in(tx, work, write=True)
            tx.changed = tx.changed or changed(outcome)
            return outcome
        try:
            async with self._pool_conn() as conn:
                outcome = await work(conn)
        except StoreUnavailable as exc:
            self.health.failed(exc)
            raise
        if changed(outcome):
            self.health.succeeded()
        return outcome

    async def _in(
        self,
        tx: _Transaction,
        work: Callable[[Conn], Awaitable[T]],
        *,
        write: bool,
    ) -> T:
        try:
            return await work(tx.conn)
        except Exception as exc:
            error = unavailable(exc)
            if error is None:
                raise
            if write:
                self.health.failed(error)
            raise error from exc

    @asynccontextmanager
    async def transaction(self, *, serial: bool = True) -> AsyncIterator[None]:
        """One write transaction; rolled back if the block raises. Serial ones hold the
        write lock; the others (inserts a unique key dedupes) run beside them."""
        async with self._transaction(serial=serial):
            yield

    @asynccontextmanager
    async def _transaction(self, *, serial: bool = True) -> AsyncIterator[_Transaction]:
        if _current.get() is not None:
            raise RuntimeError("a transaction is already open on this store")
        async with self._pool_conn() as conn:
            tx = _Transaction(conn)
            token = _current.set(tx)
            try:
                try:
                    # By hand, not asyncpg's conn.transaction(): BEGIN and the lock as
                    # one simple-protocol query are one round trip where they were two,
                    # and a serial transaction is on every delivery's path (#20).
                    try:
                        await conn.execute(_BEGIN_SERIAL if serial else "BEGIN")
                        yield tx
                    except BaseException:
                        await _rollback(conn, "ROLLBACK")
                        raise
                    await conn.execute("COMMIT")
                except Exception as exc:
                    error = unavailable(exc)
                    if error is None:
                        raise
                    self.health.failed(error)
                    raise error from exc
            finally:
                _current.reset(token)
        if tx.changed:
            self.health.succeeded()

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested step inside a transaction; only its own changes roll back if it raises."""
        async with self._savepoint():
            yield

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        tx = _current.get()
        if tx is None:
            async with self._transaction():
                yield
            return
        tx.savepoints += 1
        name = f"step_{tx.savepoints}"
        try:
            await tx.conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                await _rollback(tx.conn, f"ROLLBACK TO SAVEPOINT {name}")
                raise
            await tx.conn.execute(f"RELEASE SAVEPOINT {name}")
        except asyncpg.InFailedSQLTransactionError as exc:
            raise TransactionAborted(f"the transaction was rolled back: {exc}") from exc

    @asynccontextmanager
    async def _atomic(self) -> AsyncIterator[None]:
        """Atomic on its own, or a step of the caller's transaction."""
        if _current.get() is not None:
            async with self._savepoint():
                yield
        else:
            async with self._transaction():
                yield

    async def routing_inputs(self, now: float) -> RoutingInputs:
        """Subscriptions, mutes in force and moves, in one statement: three round trips
        were most of a one-event dispatch batch's reads (each batch reads them)."""
        if self.read_only:  # `check`, maybe on a database older than the moves table
            return RoutingInputs(
                subscriptions=await self.subscriptions(),
                mutes=await self.active_mutes(now),
                moves=await self.moved_targets(),
            )
        # JSON carries the three lists in one row; a float8 `until` survives it exactly
        # (PostgreSQL prints the shortest text that reads back as the same double).
        row = await self._read(
            lambda c: c.fetchrow(
                """SELECT
                     (SELECT coalesce(json_agg(json_build_array(sink, target, pattern)
                                               ORDER BY id), '[]')
                      FROM subscriptions)::text,
                     (SELECT coalesce(json_agg(json_build_array(sink, target, pattern, until)
                                               ORDER BY id), '[]')
                      FROM mutes WHERE until IS NULL OR until > $1)::text,
                     (SELECT coalesce(json_agg(json_build_array(sink, old_target, new_target)),
                                      '[]')
                      FROM target_moves)::text""",
                now,
            )
        )
        assert row is not None  # a SELECT of three subqueries is always one row
        subscriptions, mutes, moves = (json.loads(column) for column in row)
        return RoutingInputs(
            subscriptions=[Subscription(*fields) for fields in subscriptions],
            mutes=[Mute(*fields) for fields in mutes],
            moves={(sink, old): new for sink, old, new in moves},
        )

    async def check(self) -> str:
        """'ok', or what is wrong with the database (for /healthz)."""
        if not self.health.ok:
            return f"error: {self.health.error}"
        try:
            await self._read(lambda c: c.fetchval("SELECT count(*) FROM streams"))
        except (StoreUnavailable, RuntimeError) as exc:
            return f"error: {exc}"
        return "ok"

    async def probe_write(self) -> None:
        """Write one row and commit: StoreUnavailable while writes are refused."""
        async with self._transaction():
            await self._write("UPDATE write_probe SET at = $1 WHERE id = 1", time.time())

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
        row_id = await self._write_returning(
            """INSERT INTO events (source, event_id, kind, streamer_key, occurred_at,
                                   received_at, notified, payload, raw, parent_id, dispatched)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
               ON CONFLICT (source, event_id) DO NOTHING RETURNING id""",
            event.source,
            event.event_id,
            event.kind,
            event.streamer_key,
            _aware(event.occurred_at),
            _aware(event.received_at),
            notified,
            json.dumps(event.to_json(), ensure_ascii=False),
            raw,
            parent,
            dispatched,
        )
        return int(row_id) if row_id is not None else None

    async def insert_new_events(
        self, batch: Sequence[tuple[Event, bytes | None]]
    ) -> list[int | None]:
        """Store events for the dispatch stage, in this order, in one statement; per event
        its row id, or None for a duplicate."""
        if not batch:
            return []
        events = [event for event, _raw in batch]
        # Row ids follow the batch's order (ORDER BY n: the identity is drawn row by row
        # as the sorted rows are inserted), as one insert_event after another would give.
        rows = await self._write_rows(
            """INSERT INTO events (source, event_id, kind, streamer_key, occurred_at,
                                   received_at, notified, payload, raw, parent_id, dispatched)
               SELECT source, event_id, kind, streamer_key, occurred_at, received_at,
                      false, payload, raw, NULL, false
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                           $5::timestamptz[], $6::timestamptz[], $7::text[], $8::bytea[])
                    WITH ORDINALITY AS e(source, event_id, kind, streamer_key, occurred_at,
                                         received_at, payload, raw, n)
               ORDER BY n
               ON CONFLICT (source, event_id) DO NOTHING RETURNING id, source, event_id""",
            [e.source for e in events],
            [e.event_id for e in events],
            [e.kind for e in events],
            [e.streamer_key for e in events],
            [_aware(e.occurred_at) for e in events],
            [_aware(e.received_at) for e in events],
            [json.dumps(e.to_json(), ensure_ascii=False) for e in events],
            [raw for _event, raw in batch],
        )
        inserted = {(row["source"], row["event_id"]): int(row["id"]) for row in rows}
        # A key twice in the batch: its first is the one stored, the rest duplicates.
        return [inserted.pop((e.source, e.event_id), None) for e in events]

    async def undispatched(self, *, limit: int = 100) -> list[tuple[int, Event]]:
        """Events stored but not yet dispatched, as (row id, event), in the order stored."""
        rows = await self._read(
            lambda c: c.fetch(
                "SELECT id, payload FROM events WHERE NOT dispatched ORDER BY id LIMIT $1", limit
            )
        )
        return [(row["id"], Event.from_json(json.loads(row["payload"]))) for row in rows]

    async def undispatched_with_streams(
        self, *, limit: int = 100
    ) -> tuple[list[tuple[int, Event]], dict[str, StreamState]]:
        """The batch and its streams in one statement: a dispatch batch's first read is
        one round trip, not two. (The events' `streamer_key` column is the key their
        payload gives, as `insert_event` stored it.)"""
        rows = await self._read(
            lambda c: c.fetch(
                """WITH batch AS (
                       SELECT id, payload, streamer_key FROM events WHERE NOT dispatched
                       ORDER BY id LIMIT $1)
                   SELECT b.id AS event_row, b.payload, s.*
                   FROM batch b LEFT JOIN streams s ON s.streamer_key = b.streamer_key
                   ORDER BY b.id""",
                limit,
            )
        )
        batch = [(row["event_row"], Event.from_json(json.loads(row["payload"]))) for row in rows]
        streams = {
            row["streamer_key"]: stream_from_row(row)
            for row in rows
            if row["streamer_key"] is not None
        }
        return batch, streams

    async def mark_dispatched(self, row_id: int, event: Event, *, notified: bool) -> None:
        """The dispatch stage applied the event: store it as enriched, and whether it was
        notified anywhere."""
        await self._write(
            "UPDATE events SET payload = $1, notified = $2, dispatched = true WHERE id = $3",
            json.dumps(event.to_json(), ensure_ascii=False),
            notified,
            row_id,
        )

    async def mark_many_dispatched(self, marks: Sequence[tuple[int, Event, bool]]) -> None:
        """`mark_dispatched` for several events, in one statement: a round trip each was
        a third of a dispatch batch's under load."""
        if not marks:
            return
        await self._write(_MARK_MANY.format(ids=1, payloads=2, notified=3), *_mark_args(marks))

    async def count_undispatched(self) -> int:
        """How many stored events wait for the dispatch stage (the backlog)."""
        return int(
            await self._read(
                lambda c: c.fetchval("SELECT count(*) FROM events WHERE NOT dispatched")
            )
        )

    async def retire_event_id(
        self, source: str, event_id: str, *, received_before: datetime
    ) -> bool:
        """Free an event id stored before `received_before` for a new event; True if freed."""
        row = await self._read(
            lambda c: c.fetchrow(
                "SELECT id, received_at FROM events WHERE source = $1 AND event_id = $2",
                source,
                event_id,
            )
        )
        if row is None or row["received_at"] >= _aware(received_before):
            return False
        try:
            async with self._atomic():
                await self._write(
                    """UPDATE events SET event_id = event_id || '@' || id
                       WHERE id = $1 OR parent_id = $1""",
                    row["id"],
                )
        except asyncpg.UniqueViolationError:
            log.warning("event id %s of source %r could not be moved aside", event_id, source)
            return False
        return True

    async def load_event(self, row_id: int) -> Event:
        """The stored (enriched) event of a row."""
        payload = await self._read(
            lambda c: c.fetchval("SELECT payload FROM events WHERE id = $1", row_id)
        )
        if payload is None:
            raise KeyError(row_id)
        return Event.from_json(json.loads(payload))

    async def find_event(self, source: str, event_id: str) -> Event | None:
        """The stored event with this (source, event id), if there is one."""
        payload = await self._read(
            lambda c: c.fetchval(
                "SELECT payload FROM events WHERE source = $1 AND event_id = $2",
                source,
                event_id,
            )
        )
        return Event.from_json(json.loads(payload)) if payload is not None else None

    async def recent_events(self, kind: str, *, limit: int = 10) -> list[Event]:
        """The latest stored events of `kind`, newest first (derived ones included)."""
        rows = await self._read(
            lambda c: c.fetch(
                "SELECT payload FROM events WHERE kind = $1 ORDER BY id DESC LIMIT $2",
                kind,
                limit,
            )
        )
        return [Event.from_json(json.loads(row["payload"])) for row in rows]

    async def count_events(self) -> int:
        """How many events are stored (derived ones included)."""
        return int(await self._read(lambda c: c.fetchval("SELECT count(*) FROM events")))

    async def prune(self, *, before: datetime, limit: int = 1000) -> PruneResult:
        """Remove events received before `before` with their deliveries, at most about
        `limit` rows in one transaction (see `bot.store.EventStore.prune`)."""
        cutoff = _aware(before)
        cutoff_at = before.timestamp()
        async with self._transaction() as tx:
            conn = tx.conn
            pinned = await _pinned_events(conn, cutoff)
            fetch = limit + len(pinned)
            rows = await conn.fetch(
                f"""SELECT e.id, (SELECT count(*) FROM deliveries d WHERE d.event_row = e.id)
                    FROM events e WHERE e.received_at < $1 AND {_unfinished("$2")}
                    ORDER BY e.received_at, e.id LIMIT $3""",
                cutoff,
                cutoff_at,
                fetch,
            )
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
            await _with_derived(conn, chosen, pinned, cutoff, cutoff_at)
            if not chosen:
                return PruneResult()
            ids = sorted(chosen, reverse=True)
            status = await self._write("DELETE FROM deliveries WHERE event_row = ANY($1)", ids)
            removed = int(status.split()[-1])
            for column in ("session_row", "end_row"):
                await self._write(
                    f"UPDATE streams SET {column} = NULL WHERE {column} = ANY($1)", ids
                )
            await self._write("DELETE FROM events WHERE id = ANY($1)", ids)
        return PruneResult(events=len(chosen), deliveries=removed, more=more)

    # -- streams -------------------------------------------------------------------

    async def get_stream(self, key: str) -> StreamState | None:
        """The saved state of a stream, or None if it was never seen."""
        row = await self._read(
            lambda c: c.fetchrow("SELECT * FROM streams WHERE streamer_key = $1", key)
        )
        return stream_from_row(row) if row is not None else None

    async def get_streams(self, keys: Sequence[str]) -> dict[str, StreamState]:
        """The saved states of several streams, by key, in one statement; streams never
        seen are left out."""
        if not keys:
            return {}
        rows = await self._read(
            lambda c: c.fetch(
                "SELECT * FROM streams WHERE streamer_key = ANY($1::text[])", list(keys)
            )
        )
        return {row["streamer_key"]: stream_from_row(row) for row in rows}

    async def live_streams(self) -> list[StreamState]:
        """Every stream currently live, longest-running first."""
        rows = await self._read(
            lambda c: c.fetch(
                "SELECT * FROM streams WHERE live ORDER BY started_at NULLS FIRST, streamer_key"
            )
        )
        return [stream_from_row(row) for row in rows]

    async def known_streamers(self) -> list[str]:
        """Every streamer key ever seen, sorted."""
        rows = await self._read(
            lambda c: c.fetch('SELECT streamer_key FROM streams ORDER BY streamer_key COLLATE "C"')
        )
        return [row[0] for row in rows]

    async def save_streams(self, states: Sequence[StreamState], *, now: datetime) -> None:
        """Insert or replace streams' states with their session marks, in one statement
        (a dispatch batch's streams); a key given twice keeps its last state (one
        INSERT ... ON CONFLICT may not change a row twice)."""
        last = list({state.streamer_key: state for state in states}.values())
        if not last:
            return
        await self._write(_SAVE_STREAMS, *_stream_args(last, now))

    async def save_dispatched(
        self,
        states: Sequence[StreamState],
        marks: Sequence[tuple[int, Event, bool]],
        *,
        now: datetime,
    ) -> None:
        """The streams' states and the events' marks in one statement (the first as a
        data-changing WITH, which runs whether or not the rest reads it): the end of a
        dispatch batch is one round trip, not two."""
        last = list({state.streamer_key: state for state in states}.values())
        if not last or not marks:
            await self.save_streams(last, now=now)
            await self.mark_many_dispatched(marks)
            return
        args = _stream_args(last, now)
        first = len(args) + 1
        marking = _MARK_MANY.format(ids=first, payloads=first + 1, notified=first + 2)
        await self._write(f"WITH saved AS ({_SAVE_STREAMS}) {marking}", *args, *_mark_args(marks))

    # -- mutes and subscriptions ---------------------------------------------------

    async def mutes_for(self, sink: str, target: str, now: float) -> list[Mute]:
        """The mutes of one chat still in force at `now`."""
        rows = await self._read(
            lambda c: c.fetch(
                """SELECT sink, target, pattern, until FROM mutes
                   WHERE sink = $1 AND target = $2 AND (until IS NULL OR until > $3)
                   ORDER BY id""",
                sink,
                target,
                now,
            )
        )
        return [Mute(row[0], row[1], row[2], row[3]) for row in rows]

    async def add_mute(
        self, mute: Mute, *, created_by: str | None = None, now: float | None = None
    ) -> None:
        """Mute a chat (replacing an earlier mute of the same pattern)."""
        await self._write(
            """INSERT INTO mutes (sink, target, pattern, until, created_by, created_at)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (sink, target, pattern) DO UPDATE SET
                 until = excluded.until, created_by = excluded.created_by,
                 created_at = excluded.created_at""",
            mute.sink,
            mute.target,
            mute.pattern,
            mute.until,
            created_by,
            now or time.time(),
        )

    async def active_mutes(self, now: float) -> list[Mute]:
        """Every mute of every chat still in force at `now`."""
        rows = await self._read(
            lambda c: c.fetch(
                """SELECT sink, target, pattern, until FROM mutes
                   WHERE until IS NULL OR until > $1 ORDER BY id""",
                now,
            )
        )
        return [Mute(row[0], row[1], row[2], row[3]) for row in rows]

    async def remove_mute(self, sink: str, target: str, pattern: str | None) -> int:
        """Unmute one pattern, or every pattern when `pattern` is None; returns how many."""
        if pattern is None:
            status = await self._write(
                "DELETE FROM mutes WHERE sink = $1 AND target = $2", sink, target
            )
        else:
            status = await self._write(
                "DELETE FROM mutes WHERE sink = $1 AND target = $2 AND pattern = $3",
                sink,
                target,
                pattern,
            )
        return _count(status)

    async def subscriptions(self) -> list[Subscription]:
        """Every run-time subscription."""
        rows = await self._read(
            lambda c: c.fetch("SELECT sink, target, pattern FROM subscriptions ORDER BY id")
        )
        return [Subscription(row[0], row[1], row[2]) for row in rows]

    async def add_subscription(
        self, sub: Subscription, *, created_by: str | None = None, now: float | None = None
    ) -> bool:
        """Add a subscription; False if this chat already had that pattern."""
        status = await self._write(
            """INSERT INTO subscriptions (sink, target, pattern, created_by, created_at)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sink, target, pattern) DO NOTHING""",
            sub.sink,
            sub.target,
            sub.pattern,
            created_by,
            now or time.time(),
        )
        return _count(status) == 1

    async def remove_subscription(self, sub: Subscription) -> bool:
        """Remove a subscription; False if there was none."""
        status = await self._write(
            "DELETE FROM subscriptions WHERE sink = $1 AND target = $2 AND pattern = $3",
            sub.sink,
            sub.target,
            sub.pattern,
        )
        return _count(status) == 1

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
        """Queue one delivery; returns its id. Every process listening hears of it when
        it is committed (NOTIFY; PostgreSQL sends one per sink however many rows)."""
        row_id = await self._write_returning(
            f"""WITH queued AS (
                   INSERT INTO deliveries (event_row, sink, target, action, options,
                                           not_before, created_at, updated_at)
                   VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8) RETURNING id)
               SELECT queued.id FROM queued, pg_notify('{QUEUED_CHANNEL}', $2)""",
            event_row,
            sink,
            target,
            action,
            json.dumps(options or {}),
            not_before,
            now,
            now,
        )
        return int(row_id)

    async def add_deliveries(self, deliveries: Sequence[NewDelivery], *, now: float) -> None:
        """Queue several deliveries in one statement, in order (ids rise with the list, as
        the outbox claims oldest first); every process listening hears of each sink once
        when they are committed."""
        if not deliveries:
            return
        await self._write(
            f"""WITH queued AS (
                   INSERT INTO deliveries (event_row, sink, target, action, options,
                                           not_before, created_at, updated_at)
                   SELECT d.event_row, d.sink, d.target, d.action, d.options::jsonb,
                          d.not_before, $7, $7
                   FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                               $6::float8[]) WITH ORDINALITY
                        AS d(event_row, sink, target, action, options, not_before, n)
                   ORDER BY d.n
                   RETURNING sink)
               SELECT pg_notify('{QUEUED_CHANNEL}', sink)
               FROM (SELECT DISTINCT sink FROM queued) AS sinks""",
            [new.event_row for new in deliveries],
            [new.sink for new in deliveries],
            [new.target for new in deliveries],
            [new.action for new in deliveries],
            [json.dumps(new.options) for new in deliveries],
            [new.not_before for new in deliveries],
            now,
        )

    async def claim_due(
        self, sink: str, *, now: float, busy_targets: Sequence[str] = (), limit: int = 50
    ) -> list[Delivery]:
        """Mark due pending deliveries of a sink as sending and return them, oldest first.

        One statement: the rows are locked as they are chosen, and rows another process
        is writing at the same moment are skipped rather than waited for (`SKIP LOCKED`),
        so two processes never claim one row.
        """
        # Claims are serialized (the write lock), so the check that no other process is
        # sending to a chat sees every claim made before; a row whose sender's lease ran
        # out (that process died) is claimable again, with another attempt counted.
        # The rows are locked in the subquery, not only by the UPDATE: a row whose state
        # another process's single statement is changing (a late sender's mark_sent, say)
        # is skipped, and one changed since this statement's snapshot is checked again on
        # its new version. Without that the UPDATE waited for the row and, re-checking only
        # `id IN (...)`, not the subquery's state test, turned 'sent' back into 'sending':
        # the message went out twice.
        args = (now, sink, now, list(busy_targets), limit, self.owner, now + self.lease)
        rows = None if _current.get() is not None else await self._claim_alone(args)
        if rows is None:
            async with self._atomic():
                rows = await self._write_rows(_CLAIM, *args)
        claimed = sorted(rows, key=lambda row: (row["not_before"], row["id"]))
        return [delivery_from_row(row) for row in claimed]

    async def _claim_alone(self, args: tuple[Any, ...]) -> list[asyncpg.Record] | None:
        """The claim as a transaction of its own, in one round trip (`_CLAIM_FUNCTION`);
        the function is made on a connection's first claim. None when the database
        lets this role make no temporary objects: then claims are transactions."""
        if not self._claims_in_one:
            return None

        async def claim(conn: Conn) -> list[asyncpg.Record] | None:
            try:
                return await conn.fetch(_CALL_CLAIM, *args)
            except (asyncpg.UndefinedFunctionError, asyncpg.InvalidSchemaNameError):
                pass  # not made on this connection yet (nor its temporary schema, maybe)
            try:
                await conn.execute(_CLAIM_FUNCTION)
            except asyncpg.InsufficientPrivilegeError as exc:
                self._claims_in_one = False
                log.info(
                    "database %s: %s (no TEMPORARY privilege); each claim of deliveries"
                    " is a transaction of three round trips instead",
                    self.location,
                    exc,
                )
                return None
            return await conn.fetch(_CALL_CLAIM, *args)

        return await self._change(claim, bool)

    async def next_due(
        self, sink: str, *, busy_targets: Sequence[str] = (), now: float | None = None
    ) -> float | None:
        """When this process can next claim a delivery of a sink, not for a busy target.

        That is the earliest pending row's due time, except for chats another process is
        sending to: those are that process's to go on with (it claims what was queued
        meanwhile as it finishes), so they count only from when its lease runs out, as
        do its claims themselves. Counting them as due now would have every other
        process look at the outbox in a tight loop for as long as one chat is busy.
        """
        moment = time.time() if now is None else now
        value = await self._read(
            lambda c: c.fetchval(
                f"""SELECT least(
                       (SELECT min(d.not_before) FROM deliveries d
                        WHERE d.sink = $1 AND d.state = 'pending'
                        AND NOT (d.target = ANY($2::text[]))
                        AND NOT {_CHAT_IN_A_LIVE_SEND}),
                       (SELECT min(coalesce(lease_until, 0)) FROM deliveries
                        WHERE sink = $1 AND state = 'sending'
                        AND NOT (target = ANY($2::text[]))))""",
                sink,
                list(busy_targets),
                moment,
            )
        )
        return float(value) if value is not None else None

    async def mark_sent(self, delivery_id: int, *, message_id: str | None, now: float) -> None:
        """The platform accepted the message; remember its id for later edits."""
        await self._write(
            """UPDATE deliveries SET state = 'sent', message_id = $1, last_error = NULL,
               updated_at = $2 WHERE id = $3""",
            message_id,
            now,
            delivery_id,
        )

    async def mark_retry(
        self, delivery_id: int, *, error: str, not_before: float, now: float
    ) -> None:
        """Put a delivery back in the queue for a later attempt."""
        await self._write(
            """UPDATE deliveries SET state = 'pending', last_error = $1, not_before = $2,
               updated_at = $3 WHERE id = $4""",
            error,
            not_before,
            now,
            delivery_id,
        )

    async def mark_failed(self, delivery_id: int, *, error: str, now: float) -> None:
        """Give up on a delivery."""
        await self._write(
            """UPDATE deliveries SET state = 'failed', last_error = $1, updated_at = $2
               WHERE id = $3""",
            error,
            now,
            delivery_id,
        )

    async def mark_cancelled(self, delivery_id: int, *, reason: str, now: float) -> None:
        """Call off one delivery (a mute set after it was queued, say)."""
        await self._write(
            """UPDATE deliveries SET state = 'cancelled', last_error = $1, updated_at = $2
               WHERE id = $3""",
            reason,
            now,
            delivery_id,
        )

    async def release_claimed(self, delivery_ids: Sequence[int], *, now: float) -> None:
        """Hand claimed deliveries that were never tried back to the queue, attempt undone."""
        if delivery_ids:
            await self._write(
                """UPDATE deliveries SET state = 'pending', attempts = greatest(attempts - 1, 0),
                   updated_at = $1 WHERE id = ANY($2) AND state = 'sending'""",
                now,
                list(delivery_ids),
            )

    async def requeue_in_flight(self) -> int:
        """At start-up: deliveries left 'sending' by a process that is gone (its lease ran
        out) go back to 'pending'. Other processes' sends in flight are theirs."""
        status = await self._write(
            """UPDATE deliveries SET state = 'pending'
               WHERE state = 'sending' AND coalesce(lease_until, 0) < $1""",
            time.time(),
        )
        return _count(status)

    # -- the process -------------------------------------------------------------------

    async def heartbeat(self, *, now: float) -> int:
        """This process is alive: its row and its claims' leases renewed, processes
        silent for longer than the lease forgotten; how many are alive."""
        await self._write(
            """INSERT INTO processes (id, started_at, seen_at) VALUES ($1, $2, $2)
               ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at""",
            self.owner,
            now,
        )
        self._beaten = True
        await self._write(
            """UPDATE deliveries SET lease_until = $2
               WHERE state = 'sending' AND claimed_by = $1""",
            self.owner,
            now + self.lease,
        )
        await self._write("DELETE FROM processes WHERE seen_at < $1", now - self.lease)
        counted = await self._read(
            lambda c: c.fetchrow(
                """SELECT count(*), count(*) FILTER (WHERE id < $2) FROM processes
                   WHERE seen_at >= $1""",
                now - self.lease,
                self.owner,
            )
        )
        assert counted is not None  # an aggregate always has its one row
        alive, before = counted
        self.rank = int(before)
        await self._listen()
        return max(int(alive), 1)

    async def unaware_of(self, joined: float, *, now: float, quiet: float) -> int:
        """The other processes heard from within `quiet` seconds, not since `joined`."""
        count = await self._read(
            lambda c: c.fetchval(
                """SELECT count(*) FROM processes
                   WHERE id <> $1 AND seen_at >= $2 AND seen_at < $3""",
                self.owner,
                now - quiet,
                joined,
            )
        )
        return int(count)

    def on_deliveries_queued(self, callback: Callable[[str], None]) -> None:
        """LISTEN on a connection of its own, opened at the next heartbeat."""
        self._on_queued = callback

    async def _listen(self) -> None:
        """(Re)open the listening connection if there is a callback and none is open."""
        if self._on_queued is None or (self._listener and not self._listener.is_closed()):
            return
        try:
            conn = await asyncpg.connect(
                self._url, password=self._password, server_settings=self._settings()
            )
            await conn.add_listener(QUEUED_CHANNEL, self._heard)
        except Exception as exc:
            if unavailable(exc) is None:
                raise
            log.debug("database: cannot listen for queued deliveries now (%s)", exc)
            return
        self._listener = conn

    def _heard(self, conn: object, pid: int, channel: str, sink: object) -> None:
        del conn, channel
        # This process's own queueing woke its workers already, in-process (as on
        # SQLite); a second wake only made each sink look at the outbox again, taking
        # the write lock for nothing while the next event's dispatch waited for it.
        if self._on_queued is not None and pid not in self._own_pids:
            self._on_queued(str(sink))

    async def take_turn(self, name: str, spacing: float) -> float:
        """The turn at `name`, if its last one was `spacing` ago, on the server's clock
        (the processes' own may differ by seconds, and a turn is this short). Taking it
        is one statement: ON CONFLICT locks the row and judges its newest version, so of
        processes asking at once one takes it."""
        for _ in range(_TURN_READS):
            taken = await self._write_returning(_TAKE_TURN, name, spacing)
            if taken is not None:
                return 0.0
            wait = await self._read(lambda c: c.fetchval(_TURN_WAIT, name, spacing))
            if wait is not None and wait > 0:
                return min(float(wait), spacing)
            # The turn came free between the two statements: try to take it again.
        return spacing

    async def outbox_counts(self, *, now: float | None = None) -> OutboxCounts:
        """Deliveries per state and the creation time of the oldest one waiting to go out."""
        counts = OutboxCounts()

        async def read(conn: Conn) -> Any:
            for row in await conn.fetch("SELECT state, count(*) FROM deliveries GROUP BY state"):
                counts.by_state[row[0]] = int(row[1])
            return await conn.fetchval(
                """SELECT min(greatest(created_at, coalesce((options->>'due')::float8, 0)))
                   FROM deliveries
                   WHERE state IN ('pending', 'sending')
                   AND NOT (state = 'pending' AND attempts = 0 AND not_before > $1)""",
                time.time() if now is None else now,
            )

        counts.oldest_pending_created = await self._read(read)
        return counts

    async def oldest_due(self, sinks: Sequence[str]) -> float | None:
        """The earliest `not_before` of the pending deliveries of these sinks."""
        if not sinks:
            return None
        value = await self._read(
            lambda c: c.fetchval(
                """SELECT min(not_before) FROM deliveries
                   WHERE state = 'pending' AND sink = ANY($1::text[])""",
                list(sinks),
            )
        )
        return float(value) if value is not None else None

    async def list_deliveries(
        self, states: Sequence[str] = ("pending", "sending", "failed")
    ) -> list[DeliveryInfo]:
        """Deliveries in these states, oldest first."""
        rows = await self._read(
            lambda c: c.fetch(
                """SELECT d.*, e.kind, e.streamer_key
                   FROM deliveries d JOIN events e ON e.id = d.event_row
                   WHERE d.state = ANY($1::text[]) ORDER BY d.created_at, d.id""",
                list(states),
            )
        )
        return [info_from_row(row) for row in rows]

    async def deliveries_for_event(self, event_row: int) -> list[DeliveryInfo]:
        """Every delivery row of one event, in the order they were queued."""
        rows = await self._read(
            lambda c: c.fetch(
                """SELECT d.*, e.kind, e.streamer_key
                   FROM deliveries d JOIN events e ON e.id = d.event_row
                   WHERE d.event_row = $1 ORDER BY d.id""",
                event_row,
            )
        )
        return [info_from_row(row) for row in rows]

    async def retry_failed(self, *, now: float) -> int:
        """Re-queue every failed delivery, due now, attempts kept; returns how many."""
        status = await self._write(
            """UPDATE deliveries SET state = 'pending', not_before = $1, updated_at = $1
               WHERE state = 'failed'""",
            now,
        )
        return _count(status)

    async def cards(self, event_row: int) -> dict[tuple[str, str], int]:
        """The deliveries that posted an event's messages (a session's cards), by chat."""
        rows = await self._read(
            lambda c: c.fetch(
                """SELECT sink, target, id FROM deliveries
                   WHERE event_row = $1 AND action = 'post' ORDER BY id""",
                event_row,
            )
        )
        return {(row[0], row[1]): row[2] for row in rows}

    async def release_held(self, event_row: int, *, now: float) -> int:
        """Make an event's deliveries that are held back for later due now; returns how many."""
        status = await self._write(
            """UPDATE deliveries SET not_before = $1,
                      options = jsonb_set(options, '{due}', to_jsonb($1::float8)),
                      updated_at = $1
               WHERE event_row = $2 AND state = 'pending' AND not_before > $1""",
            now,
            event_row,
        )
        return _count(status)

    async def cancel_pending(self, event_row: int, *, reason: str, now: float) -> int:
        """Call off an event's deliveries that were not sent yet; returns how many."""
        status = await self._write(
            """UPDATE deliveries SET state = 'cancelled', last_error = $1, updated_at = $2
               WHERE event_row = $3 AND state = 'pending'""",
            reason,
            now,
            event_row,
        )
        return _count(status)

    async def reached_targets(self, event_row: int) -> set[tuple[str, str]]:
        """The (sink, target) pairs an event's deliveries went or are going out to."""
        rows = await self._read(
            lambda c: c.fetch(
                """SELECT DISTINCT sink, target FROM deliveries
                   WHERE event_row = $1 AND state != 'cancelled'""",
                event_row,
            )
        )
        return {(row[0], row[1]) for row in rows}

    async def delivery_status(self, delivery_id: int) -> tuple[str, str | None]:
        """(state, platform message id) of one delivery."""
        row = await self._read(
            lambda c: c.fetchrow(
                "SELECT state, message_id FROM deliveries WHERE id = $1", delivery_id
            )
        )
        if row is None:
            raise KeyError(delivery_id)
        return row[0], row[1]

    async def set_message_id(self, delivery_id: int, message_id: str) -> None:
        """Point a delivery at another platform message (a card posted anew)."""
        await self._write(
            "UPDATE deliveries SET message_id = $1 WHERE id = $2", message_id, delivery_id
        )

    async def failed_count(self, sink: str, target: str) -> int:
        """How many deliveries to one chat (or its forum topics) failed for good."""
        value = await self._read(
            lambda c: c.fetchval(
                f"""SELECT count(*) FROM deliveries WHERE sink = $1 AND state = 'failed'
                    AND {_CHAT_OR_TOPIC.format(target="$2")}""",
                sink,
                target,
            )
        )
        return int(value)

    async def sent_elsewhere(self, sink: str, chat: str, *, since: float) -> list[float]:
        """Sends to a chat recorded by the other processes, alive or gone. By the index
        of migration 11, whose expression this repeats so PostgreSQL uses it."""
        rows = await self._read(
            lambda c: c.fetch(
                """SELECT updated_at FROM deliveries
                   WHERE sink = $1 AND split_part(target, '/', 1) = $2
                     AND state = 'sent' AND updated_at > $3
                     AND claimed_by IS DISTINCT FROM $4
                   ORDER BY updated_at""",
                sink,
                chat,
                since,
                self.owner,
            )
        )
        return [float(row["updated_at"]) for row in rows]

    # -- chats that moved ----------------------------------------------------------

    async def move_target(self, sink: str, old: str, new: str, *, now: float) -> bool:
        """Follow a chat to its new id, exactly once (see `bot.store.MoveStore`)."""
        async with self._atomic():
            status = await self._write(
                """INSERT INTO target_moves (sink, old_target, new_target, moved_at)
                   VALUES ($1, $2, $3, $4) ON CONFLICT (sink, old_target) DO NOTHING""",
                sink,
                old,
                new,
                now,
            )
            if _count(status) != 1:
                return False
            await self._move_chat_rows("subscriptions", sink, old, new)
            await self._move_chat_rows("mutes", sink, old, new)
            where = f"sink = $1 AND {_CHAT_OR_TOPIC.format(target='$2')}"
            # A delivery the new id already has (the same event and action) stays where it
            # was; called off if it was still to go out, so the chat gets it once.
            await self._write(
                f"""UPDATE deliveries SET target = $3 || substr(target, length($2) + 1),
                           updated_at = $4
                    WHERE {where} AND NOT EXISTS (
                        SELECT 1 FROM deliveries AS d WHERE d.event_row = deliveries.event_row
                        AND d.sink = deliveries.sink AND d.action = deliveries.action
                        AND d.target = $3 || substr(deliveries.target, length($2) + 1))""",
                sink,
                old,
                new,
                now,
            )
            await self._write(
                f"""UPDATE deliveries SET state = 'cancelled', updated_at = $4,
                    last_error = 'cancelled: the chat moved to ' || $3 || ', which has it already'
                    WHERE {where} AND state IN ('pending', 'sending')""",
                sink,
                old,
                new,
                now,
            )
        return True

    async def _move_chat_rows(self, table: str, sink: str, old: str, new: str) -> None:
        """Re-address the subscriptions or mutes of a chat that moved; where the new id has
        the same pattern, one row stays (for mutes the one lasting longer)."""
        assert table in ("subscriptions", "mutes")
        mutes = table == "mutes"
        columns = "id, target, pattern" + (", until" if mutes else "")
        where = f"sink = $1 AND {_CHAT_OR_TOPIC.format(target='$2')}"
        rows = await self._read(
            lambda c: c.fetch(
                f"SELECT {columns} FROM {table} WHERE {where} ORDER BY id", sink, old
            )
        )
        for row in rows:
            target = new + row["target"][len(old) :]
            pattern = row["pattern"]

            async def same(conn: Conn, target: str = target, pattern: str = pattern) -> Any:
                return await conn.fetchrow(
                    f"SELECT {columns} FROM {table}"
                    " WHERE sink = $1 AND target = $2 AND pattern = $3",
                    sink,
                    target,
                    pattern,
                )

            there = await self._read(same)
            if there is None:
                await self._write(
                    f"UPDATE {table} SET target = $1 WHERE id = $2", target, row["id"]
                )
                continue
            if mutes:
                until = (
                    None
                    if row["until"] is None or there["until"] is None
                    else max(row["until"], there["until"])
                )
                await self._write("UPDATE mutes SET until = $1 WHERE id = $2", until, there["id"])
            await self._write(f"DELETE FROM {table} WHERE id = $1", row["id"])

    async def moved_targets(self, sink: str | None = None) -> dict[tuple[str, str], str]:
        """Every recorded move (of one sink's chats, when given): (sink, old) -> new."""
        if self.read_only and await self.schema_version() < _MOVES_SCHEMA:
            return {}  # `check` on a database no bot has run on yet: nothing moved
        if sink is None:
            rows = await self._read(
                lambda c: c.fetch("SELECT sink, old_target, new_target FROM target_moves")
            )
        else:
            rows = await self._read(
                lambda c: c.fetch(
                    "SELECT sink, old_target, new_target FROM target_moves WHERE sink = $1",
                    sink,
                )
            )
        return {(row[0], row[1]): row[2] for row in rows}

    # -- source state --------------------------------------------------------------

    async def source_value(self, source: str, key: str) -> str | None:
        """The value stored under `key` for `source`, or None."""
        if self.read_only and await self.schema_version() < _SOURCE_STATE_SCHEMA:
            return None  # read-only, on a database from before sources kept state
        value = await self._read(
            lambda c: c.fetchval(
                "SELECT value FROM source_state WHERE source = $1 AND key = $2", source, key
            )
        )
        return None if value is None else str(value)

    async def set_source_value(self, source: str, key: str, value: str, *, now: float) -> None:
        """Store `value` under `key` for `source`, committed (or a step of the caller's
        transaction)."""
        await self._write(
            """INSERT INTO source_state (source, key, value, updated_at)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (source, key) DO UPDATE
               SET value = excluded.value, updated_at = excluded.updated_at""",
            source,
            key,
            value,
            now,
        )

    # -- moving from another backend (bot.store.transfer) ----------------------------

    async def is_empty(self) -> bool:
        """True when the database holds no events, streams, mutes or subscriptions yet."""

        async def empty(conn: Conn) -> bool:
            for table in ("events", "streams", "mutes", "subscriptions", "source_state"):
                if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                    return False
            return True

        return await self._read(empty)

    async def import_rows(self, tables: dict[str, list[dict[str, Any]]]) -> None:
        """Write rows read from another backend, ids kept, in one transaction; then move
        each id sequence past the highest id, so new rows never collide."""
        async with self._transaction() as tx:
            for table, rows in tables.items():
                if not rows:
                    continue
                columns = list(rows[0])
                convert = _IMPORT_CONVERSIONS.get(table, {})
                records = [tuple(convert.get(c, _same)(row[c]) for c in columns) for row in rows]
                await tx.conn.copy_records_to_table(table, records=records, columns=columns)
                tx.changed = True
            for table in ("events", "deliveries", "mutes", "subscriptions"):
                await tx.conn.execute(
                    f"""SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                                      greatest((SELECT max(id) FROM {table}), 1))"""
                )


def _same(value: Any) -> Any:
    return value


def _flag(value: Any) -> bool:
    return bool(value)


def _moment(value: Any) -> datetime | None:
    return _aware(datetime.fromisoformat(value)) if value else None


#: SQLite keeps times as ISO text and flags as integers; these columns take them as
#: PostgreSQL's own types (bot.store.postgres_schema).
_IMPORT_CONVERSIONS: Final[dict[str, dict[str, Callable[[Any], Any]]]] = {
    "events": {
        "occurred_at": _moment,
        "received_at": _moment,
        "notified": _flag,
        "dispatched": _flag,
    },
    "streams": {
        "live": _flag,
        "started_at": _moment,
        "ended_at": _moment,
        "state_at": _moment,
        "updated_at": _moment,
    },
}


# The chat itself and its forum topics ("old/7"), never "old7"; no LIKE, so a % or _ in
# an id is just a character.
_CHAT_OR_TOPIC: Final = (
    "(target = {target} OR left(target, length({target}) + 1) = {target} || '/')"
)


def _unfinished(cutoff_at: str) -> str:
    """Dispatched, and none of its deliveries is still to go out or finished after the
    cut-off (epoch seconds, the parameter named)."""
    return f"""e.dispatched AND NOT EXISTS (
        SELECT 1 FROM deliveries d WHERE d.event_row = e.id
        AND (d.state IN ('pending', 'sending') OR d.updated_at >= {cutoff_at}))"""


async def _pinned_events(conn: Conn, cutoff: datetime) -> set[int]:
    """Events that must stay whatever their age (see SQLiteStore._pinned_events)."""
    pinned: set[int] = set()
    rows = await conn.fetch(
        """SELECT s.session_row, s.end_row FROM streams s
           LEFT JOIN events e ON e.id = s.end_row
           WHERE s.live OR s.end_row IS NULL OR e.received_at >= $1
           OR EXISTS (SELECT 1 FROM deliveries d WHERE d.event_row = s.end_row
                      AND d.state IN ('pending', 'sending'))""",
        cutoff,
    )
    for row in rows:
        pinned.update(value for value in row if value is not None)
    cards = await conn.fetch(
        """SELECT DISTINCT card.event_row FROM deliveries d
           JOIN deliveries card ON card.id = (d.options->>'card')::bigint
           WHERE d.state IN ('pending', 'sending') AND d.options ? 'card'"""
    )
    pinned.update(row[0] for row in cards)
    return pinned


async def _with_derived(
    conn: Conn,
    chosen: set[int],
    pinned: set[int],
    cutoff: datetime,
    cutoff_at: float,
) -> None:
    """Complete `chosen` with the events derived from it, or leave out the parents of
    derived events that must stay (see SQLiteStore._with_derived)."""
    kept: set[int] = set()
    while chosen:
        rows = await conn.fetch(
            "SELECT id, parent_id FROM events WHERE parent_id = ANY($1)", sorted(chosen)
        )
        outside = [(row[0], row[1]) for row in rows if row[0] not in chosen]
        if not outside:
            return
        children = sorted({child for child, _parent in outside} - kept - pinned)
        old_rows = await conn.fetch(
            f"""SELECT e.id FROM events e WHERE e.id = ANY($1)
                AND e.received_at < $2 AND {_unfinished("$3")}""",
            children,
            cutoff,
            cutoff_at,
        )
        old = {row[0] for row in old_rows}
        for child, parent in outside:
            if child in old:
                chosen.add(child)
            else:
                kept.update((child, parent))
                chosen.discard(parent)


def _count(status: str) -> int:
    words = status.split()
    return int(words[-1]) if words and words[-1].isdigit() else 0


#: Streams' states with their session marks, inserted or replaced ($1-$12: see
#: `_stream_args`); one INSERT ... ON CONFLICT may not change a row twice, so each key
#: comes once.
_SAVE_STREAMS: Final = """INSERT INTO streams (
    streamer_key, display_name, url, live, info, started_at, ended_at, state_at,
    updated_at, session_row, end_row, change_posted_at)
SELECT s.key, s.display_name, s.url, s.live, s.info, s.started_at,
       s.ended_at, s.state_at, $9, s.session_row, s.end_row, s.change_posted_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[],
            $6::timestamptz[], $7::timestamptz[], $8::timestamptz[],
            $10::bigint[], $11::bigint[], $12::float8[])
     AS s(key, display_name, url, live, info, started_at, ended_at, state_at,
          session_row, end_row, change_posted_at)
ON CONFLICT (streamer_key) DO UPDATE SET
  display_name = excluded.display_name, url = excluded.url,
  live = excluded.live, info = excluded.info,
  started_at = excluded.started_at, ended_at = excluded.ended_at,
  state_at = excluded.state_at, updated_at = excluded.updated_at,
  session_row = excluded.session_row, end_row = excluded.end_row,
  change_posted_at = excluded.change_posted_at"""
#: Events marked dispatched, enriched; the numbers of its three parameters (row ids,
#: payloads, notified) go in with `format`, as it may follow `_SAVE_STREAMS`'s.
_MARK_MANY: Final = """UPDATE events SET payload = marks.payload, notified = marks.notified,
       dispatched = true
FROM unnest(${ids}::bigint[], ${payloads}::text[], ${notified}::bool[])
     AS marks(id, payload, notified)
WHERE events.id = marks.id"""


def _stream_args(states: Sequence[StreamState], now: datetime) -> tuple[Any, ...]:
    """`_SAVE_STREAMS`'s parameters, for states of distinct keys."""
    return (
        [state.streamer_key for state in states],
        [state.display_name for state in states],
        [state.url for state in states],
        [state.live for state in states],
        [json.dumps(state.info.to_json(), ensure_ascii=False) for state in states],
        [_aware(state.started_at) for state in states],
        [_aware(state.ended_at) for state in states],
        [_aware(state.state_at) for state in states],
        _aware(now),
        [state.marks.session_row for state in states],
        [state.marks.end_row for state in states],
        [state.marks.change_posted_at for state in states],
    )


def _mark_args(marks: Sequence[tuple[int, Event, bool]]) -> tuple[Any, ...]:
    """`_MARK_MANY`'s parameters."""
    return (
        [row_id for row_id, _event, _notified in marks],
        [json.dumps(event.to_json(), ensure_ascii=False) for _row, event, _n in marks],
        [notified for _row, _event, notified in marks],
    )


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: datetime | None) -> datetime | None: ...
def _aware(value: datetime | None) -> datetime | None:
    """A datetime for a timestamptz column: a naive one is taken to be UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


if TYPE_CHECKING:
    # mypy proves here that the PostgreSQL backend implements the whole Store Protocol.
    _implements: type[Store] = PostgresStore
