"""`--store postgresql://...`: a fresh database on that server for each bot the bench runs,
dropped afterwards, so a run never reads a previous run's events and leaves nothing; and
what the bench reads back from a bot's database (events stored, who sent what, what its
connections wait for)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.common import parent_if


def with_database(url: str, database: str) -> str:
    """`url` naming another database on the same server, as the same user."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@contextlib.asynccontextmanager
async def _connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database(url: str) -> AsyncIterator[str]:
    """The URL of a new, empty database on `url`'s server (its user needs CREATEDB)."""
    name = f"streambot_bench_{secrets.token_hex(4)}"
    async with _connected(url) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def stored_events(url: str) -> int:
    """Events committed to the bot's database at `url`."""
    async with _connected(url) as conn:
        return int(await conn.fetchval("SELECT count(*) FROM events"))


async def sends_by_process(url: str) -> dict[str, list[int]]:
    """Per sink, how many deliveries each bot process sent (most first): whether the
    processes shared a fan-out or one of them sent it all (the claim stays on the row)."""
    async with _connected(url) as conn:
        rows = await conn.fetch(
            """SELECT sink, count(*) AS n FROM deliveries WHERE state = 'sent'
               GROUP BY sink, claimed_by ORDER BY sink, n DESC"""
        )
    found: dict[str, list[int]] = {}
    for row in rows:
        found.setdefault(row["sink"], []).append(int(row["n"]))
    return found


async def postmaster_pid(url: str) -> int | None:
    """The pid of the server at `url` when it runs on this machine (its CPU is then
    measured beside the bot's), else None."""
    async with _connected(url) as conn:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        # Looked up while connected: the backend exits with its connection. A pid that
        # is no postgres process here means the server runs on another machine.
        return parent_if(backend, "postgres")


# What the bots' connections are doing, one row each (the sampler's own excluded).
_ACTIVITY = """SELECT state, wait_event_type FROM pg_stat_activity
               WHERE datname = current_database() AND pid != pg_backend_pid()
               AND backend_type = 'client backend'"""


def _doing(state: str | None, wait: str | None) -> str:
    if wait == "Lock":
        return "lock"  # the write lock every write transaction takes, almost always
    if state and state.startswith("idle in transaction"):
        return "bot"  # a transaction open, waiting for the bot's next statement
    return "active" if state == "active" else "idle"


@contextlib.asynccontextmanager
async def activity(url: str, every: float = 0.02) -> AsyncIterator[dict[str, float]]:
    """While inside, sample every `every` s what the connections to `url` do; filled in
    at the end with the average number of them doing each thing: waiting for a `lock`,
    in a transaction waiting for the `bot`, `active` (running a statement), `idle`."""
    counts: Counter[str] = Counter()
    ticks = 0
    averages: dict[str, float] = {}
    stop = asyncio.Event()

    async def sample(conn: asyncpg.Connection) -> None:
        nonlocal ticks
        while not stop.is_set():
            for row in await conn.fetch(_ACTIVITY):
                counts[_doing(row["state"], row["wait_event_type"])] += 1
            ticks += 1
            await asyncio.sleep(every)

    async with _connected(url) as conn:
        task = asyncio.create_task(sample(conn))
        try:
            yield averages
        finally:
            stop.set()
            await task
    averages.update({k: counts[k] / max(ticks, 1) for k in ("lock", "bot", "active", "idle")})
