"""The heartbeat's join: when a process may make its first request to the platforms.

A stand-in store says how many processes are alive and which of the others have
counted this one (the real stores' answers are in test_store_contract and
test_store_postgres; two real processes joining under load in test_e2e_processes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from bot import heartbeat as heartbeat_module
from bot.errors import StoreUnavailable
from bot.heartbeat import Heartbeat
from bot.sinks.base import CLOCK_ALLOWANCE

LEASE = 0.3  # a heartbeat every 0.1 s
SETTLE = 0.2


class Processes:
    """The part of a Store the heartbeat uses."""

    def __init__(self, *, shared: bool = True, alive: int = 1) -> None:
        self.shared = shared
        self.alive = alive
        self.rank = 0
        self.refusing = False
        self.unaware = 0
        self.beats = 0
        self.asked: list[tuple[float, float, float]] = []

    async def heartbeat(self, *, now: float) -> int:
        del now
        if self.refusing:
            raise StoreUnavailable("disk I/O error")
        self.beats += 1
        return self.alive

    async def unaware_of(self, joined: float, *, now: float, quiet: float) -> int:
        self.asked.append((joined, now, quiet))
        return self.unaware


class Sink:
    def __init__(self) -> None:
        self.shares: list[tuple[int, int]] = []

    def share_limits(self, processes: int, rank: int = 0) -> None:
        self.shares.append((processes, rank))


@pytest.fixture(autouse=True)
def short_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heartbeat_module, "JOIN_SETTLE_SECONDS", SETTLE)


@contextlib.asynccontextmanager
async def beating(store: Processes, sink: Sink) -> AsyncIterator[Heartbeat]:
    heart = Heartbeat(store, {"discord": sink}, {}, lease=LEASE)  # type: ignore[arg-type,dict-item]
    stop = asyncio.Event()
    task = asyncio.create_task(heart.run(stop))
    try:
        yield heart
    finally:
        stop.set()
        await task


async def joined_within(heart: Heartbeat, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await heart.joined(asyncio.Event())
    except TimeoutError:
        return False
    return True


async def test_a_process_alone_joins_at_its_first_heartbeat() -> None:
    store, sink = Processes(alive=1), Sink()
    async with beating(store, sink) as heart:
        assert await joined_within(heart, 0.05)
        assert store.beats == 1
        assert sink.shares == []  # the whole limit, as it started with


async def test_a_process_joining_others_waits_until_each_has_counted_it_then_settles() -> None:
    store, sink = Processes(alive=3), Sink()
    store.rank = 2
    store.unaware = 1  # one of the two others has not beaten since this one's row
    async with beating(store, sink) as heart:
        assert not await joined_within(heart, 0.5)
        assert sink.shares == [(3, 2)]  # its share, from the first heartbeat on
        # Asked at each heartbeat about the others' since its first, by the clock
        # allowance later (their clocks may be a little ahead of this one's).
        joined, now, quiet = store.asked[-1]
        assert 0.3 < now - (joined - CLOCK_ALLOWANCE) < 0.7
        assert quiet == pytest.approx(3 * LEASE / 3 + CLOCK_ALLOWANCE)
        store.unaware = 0
        loop = asyncio.get_running_loop()
        counted = loop.time()
        assert await joined_within(heart, 1.0)
        # Not before what the others sent at their larger shares has left the window.
        assert loop.time() - counted >= SETTLE
        assert store.asked[0][0] == joined  # measured once, from its first heartbeat


async def test_a_shared_database_refusing_the_heartbeat_keeps_the_platforms_waiting() -> None:
    """No heartbeat, no share known: on PostgreSQL the others may be sending at the whole
    limit. On SQLite (the database is this process's alone) nothing waits for it."""
    store, sink = Processes(alive=1), Sink()
    store.refusing = True
    async with beating(store, sink) as heart:
        assert not await joined_within(heart, 0.4)
        store.refusing = False
        assert await joined_within(heart, 0.3)
    alone = Processes(shared=False)
    alone.refusing = True
    async with beating(alone, Sink()) as heart:
        assert await joined_within(heart, 0.05)


async def test_a_stop_while_joining_lets_the_start_go_on_to_its_end() -> None:
    store = Processes(alive=2)
    store.unaware = 1
    heart = Heartbeat(store, {}, {}, lease=LEASE)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(heart.run(stop))
    waiting = asyncio.create_task(heart.joined(stop))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    stop.set()
    async with asyncio.timeout(1):
        await waiting
        await task
