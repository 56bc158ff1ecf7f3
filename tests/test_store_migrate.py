"""`python -m bot store migrate --to postgresql://...`: an SQLite database moved into an
empty PostgreSQL one without losing a card, a pending delivery or a mute; refused over a
database that holds data, and while a bot runs on the file."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.events import Event, LiveInfo
from bot.instance import InstanceLock
from bot.store import Mute, SessionMarks, Store, StreamState, Subscription
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SQLiteStore
from tests.conftest import SECRET
from tests.test_cli import running_bot
from tests.test_reliability import post

T0 = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)


def event(event_id: str, kind: str = "live_start") -> Event:
    return Event(
        source="rec",
        event_id=event_id,
        kind=kind,
        occurred_at=T0,
        received_at=T0,
        platform="twitch",
        channel="quinn",
        display_name="Quinn",
        live=LiveInfo(title="Painting", categories=("Art",)),
    )


def write_config(tmp_path: Path, *, url: str | None = None) -> Path:
    where = f'url = "{url}"' if url else f'path = "{tmp_path / "bot.sqlite3"}"'
    config = tmp_path / ("bot-pg.toml" if url else "bot.toml")
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = 0

[storage]
{where}

[behaviour]
end_grace = "0s"

[[sources]]
name = "rec"
kind = "onliverec"
secret = "{SECRET}"

[[routes]]
match = "*"
"""
    )
    return config


async def migrate(config: Path, url: str) -> int:
    """The command, as a user runs it (it runs an event loop of its own, so not on ours)."""
    return await asyncio.to_thread(main, ["store", "migrate", "-c", str(config), "--to", url])


async def fill(store: Store) -> dict[str, int]:
    """One of everything: a session with its card (sent) and an edit still to go out."""
    start = await store.insert_event(event("s1"), raw=b'{"raw": true}')
    change = await store.insert_event(event("c1", "title_change"), parent=start)
    assert start is not None and change is not None
    state = StreamState(
        "twitch/quinn",
        "Quinn",
        "https://twitch.tv/quinn",
        True,
        LiveInfo(title="Painting"),
        T0,
        None,
        T0,
    )
    await store.save_streams([replace(state, marks=SessionMarks(session_row=start))], now=T0)
    card = await store.add_delivery(
        event_row=start, sink="discord", target="111", not_before=0, now=1
    )
    await store.claim_due("discord", now=2)
    await store.mark_sent(card, message_id="990001", now=3)
    edit = await store.add_delivery(
        event_row=change,
        sink="discord",
        target="111",
        action="edit",
        options={"card": card},
        not_before=4,
        now=4,
    )
    await store.add_mute(Mute("telegram", "-100", "twitch/*", None), now=5)
    await store.add_subscription(Subscription("telegram", "-100", "kick/*"), now=6)
    await store.move_target("telegram", "-1", "-100", now=7)
    await store.set_source_value("kick", "public_key", "PEM", now=8)
    return {"start": start, "change": change, "card": card, "edit": edit}


async def test_everything_moves_across_with_its_ids(tmp_path: Path, postgres_url: str) -> None:
    sqlite = SQLiteStore(tmp_path / "bot.sqlite3")
    await sqlite.open()
    rows = await fill(sqlite)
    before = (
        await sqlite.list_deliveries(("pending", "sending", "sent", "failed", "cancelled")),
        await sqlite.get_stream("twitch/quinn"),
    )
    await sqlite.close()

    assert await migrate(write_config(tmp_path), postgres_url) == 0

    pg = PostgresStore(postgres_url)
    await pg.open()
    try:
        after = await pg.list_deliveries(("pending", "sending", "sent", "failed", "cancelled"))
        assert after == before[0]  # ids, states, options, message ids, attempts
        assert await pg.get_stream("twitch/quinn") == before[1]
        stream = await pg.get_stream("twitch/quinn")
        assert stream is not None and stream.marks == SessionMarks(session_row=rows["start"])
        assert await pg.cards(rows["start"]) == {("discord", "111"): rows["card"]}
        assert await pg.delivery_status(rows["card"]) == ("sent", "990001")
        assert (await pg.load_event(rows["change"])).kind == "title_change"
        assert [m.pattern for m in await pg.mutes_for("telegram", "-100", now=10)] == ["twitch/*"]
        assert await pg.subscriptions() == [Subscription("telegram", "-100", "kick/*")]
        assert await pg.moved_targets() == {("telegram", "-1"): "-100"}
        assert await pg.source_value("kick", "public_key") == "PEM"
        # The edit still to go out is claimed on PostgreSQL, pointing at its card.
        [due] = await pg.claim_due("discord", now=10)
        assert due.id == rows["edit"] and due.options == {"card": rows["card"]}
        # New rows get ids past the copied ones.
        assert (await pg.insert_event(event("s2"))) > rows["change"]  # type: ignore[operator]
    finally:
        await pg.close()


async def test_a_database_with_data_is_not_copied_over(tmp_path: Path, postgres_url: str) -> None:
    sqlite = SQLiteStore(tmp_path / "bot.sqlite3")
    await sqlite.open()
    await fill(sqlite)
    await sqlite.close()
    pg = PostgresStore(postgres_url)
    await pg.open()
    await pg.insert_event(event("already-there"))
    await pg.close()
    config = write_config(tmp_path)
    assert await migrate(config, postgres_url) != 0
    pg = PostgresStore(postgres_url)
    await pg.open()
    try:
        assert await pg.count_events() == 1  # nothing was added
    finally:
        await pg.close()


async def test_a_running_bots_file_is_not_copied(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite = SQLiteStore(tmp_path / "bot.sqlite3")
    await sqlite.open()
    await sqlite.close()
    with InstanceLock(tmp_path / "bot.sqlite3"):
        code = await migrate(write_config(tmp_path), postgres_url)
    assert code != 0
    assert "already running on this database" in capsys.readouterr().err


def test_the_target_must_be_postgresql(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert main(["store", "migrate", "-c", str(config), "--to", "mysql://db/bot"]) == 2
    assert "--to must be a postgresql:// URL" in capsys.readouterr().err


async def test_a_bot_moved_to_postgresql_carries_on_its_sessions(
    tmp_path: Path, postgres_url: str
) -> None:
    """Through the real process: a start on SQLite, the copy, then on PostgreSQL the same
    start is a duplicate and the end counts the stream from the start stored on SQLite."""
    start = {
        "id": "mv-1",
        "type": "live_start",
        "data": {"platform": "twitch", "channel": "quinn", "live_info": {"uname": "Quinn"}},
    }
    end = {"id": "mv-2", "type": "live_end", "data": {"platform": "twitch", "channel": "quinn"}}
    async with running_bot(write_config(tmp_path)) as bot:
        assert (await post(bot.url, start)).status == 202
        await bot.wait_for("stdout", r"\[live_start\] Quinn is live")
        assert await bot.stop() == 0
    await asyncio.sleep(1.1)  # so the duration is at least a second
    assert await migrate(write_config(tmp_path), postgres_url) == 0
    async with running_bot(write_config(tmp_path, url=postgres_url)) as bot:
        assert (await post(bot.url, start)).status == 200  # a duplicate: it was copied
        assert (await post(bot.url, end)).status == 202
        found = await bot.wait_for("stdout", r"duration: +(\d+)s")
        assert int(found.group(1)) >= 1
        assert await bot.stop() == 0
