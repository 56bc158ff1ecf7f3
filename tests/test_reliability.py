"""Reliability through the real `python -m bot run` process: drain, crash, recovery.

The bot runs as a subprocess; the Telegram and Discord fakes run in this test process on
127.0.0.1, so the test can make a platform stall or fail while the bot talks to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import logging
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.__main__ import main
from bot.app import Health, Running, run
from bot.pipeline.dispatch import Dispatcher, DispatchStage
from bot.registry import message_formats
from bot.render import Renderer
from bot.samples import sample_event
from bot.sinks.console import ConsoleSink
from bot.store import DeliveryInfo, Store
from bot.store.sqlite import SQLiteStore
from tests.conftest import SECRET, make_config
from tests.fakes.discord_api import STREAMS_CHANNEL_ID, FakeDiscord
from tests.fakes.discord_api import TOKEN as DISCORD_TOKEN
from tests.fakes.telegram_api import FakeTelegram, _ApiError
from tests.sqlite_file import run_sql
from tests.test_cli import BotProcess, running_bot

GROUP = -100777
OTHER = -100555
_ids = itertools.count(1)


class FlakyTelegram(FakeTelegram):
    """The Telegram fake, plus chats whose sends hang forever, a switch for a 503 outage,
    and a `latency`: a message is stored at once but answered that many seconds later
    (the ambiguous case a slow Telegram creates: posted, while the bot waits for its id)."""

    def __init__(self) -> None:
        super().__init__()
        self.hanging_chats: set[int] = set()
        self.release = asyncio.Event()
        self.release_ok = False
        self.down = False
        self.latency = 0.0

    async def _send_message(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        if self.down:
            raise _ApiError(503, "Service Unavailable")
        if params.get("chat_id") in self.hanging_chats:
            # Held until released; then answers 503, or posts when `release_ok`.
            await self.release.wait()
            if not self.release_ok:
                raise _ApiError(503, "Service Unavailable")
        result = await super()._send_message(params, files)
        if self.latency:
            await asyncio.sleep(self.latency)
        return result

    def texts(self, chat: int) -> list[str]:
        return [m.get("text") or m.get("caption") or "" for m in self.messages.get(str(chat), [])]


@contextlib.asynccontextmanager
async def two_chats() -> AsyncIterator[FlakyTelegram]:
    """The flaky Telegram fake with a supergroup (GROUP) and a group (OTHER)."""
    async with FlakyTelegram() as tg:
        tg.add_chat(GROUP, "supergroup", title="Streams")
        tg.add_chat(OTHER, "group", title="Friends")
        yield tg


@pytest.fixture
async def telegram() -> AsyncIterator[FlakyTelegram]:
    async with two_chats() as tg:
        yield tg


def write_config(
    tmp_path: Path,
    telegram: FakeTelegram,
    discord: FakeDiscord | None = None,
    *,
    chats: tuple[int, ...] = (GROUP, OTHER),
    extra: str = "",
) -> Path:
    """bot.toml posting twitch/* to `chats` (and Discord's streams channel); `extra` is
    more TOML ([behaviour], [metrics]...)."""
    discord_section = ""
    discord_channels = ""
    if discord is not None:
        discord_section = (
            f'[discord]\ntoken = "{DISCORD_TOKEN}"\napi_url = "{discord.api_url}"\n'
            f'gateway_url = "{discord.gateway_url}"\n'
        )
        discord_channels = f'discord_channels = ["{STREAMS_CHANNEL_ID}"]'
    config = tmp_path / "bot.toml"
    config.write_text(f"""
[server]
host = "127.0.0.1"
port = 0

[storage]
path = "{tmp_path / "bot.sqlite3"}"

[console]
enabled = false

[telegram]
token = "{telegram.token}"
api_url = "{telegram.api_url}"

{discord_section}
{extra}

[[sources]]
name = "rec"
kind = "onliverec"
secret = "{SECRET}"

[[routes]]
match = "twitch/*"
telegram_chats = {json.dumps([str(chat) for chat in chats])}
{discord_channels}
""")
    return config


@contextlib.asynccontextmanager
async def bot_process(config: Path) -> AsyncIterator[BotProcess]:
    """`python -m bot run`, yielded once every sink is running (per /healthz)."""
    async with running_bot(config) as bot:
        async with asyncio.timeout(15), aiohttp.ClientSession() as session:
            while True:
                async with session.get(f"{bot.url}/healthz") as response:
                    sinks = (await response.json())["sinks"]
                if sinks and all(state == "running" for state in sinks.values()):
                    break
                await asyncio.sleep(0.05)
        yield bot


def live_start(channel: str, title: str) -> dict[str, Any]:
    return {
        "id": f"r{next(_ids)}-{time.monotonic_ns()}",
        "type": "live_start",
        "data": {
            "platform": "twitch",
            "channel": channel,
            "url": f"https://twitch.tv/{channel}",
            "live_info": {"uname": channel.title(), "title": title},
        },
    }


async def post(url: str, payload: dict[str, Any]) -> aiohttp.ClientResponse:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/webhook/rec?key={SECRET}", json=payload) as response,
    ):
        await response.read()
        return response


def delivery_states(tmp_path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(tmp_path / "bot.sqlite3")
    try:
        return [
            tuple(row)
            for row in conn.execute("SELECT sink, target, state FROM deliveries ORDER BY id")
        ]
    finally:
        conn.close()


def assert_no_secrets(bot: BotProcess, *tokens: str) -> None:
    for token in (SECRET, *tokens):
        assert token not in bot.stderr
        assert token not in bot.stdout


async def test_sigterm_mid_delivery_drains_with_503_exits_0_and_the_next_start_delivers(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    config = write_config(tmp_path, telegram)
    telegram.hanging_chats.add(GROUP)
    async with bot_process(config) as bot:
        response = await post(bot.url, live_start("quinn", "Hanging send"))
        assert response.status == 202
        await telegram.wait_for_message(OTHER, lambda m: "Hanging send" in str(m))
        await telegram.wait_for_call(
            "sendMessage", lambda c: c.params.get("chat_id") == GROUP, answered=False
        )
        bot.proc.send_signal(signal.SIGTERM)
        await bot.wait_for("stderr", r"stopping: answering webhooks with 503")
        async with aiohttp.ClientSession() as session, session.get(f"{bot.url}/healthz") as health:
            assert health.status == 503
            assert (await health.json())["draining"] is True
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{bot.url}/webhook/rec?key={SECRET}", json=live_start("late", "Too late")
            ) as refused,
        ):
            body = await refused.json()
            assert refused.status == 503
            assert int(refused.headers["Retry-After"]) > 0
            assert "retry" in body["error"]
        # The hung send is waited for: up to its 30 s read timeout (a slow Telegram may
        # still post it), within the 45 s drain.
        assert await bot.stop(timeout=60) == 0
    assert "stopped" in bot.stderr
    assert_no_secrets(bot, telegram.token)
    # The hung send was cut off; its delivery is still in the outbox, nothing else is.
    # Cut off by its read timeout ('pending', a retry) or by the drain a moment after
    # ('sending', re-queued at start): either way it is delivered after the restart.
    states = dict(((sink, target), state) for sink, target, state in delivery_states(tmp_path))
    assert states.pop(("telegram", str(OTHER))) == "sent"
    assert states.pop(("telegram", str(GROUP))) in ("sending", "pending")
    assert states == {}

    telegram.hanging_chats.clear()
    async with bot_process(config) as bot:
        await telegram.wait_for_message(GROUP, lambda m: "Hanging send" in str(m))
        assert await bot.stop() == 0
    assert telegram.texts(GROUP).count(telegram.texts(GROUP)[0]) == 1
    assert len(telegram.texts(GROUP)) == len(telegram.texts(OTHER)) == 1
    assert not any("Too late" in text for text in telegram.texts(OTHER))
    assert {state for *_, state in delivery_states(tmp_path)} == {"sent"}
    assert_no_secrets(bot, telegram.token)


async def test_kill_9_during_an_outage_then_recovery_delivers_each_event_once_everywhere(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    async with FakeDiscord(token=DISCORD_TOKEN, heartbeat_interval=200) as discord:
        config = write_config(tmp_path, telegram, discord)
        telegram.down = True
        titles = [f"Outage stream {n}" for n in range(3)]
        events = [live_start(f"streamer{n}", title) for n, title in enumerate(titles)]
        async with bot_process(config) as bot:
            for event in events:
                started = time.monotonic()
                assert (await post(bot.url, event)).status == 202
                # Telegram answering 503 all along does not hold Discord up.
                await discord.wait_for_message(
                    STREAMS_CHANNEL_ID,
                    lambda m, t=event["data"]["live_info"]["title"]: t in json.dumps(m),
                    timeout=3,
                )
                assert time.monotonic() - started < 3
            # Every Telegram delivery was tried and failed at least once.
            async with asyncio.timeout(10):
                while len(
                    [c for c in telegram.calls_to("sendMessage") if c.status == 503]
                ) < 2 * len(events):
                    await asyncio.sleep(0.05)
            bot.proc.kill()
            assert await bot.proc.wait() == -signal.SIGKILL
        assert all(not texts for texts in (telegram.texts(GROUP), telegram.texts(OTHER)))

        telegram.down = False
        async with bot_process(config) as bot:
            for chat in (GROUP, OTHER):
                for title in titles:
                    await telegram.wait_for_message(
                        chat, lambda m, t=title: t in str(m), timeout=15
                    )
            # The sender retrying an accepted event changes nothing.
            for event in events:
                again = await post(bot.url, event)
                assert again.status == 200
            await asyncio.sleep(0.3)
            assert await bot.stop() == 0
        assert_no_secrets(bot, telegram.token, DISCORD_TOKEN)

    for chat in (GROUP, OTHER):
        texts = telegram.texts(chat)
        assert len(texts) == len(titles)
        for title in titles:
            assert sum(title in text for text in texts) == 1
    discord_texts = [json.dumps(m) for m in discord.messages[STREAMS_CHANNEL_ID]]
    assert len(discord_texts) == len(titles)
    for title in titles:
        assert sum(title in text for text in discord_texts) == 1
    assert {state for *_, state in delivery_states(tmp_path)} == {"sent"}


# -- /healthz ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def in_process_bot(tmp_path: Path, **sections: Any) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    config = make_config(tmp_path, **sections)
    task = asyncio.create_task(
        run(
            config,
            stop,
            on_ready=ready.set_result,
            console_stream=io.StringIO(),
            sink_options={"telegram": {"poll_timeout": 1.0}} if "telegram" in sections else None,
            stuck_after=0.5,
        )
    )
    try:
        yield await asyncio.wait_for(ready, 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def healthz(running: Running) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{running.base_url}/healthz") as response,
    ):
        return response.status, await response.json()


async def test_healthz_fails_while_a_due_delivery_waits_too_long(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    telegram.hanging_chats.add(GROUP)
    async with in_process_bot(
        tmp_path,
        console={"enabled": False},
        telegram={"token": telegram.token, "api_url": telegram.api_url},
        routes=[{"match": "twitch/*", "telegram_chats": [str(GROUP)]}],
    ) as running:
        assert (await healthz(running))[0] == 200
        assert (await post(running.base_url, live_start("quinn", "First"))).status == 202
        await telegram.wait_for_call(
            "sendMessage", lambda c: c.params.get("chat_id") == GROUP, answered=False
        )
        # Queued behind the hung send to the same chat: due, but no worker can take it.
        assert (await post(running.base_url, live_start("ada", "Second"))).status == 202
        async with asyncio.timeout(5):
            while (status := await healthz(running))[0] == 200:
                await asyncio.sleep(0.1)
        code, report = status
        assert code == 503
        assert report["outbox"]["stuck"] is True
        assert report["outbox"]["overdue_seconds"] >= 0.5
        assert report["database"] == "ok"
        # The hung send ends (503, retried later) and the queue moves again.
        telegram.hanging_chats.clear()
        telegram.release.set()
        await telegram.wait_for_message(GROUP, lambda m: "Second" in str(m))
        async with asyncio.timeout(5):
            while (await healthz(running))[0] != 200:
                await asyncio.sleep(0.1)


async def test_a_send_that_finishes_within_the_drain_grace_counts_as_sent(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    telegram.hanging_chats.add(GROUP)
    config = make_config(
        tmp_path,
        console={"enabled": False},
        telegram={"token": telegram.token, "api_url": telegram.api_url},
        routes=[{"match": "twitch/*", "telegram_chats": [str(GROUP)]}],
    )
    stop = asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run(
            config,
            stop,
            on_ready=ready.set_result,
            sink_options={"telegram": {"poll_timeout": 1.0}},
        )
    )
    running = await asyncio.wait_for(ready, 10)
    assert (await post(running.base_url, live_start("quinn", "Slow but sure"))).status == 202
    await telegram.wait_for_call(
        "sendMessage", lambda c: c.params.get("chat_id") == GROUP, answered=False
    )
    stop.set()
    await asyncio.sleep(0.3)
    assert not task.done()  # waiting for the send, not cutting it off
    telegram.release_ok = True
    telegram.release.set()
    await asyncio.wait_for(task, 5)
    assert telegram.texts(GROUP) and "Slow but sure" in telegram.texts(GROUP)[0]
    assert {state for *_, state in delivery_states(tmp_path)} == {"sent"}


async def test_healthz_fails_when_the_database_is_unusable(tmp_path: Path) -> None:
    async with in_process_bot(tmp_path) as running:
        code, report = await healthz(running)
        assert (code, report["ok"], report["database"]) == (200, True, "ok")
        run_sql(running.store.path, "ALTER TABLE streams RENAME TO streams_gone")
        code, report = await healthz(running)
        assert code == 503
        assert report["ok"] is False
        assert report["database"] == "unavailable"
        assert "no such table: streams" in report["database_error"]
        run_sql(running.store.path, "ALTER TABLE streams_gone RENAME TO streams")
        assert (await healthz(running))[0] == 200


# -- python -m bot deliveries --------------------------------------------------------------


async def _seed(path: Path) -> dict[str, int]:
    """One delivery in each state, in a new database at `path`."""
    store = SQLiteStore(path)
    await store.open()
    try:
        now = time.time()
        row = await store.insert_event(sample_event("live_start"), notified=True)
        assert row is not None
        ids: dict[str, int] = {}
        for target, created in (("-1001", 7200), ("-1002", 90), ("-1003", 30)):
            ids[target] = await store.add_delivery(
                event_row=row,
                sink="telegram",
                target=target,
                not_before=now - created,
                now=now - created,
            )
        for _ in range(3):
            await store.claim_due("telegram", now=now)
            await store.mark_retry(
                ids["-1001"],
                error="NetworkError: Bad Gateway\n(502)",
                not_before=now - 10,
                now=now,
            )
        await store.mark_failed(ids["-1001"], error="NetworkError: Bad Gateway (502)", now=now)
        await store.mark_sent(ids["-1003"], message_id="9", now=now)
        await store.mark_retry(ids["-1002"], error="RetryAfter: 30", not_before=now + 30, now=now)
    finally:
        await store.close()
    return ids


def seeded_outbox(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """A config and a database with one delivery in each state."""
    config = tmp_path / "bot.toml"
    config.write_text(f"""
[storage]
path = "{tmp_path / "bot.sqlite3"}"

[[sources]]
name = "rec"
kind = "onliverec"
secret = "{SECRET}"
""")
    ids = asyncio.run(_seed(tmp_path / "bot.sqlite3"))
    return config, ids


def test_deliveries_lists_pending_and_failed_with_their_last_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, ids = seeded_outbox(tmp_path)
    assert main(["deliveries", "-c", str(config)]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["ID", "STATE", "SINK"]
    assert "LAST ERROR" in header
    assert len(lines) == 2  # the sent one is not listed
    failed, pending = lines
    event = sample_event("live_start")
    for line in lines:
        assert f"live_start {event.streamer_key}" in line
    assert failed.split()[:4] == [str(ids["-1001"]), "failed", "telegram", "-1001"]
    assert "2h00m" in failed and "NetworkError: Bad Gateway (502)" in failed
    assert failed.split()[6] == "3"  # attempts
    assert pending.split()[:4] == [str(ids["-1002"]), "pending", "telegram", "-1002"]
    assert "1m" in pending and "RetryAfter: 30" in pending
    assert pending.split()[8] in ("29s", "30s")  # NEXT: when the retry is due
    assert failed.split()[8] == "-"


def test_deliveries_retry_requeues_failed_ones_keeping_attempts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, ids = seeded_outbox(tmp_path)
    before = time.time()
    assert main(["deliveries", "-c", str(config), "--retry"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("re-queued 1 failed deliveries")

    async def outbox() -> tuple[list[DeliveryInfo], dict[str, int]]:
        store = SQLiteStore(tmp_path / "bot.sqlite3")
        await store.open()
        try:
            return await store.deliveries_for_event(1), (await store.outbox_counts()).by_state
        finally:
            await store.close()

    rows, states = asyncio.run(outbox())
    row = rows[0]
    assert row.id == ids["-1001"]
    assert (row.state, row.attempts) == ("pending", 3)
    assert before <= row.not_before <= time.time()
    assert states == {"pending": 2, "sent": 1}
    assert main(["deliveries", "-c", str(config), "--retry"]) == 0
    assert capsys.readouterr().out.startswith("re-queued 0 failed deliveries")


def test_deliveries_without_a_database_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = seeded_outbox(tmp_path)
    (tmp_path / "bot.sqlite3").unlink()
    assert main(["deliveries", "-c", str(config)]) == 1
    assert "no database" in capsys.readouterr().err
    assert not (tmp_path / "bot.sqlite3").exists()


def test_the_log_secret_watch_catches_a_leak() -> None:
    """The suite-wide check (conftest) would notice a secret in a message or traceback."""
    from tests.conftest import _SecretWatch  # noqa: PLC0415

    watch = _SecretWatch()
    clean = logging.LogRecord("bot", logging.DEBUG, __file__, 1, "key=%s", ("***",), None)
    leaky = logging.LogRecord("bot", logging.DEBUG, __file__, 1, "key=%s", (SECRET,), None)
    try:
        raise ValueError(f"bad {SECRET}")
    except ValueError:
        in_traceback = logging.LogRecord(
            "bot", logging.ERROR, __file__, 1, "boom", None, sys.exc_info()
        )
    for record in (clean, leaky, in_traceback):
        watch.emit(record)
    assert len(watch.leaks) == 2


async def test_health_counts_overdue_time_only_from_when_the_workers_started(store: Store) -> None:
    """After downtime every pending row is 'late'; that is the backlog, not a stuck outbox."""
    now = time.time()
    row = await store.insert_event(sample_event("live_start"), notified=True)
    assert row is not None
    await store.add_delivery(
        event_row=row, sink="console", target="-", not_before=now - 3600, now=now - 3600
    )
    health = Health(store=store, sinks={}, stuck_after=300)
    health.sinks = {
        "console": ConsoleSink(renderer=Renderer(formats=message_formats()), stream=io.StringIO())
    }
    assert (await health.report())["outbox"]["stuck"] is False  # workers not started yet
    health.workers_started = now - 10
    assert (await health.report())["outbox"]["stuck"] is False
    health.workers_started = now - 301
    report = await health.report()
    assert report["outbox"]["stuck"] is True
    assert report["ok"] is False
    # A sink that is not configured any more has no worker; its rows do not count.
    health.sinks = {}
    assert (await health.report())["outbox"]["stuck"] is False


async def test_health_fails_while_the_dispatch_stage_cannot_dispatch(store: Store) -> None:
    stage = DispatchStage(Dispatcher(store=store, routes=[], sinks=[]))
    health = Health(store=store, sinks={}, stuck_after=300, dispatch=stage)
    assert (await health.report())["ok"] is True
    stage.error = "ValueError: payload is not JSON"
    report = await health.report()
    assert report["ok"] is False
    assert report["dispatch_error"] == "ValueError: payload is not JSON"
    stage.error = None
    assert "dispatch_error" not in await health.report()
