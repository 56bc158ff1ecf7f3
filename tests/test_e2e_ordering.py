"""Through the real `python -m bot run`: a sender's clock in the future, a database an
older version left stuck in the future, and id-less payloads on two days.

What the console sink prints is what a user sees; the database is read (and, to stand
for what an older version wrote or for a day passing, written) beside the running bot.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from tests.test_cli import CONFIG, KEY, BotProcess, running_bot

FUTURE = "2099-06-01T12:00:00Z"

#: Ends are announced at once and a comeback is a new session, so each step shows.
SETTINGS = CONFIG.replace('end_grace = "4s"', 'end_grace = "0s"\nrejoin_window = "0s"')


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "bot.toml"
    config.write_text(SETTINGS)
    return config


@contextlib.contextmanager
def database(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """The bot's database, opened beside it; what the block writes is committed."""
    conn = sqlite3.connect(tmp_path / "state" / "bot.sqlite3", timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def payload(
    kind: str, ts: str | None, *, event_id: str | None = None, **live_info: object
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": kind,
        "data": {
            "platform": "twitch",
            "channel": "quinn",
            "url": "https://twitch.tv/quinn",
            "live_info": {"uname": "Quinn", **live_info},
        },
    }
    if ts is not None:
        body["ts"] = ts
    if event_id is not None:
        body["id"] = event_id
    return body


def now_ts() -> str:
    return datetime.now(UTC).isoformat()


async def post(bot: BotProcess, body: bytes | dict[str, Any]) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{bot.url}/webhook/onliverec?key={KEY}",
            data=data,
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        return response.status, (await response.json())["status"]


async def printed(bot: BotProcess, pattern: str, count: int) -> None:
    """Wait until the console has printed `pattern` `count` times."""
    await bot.wait_for("stdout", rf"(?s)(?:{pattern}.*?){{{count}}}")


def is_live(tmp_path: Path) -> bool:
    with database(tmp_path) as conn:
        row = conn.execute("SELECT live FROM streams WHERE streamer_key = 'twitch/quinn'")
        return bool(row.fetchone()["live"])


async def test_an_event_dated_2099_does_not_silence_the_stream(tmp_path: Path) -> None:
    async with running_bot(write_config(tmp_path)) as bot:
        start = payload(
            "live_start", FUTURE, event_id="s-1", title="Clock from the future", start_time=FUTURE
        )
        assert await post(bot, start) == (202, "accepted")
        await printed(bot, r"\[live_start\] Quinn is live", 1)
        # The session started when the start arrived, not in 2099.
        since = re.search(r"since:[^\n]*?\b(\d{4})\b", bot.stdout)
        assert since is not None and since.group(1) == str(datetime.now(UTC).year)
        # The same broken clock again, while live: ordered by arrival, still notified.
        change = payload("title_change", FUTURE, event_id="t-1")
        change["data"]["new_live_info"] = {"title": "Still in 2099"}
        assert await post(bot, change) == (202, "accepted")
        await printed(bot, r"now:\s+Still in 2099", 1)

        # The sender's clock is put right: its end, dated now, is not "older" than 2099.
        assert await post(bot, payload("live_end", now_ts(), event_id="e-1")) == (202, "accepted")
        await printed(bot, r"\[live_end\] Quinn ended the stream", 1)
        assert not is_live(tmp_path)
        # Counted from when the start arrived: seconds, not decades either way (the
        # exact figure is checked in test_ordering.py, where time can be set).
        duration = re.search(r"duration: (.+)", bot.stdout)
        assert duration is not None and re.fullmatch(r"\d+s", duration.group(1).strip())

        # And the next stream is announced.
        assert await post(
            bot, payload("live_start", now_ts(), event_id="s-2", title="Back to normal")
        ) == (202, "accepted")
        await printed(bot, r"\[live_start\] Quinn is live", 2)
        assert "Back to normal" in bot.stdout
        assert is_live(tmp_path)
        assert await bot.stop() == 0
    # One warning for the source, however many of its events were dated 2099.
    warnings = re.findall(r"WARNING.*source 'onliverec'.*clock is (\d+)d \d+h ahead", bot.stderr)
    assert len(warnings) == 1, bot.stderr
    assert int(warnings[0]) > 365 * 70  # how far ahead: over seventy years


async def test_a_database_left_stuck_in_the_future_heals(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    async with running_bot(config) as bot:
        start = payload("live_start", now_ts(), event_id="s-1", title="Long stream")
        assert await post(bot, start) == (202, "accepted")
        await printed(bot, r"\[live_start\] Quinn is live", 1)
        assert await bot.stop() == 0

    # What the bot before this fix saved for that start had it been dated 2099 and
    # arrived 45 minutes ago: the stream's state and the session start in 2099.
    arrived = datetime.now(UTC) - timedelta(minutes=45)
    with database(tmp_path) as conn:
        row = conn.execute("SELECT id, payload FROM events WHERE event_id = 's-1'").fetchone()
        stored = json.loads(row["payload"])
        stored.update(
            occurred_at="2099-06-01T12:00:00+00:00",
            started_at="2099-06-01T12:00:00+00:00",
            received_at=arrived.isoformat(),
        )
        conn.execute(
            "UPDATE events SET payload = ?, occurred_at = ?, received_at = ? WHERE id = ?",
            (json.dumps(stored), stored["occurred_at"], stored["received_at"], row["id"]),
        )
        conn.execute(
            """UPDATE streams SET started_at = ?, state_at = ?
               WHERE streamer_key = 'twitch/quinn'""",
            (stored["started_at"], stored["occurred_at"]),
        )

    async with running_bot(config) as bot:
        assert await post(bot, payload("live_end", now_ts(), event_id="e-1")) == (202, "accepted")
        await printed(bot, r"\[live_end\] Quinn ended the stream", 1)
        # The session lasted from when its start arrived.
        assert re.search(r"duration: 45m", bot.stdout), bot.stdout
        assert not is_live(tmp_path)
        assert await post(bot, payload("live_start", now_ts(), event_id="s-2")) == (
            202,
            "accepted",
        )
        await printed(bot, r"\[live_start\] Quinn is live", 1)
        assert await bot.stop() == 0


async def test_an_idless_payload_is_a_duplicate_for_a_day_then_new(tmp_path: Path) -> None:
    # The shape of OneLiveRec's documented examples: neither `id` nor `ts`.
    start = json.dumps(payload("live_start", None, title="Daily stream")).encode()
    end = json.dumps(payload("live_end", None)).encode()
    async with running_bot(write_config(tmp_path)) as bot:
        assert await post(bot, start) == (202, "accepted")
        await printed(bot, r"\[live_start\] Quinn is live", 1)
        # The sender retrying: the same bytes within the window.
        assert await post(bot, start) == (200, "duplicate")
        assert await post(bot, end) == (202, "accepted")
        await printed(bot, r"\[live_end\] Quinn ended the stream", 1)
        assert await post(bot, end) == (200, "duplicate")

        # A day passes: every time the bot stored moves 25 hours back.
        with database(tmp_path) as conn:
            day_back(conn, timedelta(hours=25))

        # Tomorrow's stream sends the very same bytes, and is announced.
        assert await post(bot, start) == (202, "accepted")
        await printed(bot, r"\[live_start\] Quinn is live", 2)
        assert is_live(tmp_path)
        assert await post(bot, start) == (200, "duplicate")
        assert await post(bot, end) == (202, "accepted")
        await printed(bot, r"\[live_end\] Quinn ended the stream", 2)
        assert await bot.stop() == 0
    assert bot.stdout.count("[live_start]") == 2
    assert bot.stdout.count("[live_end]") == 2
    with database(tmp_path) as conn:
        ids = [row[0] for row in conn.execute("SELECT event_id FROM events ORDER BY id")]
    # Yesterday's two events are kept beside today's.
    assert len(ids) == 4 and len({i.partition("@")[0] for i in ids}) == 2


def day_back(conn: sqlite3.Connection, by: timedelta) -> None:
    """Move every stored time back by `by`, as if that much time had passed since."""

    def back(value: str | None) -> str | None:
        return None if value is None else (datetime.fromisoformat(value) - by).isoformat()

    for row in conn.execute("SELECT id, occurred_at, received_at, payload FROM events"):
        stored = json.loads(row["payload"])
        for key in ("occurred_at", "received_at", "started_at", "ended_at"):
            stored[key] = back(stored.get(key))
        conn.execute(
            "UPDATE events SET occurred_at = ?, received_at = ?, payload = ? WHERE id = ?",
            (back(row["occurred_at"]), back(row["received_at"]), json.dumps(stored), row["id"]),
        )
    for row in conn.execute("SELECT streamer_key, started_at, ended_at, state_at FROM streams"):
        conn.execute(
            """UPDATE streams SET started_at = ?, ended_at = ?, state_at = ?
               WHERE streamer_key = ?""",
            (
                back(row["started_at"]),
                back(row["ended_at"]),
                back(row["state_at"]),
                row["streamer_key"],
            ),
        )
