"""The SQLite store: schema upgrades in place, and the outbox queries session cards use."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.events import Event
from bot.store import Store
from bot.store.migrations import MIGRATIONS
from bot.store.sqlite import SQLiteStore

AT = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)


def an_event(event_id: str, kind: str = "live_end") -> Event:
    return Event(
        source="rec",
        event_id=event_id,
        kind=kind,
        occurred_at=AT,
        received_at=AT,
        platform="twitch",
        channel="quinn",
    )


async def test_a_schema_2_database_is_upgraded_keeping_its_outbox(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:2]:
        for statement in filter(str.strip, script.split(";")):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        """INSERT INTO events (id, source, event_id, kind, occurred_at, received_at,
                               notified, payload) VALUES (1, 'rec', 'a', 'live_end', '', '',
                               1, '{}')"""
    )
    conn.execute(
        """INSERT INTO deliveries (event_row, sink, target, state, not_before, created_at,
                                   updated_at, message_id)
           VALUES (1, 'discord', '7', 'sent', 1, 1, 1, '555')"""
    )
    conn.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.schema_version() == len(MIGRATIONS) == 11
        assert await store.delivery_status(1) == ("sent", "555")
        assert (await store.outbox_counts()).by_state == {"sent": 1}
        assert await store.reached_targets(1) == {("discord", "7")}
    finally:
        await store.close()


async def test_cancel_pending_calls_off_only_what_was_not_sent(store: Store) -> None:
    async with store.transaction():
        row = await store.insert_event(an_event("end"), notified=True)
        assert row is not None
        sent = await store.add_delivery(
            event_row=row, sink="discord", target="7", not_before=0, now=0
        )
        await store.mark_sent(sent, message_id="1", now=0)
        await store.add_delivery(event_row=row, sink="telegram", target="-5", not_before=9, now=0)
        await store.add_delivery(event_row=row, sink="console", target="", not_before=9, now=0)
        assert await store.cancel_pending(row, reason="came back", now=1) == 2
    assert (await store.outbox_counts()).by_state == {"sent": 1, "cancelled": 2}
    # Only the chat that really saw the end needs its card reopened.
    assert await store.reached_targets(row) == {("discord", "7")}
    # Cancelled rows are never claimed, and do not count as due.
    assert await store.claim_due("telegram", now=100) == []
    assert await store.next_due("telegram") is None


async def test_an_end_held_for_its_grace_is_not_the_oldest_waiting_delivery(store: Store) -> None:
    async with store.transaction():
        row = await store.insert_event(an_event("end"), notified=True)
        assert row is not None
        # As dispatch writes an end held for its grace: due at 500, written at 100.
        await store.add_delivery(
            event_row=row,
            sink="discord",
            target="7",
            options={"due": 500},
            not_before=500,
            now=100,
        )
    assert (await store.outbox_counts(now=200)).oldest_pending_created is None
    # Due now: waiting since it became due, not since it was written.
    assert (await store.outbox_counts(now=500)).oldest_pending_created == 500
    retrying = (await store.claim_due("discord", now=500))[0]
    await store.mark_retry(retrying.id, error="503", not_before=900, now=500)
    assert (await store.outbox_counts(now=600)).oldest_pending_created == 500  # tried: waiting


async def test_the_checkpoint_thread_moves_the_log_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    store = SQLiteStore(path, background_checkpoints=True)
    await store.open()
    try:
        size_before = path.stat().st_size
        async with store.transaction():
            for n in range(300):
                await store.insert_event(an_event(f"e{n}"), notified=False, raw=b"x" * 2000)
        # Well under SQLite's own fallback threshold: only the thread checkpoints this.
        deadline = time.monotonic() + 5
        while path.stat().st_size <= size_before and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert path.stat().st_size > size_before + 300 * 2000
        thread = next(t for t in threading.enumerate() if t.name == "sqlite-checkpoint")
    finally:
        await store.close()
    assert not thread.is_alive()
    reopened = SQLiteStore(path)
    await reopened.open()
    assert await reopened.count_events() == 300
    await reopened.close()


async def test_a_turn_taken_in_the_future_does_not_count(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock was set back an hour after the last turn: the next is taken at once."""
    assert await store.take_turn("discord-identify-0", 5.0) == 0
    back = time.time() - 3600
    monkeypatch.setattr("bot.store.sqlite.time.time", lambda: back)
    assert await store.take_turn("discord-identify-0", 5.0) == 0
    assert await store.take_turn("discord-identify-0", 5.0) == 5.0
