"""The promise under faults, through the real `python -m bot run` process.

A second instance on one database, a disk that stops taking writes, a database locked
by another process, a platform that keeps failing, SIGTERM with a slow platform, SIGHUP.
The bot runs as a subprocess; the Telegram fake runs here on 127.0.0.1.

The full disk is the kernel's file size limit (RLIMIT_FSIZE) set on the running bot with
prlimit: every write past 4 KiB into any file fails as a full disk does (SQLite reports
an I/O error), it needs no privileges or mounts, and raising the limit again is the disk
getting room back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import SECRET
from tests.test_cli import BotProcess, running_bot, start_bot
from tests.test_reliability import (
    GROUP,
    OTHER,
    FlakyTelegram,
    bot_process,
    delivery_states,
    live_start,
    post,
    two_chats,
    write_config,
)


@pytest.fixture
async def telegram() -> AsyncIterator[FlakyTelegram]:
    async with two_chats() as tg:
        yield tg


async def healthz(url: str, timeout: float = 10) -> tuple[int, dict[str, Any]]:
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as session,
        session.get(f"{url}/healthz") as response,
    ):
        return response.status, await response.json()


async def wait_health(url: str, check: Any, timeout: float = 20) -> dict[str, Any]:
    """Poll /healthz until `check(status, report)` holds; returns that report."""
    async with asyncio.timeout(timeout):
        while True:
            status, report = await healthz(url)
            if check(status, report):
                return report
            await asyncio.sleep(0.1)


async def metric(url: str, name: str) -> float | None:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def texts(telegram: FlakyTelegram, chat: int) -> list[str]:
    return telegram.texts(chat)


def set_file_size_limit(pid: int, limit: int) -> None:
    """The bot's RLIMIT_FSIZE: writes past `limit` bytes fail like a full disk."""
    _soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))


def no_tracebacks(bot: BotProcess) -> None:
    assert "Traceback" not in bot.stderr, bot.stderr
    assert "Task exception was never retrieved" not in bot.stderr, bot.stderr


async def wait_all_sent(tmp_path: Path, timeout: float = 10) -> None:
    """Until every delivery is recorded as sent (a kill before that may repeat one)."""
    async with asyncio.timeout(timeout):
        while {state for *_, state in delivery_states(tmp_path)} != {"sent"}:
            await asyncio.sleep(0.05)


async def wait_state(tmp_path: Path, chat: int, state: str, timeout: float = 10) -> None:
    """Until the chat's deliveries are all recorded in `state`."""
    async with asyncio.timeout(timeout):
        while {s for _sink, target, s in delivery_states(tmp_path) if target == str(chat)} != {
            state
        }:
            await asyncio.sleep(0.05)


METRICS = "[metrics]\nenabled = true"


# -- 1. one process per database ----------------------------------------------------------


async def test_a_second_instance_is_refused_naming_the_holder_and_kill_9_frees_the_lock(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    config = write_config(tmp_path, telegram)
    async with bot_process(config) as first:
        getme_before = len(telegram.calls_to("getMe"))
        second = await start_bot(config)
        _out, err = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 1
        lines = [line for line in err.decode().splitlines() if line.startswith("error:")]
        assert len(lines) == 1, err.decode()
        assert f"process {first.proc.pid}" in lines[0]
        assert "already running" in lines[0]
        assert "Traceback" not in err.decode()
        # The refused process never reached Telegram: no login, no polling fight.
        assert len(telegram.calls_to("getMe")) == getme_before
        # The first one is untouched and still delivers.
        assert (await post(first.url, live_start("quinn", "Still the only one"))).status == 202
        await telegram.wait_for_message(GROUP, lambda m: "Still the only one" in str(m))
        await wait_all_sent(tmp_path)
        first.proc.kill()
        assert await first.proc.wait() == -signal.SIGKILL

    # kill -9 releases the lock: the next start comes up and is the holder now.
    async with bot_process(config) as third:
        lock = tmp_path / "bot.sqlite3.lock"
        assert lock.read_text().strip() == str(third.proc.pid)
        assert await third.stop() == 0
    assert texts(telegram, GROUP).count(texts(telegram, GROUP)[0]) == 1


# A bot whose dispatch stage never starts: it accepts and commits webhooks, and applies
# none of them, so a kill -9 lands between the commit and the dispatch. Imported at start
# by Python itself (sitecustomize), in that one process only.
HOLD_DISPATCH = """
import asyncio
from bot.pipeline import dispatch

async def held(self, stop):
    await stop.wait()

dispatch.DispatchStage.run = held
"""


async def test_kill_9_between_commit_and_dispatch_dispatches_after_restart_exactly_once(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    config = write_config(tmp_path, telegram, extra=METRICS)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(HOLD_DISPATCH)
    held = {"PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")])}
    async with running_bot(config, env=held) as first:
        first_event = live_start("quinn", "Committed, not dispatched")
        assert (await post(first.url, first_event)).status == 202
        assert (await post(first.url, live_start("ada", "Another one"))).status == 202
        assert (await post(first.url, first_event)).status == 200  # a retry: a duplicate
        assert await metric(first.url, "streambot_dispatch_backlog") == 2
        first.proc.kill()
        assert await first.proc.wait() == -signal.SIGKILL
    assert texts(telegram, GROUP) == []
    assert delivery_states(tmp_path) == []  # stored, and nothing else happened yet

    async with bot_process(config) as second:
        await telegram.wait_for_message(GROUP, lambda m: "Another one" in str(m))
        await wait_all_sent(tmp_path)
        assert await second.stop() == 0
    for chat in (GROUP, OTHER):
        shown = texts(telegram, chat)
        assert len(shown) == 2, shown
        assert sum("Committed, not dispatched" in text for text in shown) == 1
    assert len(delivery_states(tmp_path)) == 4

    # And once only: the next start finds nothing left to dispatch.
    async with bot_process(config) as third:
        await asyncio.sleep(0.5)
        assert await third.stop() == 0
    assert [len(texts(telegram, chat)) for chat in (GROUP, OTHER)] == [2, 2]


# -- 2 and 3. a database that stops taking writes ---------------------------------------


async def test_a_full_disk_gets_503s_keeps_the_sent_outcome_and_recovers_by_itself(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    config = write_config(tmp_path, telegram, extra=METRICS)
    telegram.hanging_chats.add(GROUP)
    async with bot_process(config) as bot:
        # A send in flight when the disk fills: it answers after the disk is full.
        assert (await post(bot.url, live_start("quinn", "In flight"))).status == 202
        await telegram.wait_for_message(OTHER, lambda m: "In flight" in str(m))
        await wait_state(tmp_path, OTHER, "sent")
        await telegram.wait_for_call(
            "sendMessage", lambda c: c.params.get("chat_id") == GROUP, answered=False
        )
        set_file_size_limit(bot.proc.pid, 4096)

        during = live_start("ada", "During the outage")
        refused = await post(bot.url, during)
        assert refused.status == 503
        assert int(refused.headers["Retry-After"]) > 0
        report = await wait_health(bot.url, lambda s, r: s == 503)
        assert report["database"] == "unavailable"
        assert "I/O error" in report["database_error"] or "full" in report["database_error"]

        # Telegram takes the hung message now; the database refuses to record it.
        telegram.release_ok = True
        telegram.release.set()
        await telegram.wait_for_message(GROUP, lambda m: "In flight" in str(m))
        report = await wait_health(bot.url, lambda s, r: r["outbox"].get("unrecorded") == 1)
        assert await metric(bot.url, "streambot_outbox_unrecorded") == 1.0
        await asyncio.sleep(2)  # workers keep trying; the process stays up
        assert bot.proc.returncode is None

        # Room again: recorded, healthy, and the sender's retry is taken.
        set_file_size_limit(bot.proc.pid, resource.RLIM_INFINITY)
        report = await wait_health(bot.url, lambda s, r: s == 200)
        assert report["database"] == "ok" and report["outbox"]["unrecorded"] == 0
        assert (await post(bot.url, during)).status == 202
        for chat in (GROUP, OTHER):
            await telegram.wait_for_message(chat, lambda m: "During the outage" in str(m))
        assert await bot.stop() == 0
    no_tracebacks(bot)
    assert "database unavailable" in bot.stderr
    assert "database writable again" in bot.stderr

    # The next start sends nothing again: the outcome kept in memory was recorded.
    async with bot_process(config) as bot:
        await asyncio.sleep(1)
        assert await bot.stop() == 0
    for chat in (GROUP, OTHER):
        assert sum("In flight" in text for text in texts(telegram, chat)) == 1
        assert sum("During the outage" in text for text in texts(telegram, chat)) == 1
    assert {state for *_, state in delivery_states(tmp_path)} == {"sent"}


# Root writes to any file whatever its mode; without these capabilities it obeys the
# mode like any user, so a read-only database file is read-only to the bot.
AS_AN_ORDINARY_USER = (
    ("setpriv", "--bounding-set=-dac_override,-dac_read_search") if os.geteuid() == 0 else ()
)


async def test_a_read_only_database_is_503_until_it_is_writable_then_recovers_by_itself(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    config = write_config(tmp_path, telegram)
    database = tmp_path / "bot.sqlite3"
    async with bot_process(config) as bot:
        assert (await post(bot.url, live_start("quinn", "While writable"))).status == 202
        await wait_all_sent(tmp_path)
        assert await bot.stop() == 0
    # Restored from a backup with the wrong mode, say: the bot can read it, not write it.
    database.chmod(0o444)
    async with running_bot(config, wrapper=AS_AN_ORDINARY_USER) as bot:
        report = await wait_health(bot.url, lambda s, r: r["database"] == "unavailable")
        assert "SQLITE_READONLY" in report["database_error"]
        refused = await post(bot.url, live_start("ada", "Read-only"))
        assert refused.status == 503 and "Retry-After" in refused.headers
        assert bot.proc.returncode is None
        for name in ("bot.sqlite3", "bot.sqlite3-wal", "bot.sqlite3-shm"):
            os.chmod(tmp_path / name, 0o644)  # the WAL files took the database's mode
        await wait_health(bot.url, lambda s, r: s == 200, timeout=30)
        assert (await post(bot.url, live_start("ada", "Read-only"))).status == 202
        for chat in (GROUP, OTHER):
            await telegram.wait_for_message(chat, lambda m: "Read-only" in str(m))
        assert await bot.stop() == 0
    no_tracebacks(bot)
    assert "reopened after a read-only refusal" in bot.stderr
    for chat in (GROUP, OTHER):
        assert sum("While writable" in text for text in texts(telegram, chat)) == 1


def hold_write_lock(database: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


async def test_a_database_locked_by_another_process_answers_503_and_catches_up_after(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    config = write_config(tmp_path, telegram, extra='[behaviour]\nend_grace = "2s"')
    database = tmp_path / "bot.sqlite3"
    async with bot_process(config) as bot:
        start = live_start("quinn", "Locked out")
        assert (await post(bot.url, start)).status == 202
        await telegram.wait_for_message(GROUP, lambda m: "Locked out" in str(m))
        end = {**start, "id": start["id"] + "-end", "type": "live_end"}
        assert (await post(bot.url, end)).status == 202  # its notice is due in 2 s

        # A lock held briefly: the webhook waits it out (off the event loop) and is taken.
        holder = hold_write_lock(database)
        asyncio.get_running_loop().call_later(1.0, holder.rollback)
        brief = live_start("ada", "After a brief lock")
        assert (await post(bot.url, brief)).status == 202
        holder.close()

        # A lock held far past the busy timeout, while the end notice falls due.
        holder = hold_write_lock(database)
        try:
            long_wait = live_start("bea", "After a long lock")
            refused = await post(bot.url, long_wait)
            assert refused.status == 503 and "Retry-After" in refused.headers
            # /healthz answers at once all along and says why.
            for _ in range(5):
                started = time.monotonic()
                status, report = await healthz(bot.url, timeout=2.5)
                assert time.monotonic() - started < 2.5
                assert status == 503 and report["database"] == "unavailable"
                assert "locked" in report["database_error"]
                await asyncio.sleep(0.5)
            assert bot.proc.returncode is None
        finally:
            holder.rollback()
            holder.close()
        await wait_health(bot.url, lambda s, r: s == 200)
        assert (await post(bot.url, long_wait)).status == 202
        for chat in (GROUP, OTHER):
            await telegram.wait_for_message(chat, lambda m: "After a long lock" in str(m))
            await telegram.wait_for_message(
                chat,
                lambda m: "ended" in str(m).lower() or "offline" in str(m).lower(),
                timeout=15,
            )
        assert await bot.stop() == 0
    no_tracebacks(bot)
    for chat in (GROUP, OTHER):
        assert sum("Locked out" in text for text in texts(telegram, chat)) == 1


# -- 7. SIGTERM with a slow platform -------------------------------------------------------


async def test_sigterm_with_a_slow_telegram_waits_for_each_send_and_never_repeats_one(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    config = write_config(tmp_path, telegram)
    titles = [f"Slow stream {n}" for n in range(4)]
    async with bot_process(config) as bot:
        telegram.latency = 2.0
        for n, title in enumerate(titles):
            assert (await post(bot.url, live_start(f"slow{n}", title))).status == 202
        # The first message went alone; the other three were queued behind it and go out
        # as one batch. The batch's first message is in, its answer on its way: stop now.
        # The rest of the batch must not start, and the send on its way must not be cut.
        for chat in (GROUP, OTHER):
            await telegram.wait_for_message(chat, lambda m: "Slow stream 1" in str(m))
        bot.proc.send_signal(signal.SIGTERM)
        assert await bot.stop() == 0
    assert "cut off" not in bot.stderr
    sent_before = {chat: len(texts(telegram, chat)) for chat in (GROUP, OTHER)}
    assert all(count < len(titles) for count in sent_before.values())

    telegram.latency = 0.0
    async with bot_process(config) as bot:
        for chat in (GROUP, OTHER):
            for title in titles:
                await telegram.wait_for_message(chat, lambda m, t=title: t in str(m))
        assert await bot.stop() == 0
    for chat in (GROUP, OTHER):
        for title in titles:
            assert sum(title in text for text in texts(telegram, chat)) == 1, texts(telegram, chat)
    assert {state for *_, state in delivery_states(tmp_path)} == {"sent"}


# -- 9. /healthz tells the truth about a failing platform -------------------------------


async def test_healthz_reports_telegram_degraded_while_every_send_fails(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    config = write_config(tmp_path, telegram, extra=METRICS)
    async with bot_process(config) as bot:
        telegram.down = True
        assert (await post(bot.url, live_start("quinn", "Nobody hears"))).status == 202
        report = await wait_health(bot.url, lambda s, r: s == 503)
        assert report["sinks"]["telegram"] == "degraded"
        assert report["database"] == "ok"
        assert await metric(bot.url, 'streambot_sink_up{sink="telegram"}') == 0.0
        telegram.down = False
        report = await wait_health(bot.url, lambda s, r: s == 200, timeout=30)
        assert report["sinks"]["telegram"] == "running"
        await telegram.wait_for_message(GROUP, lambda m: "Nobody hears" in str(m))
        assert await bot.stop() == 0
    no_tracebacks(bot)


# -- 8. SIGHUP reloads ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def console_bot(config: Path) -> AsyncIterator[BotProcess]:
    async with running_bot(config) as bot:
        yield bot


def console_config(
    tmp_path: Path, *, match: str = "twitch/*", port: int = 0, templates: Path | None = None
) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}

[storage]
path = "{tmp_path / "bot.sqlite3"}"

{f'[templates]{chr(10)}dir = "{templates}"' if templates else ""}

[behaviour]
end_grace = "0s"

[[sources]]
name = "rec"
kind = "onliverec"
secret = "{SECRET}"

[[routes]]
match = "{match}"
"""


async def accepted(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/webhook/rec?key={SECRET}", json=payload) as response,
    ):
        assert response.status == 202, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def test_sighup_reloads_routes_and_templates_and_refuses_a_broken_config(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(console_config(tmp_path))
    async with console_bot(config) as bot:
        await accepted(bot.url, live_start("quinn", "Before reload"))
        await bot.wait_for("stdout", "Before reload")

        # New routes and a template override take effect without a restart.
        templates = tmp_path / "templates"
        (templates / "console").mkdir(parents=True)
        (templates / "console" / "live_start.j2").write_text(
            "RELOADED {{ streamer.name }}: {{ live.title }}\n"
        )
        config.write_text(console_config(tmp_path, match="*/ada*", templates=templates))
        bot.proc.send_signal(signal.SIGHUP)
        await bot.wait_for("stderr", r"reloaded: 1 routes")
        await accepted(bot.url, live_start("quinn", "Not routed"))
        await accepted(bot.url, live_start("ada", "Routed now"))
        await bot.wait_for("stdout", "RELOADED Ada: Routed now")
        # Dispatched and printed in the order they came: quinn's would be out by now.
        assert "Not routed" not in bot.stdout

        # A broken config changes nothing: the one running stays, and the log says why.
        config.write_text(console_config(tmp_path) + "\n[[routes]]\nmatch = 7\n")
        bot.proc.send_signal(signal.SIGHUP)
        await bot.wait_for("stderr", r"reload refused, the running config stays: routes\[1\]")
        await accepted(bot.url, live_start("adam", "Still routed"))
        await bot.wait_for("stdout", "RELOADED Adam: Still routed")
        config.write_text("[server\nport = ")
        bot.proc.send_signal(signal.SIGHUP)
        await bot.wait_for("stderr", r"reload refused.*invalid TOML")

        # What a running process cannot change is named, and waits for a restart.
        config.write_text(console_config(tmp_path, match="*/ada*", port=1, templates=templates))
        bot.proc.send_signal(signal.SIGHUP)
        await bot.wait_for("stderr", r"server\.port changed; that takes effect at the next")
        status, _report = await healthz(bot.url)
        assert status == 200
        assert await bot.stop() == 0
    assert "Not routed" not in bot.stdout
    no_tracebacks(bot)


async def test_sighup_mid_delivery_neither_kills_nor_repeats_a_send(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    config = write_config(tmp_path, telegram)
    telegram.hanging_chats.add(GROUP)
    async with bot_process(config) as bot:
        assert (await post(bot.url, live_start("quinn", "Through a reload"))).status == 202
        await telegram.wait_for_call(
            "sendMessage", lambda c: c.params.get("chat_id") == GROUP, answered=False
        )
        bot.proc.send_signal(signal.SIGHUP)
        await bot.wait_for("stderr", r"reloaded: ")
        telegram.release_ok = True
        telegram.release.set()
        await telegram.wait_for_message(GROUP, lambda m: "Through a reload" in str(m))
        assert bot.proc.returncode is None
        assert await bot.stop() == 0
    for chat in (GROUP, OTHER):
        assert sum("Through a reload" in text for text in texts(telegram, chat)) == 1
    assert json.dumps(delivery_states(tmp_path)).count('"sent"') == 2


# -- a slow Telegram ------------------------------------------------------------------------


async def test_a_telegram_answering_after_8_s_gets_each_message_exactly_once(
    tmp_path: Path, telegram: FlakyTelegram
) -> None:
    # Posted at once, answered 8 s later: past PTB's default 5 s read timeout, which
    # made the outbox send it again (three identical messages in 6 s).
    telegram.latency = 8.0
    config = write_config(tmp_path, telegram)
    async with bot_process(config) as bot:
        assert (await post(bot.url, live_start("quinn", "Slow but once"))).status == 202
        await wait_all_sent(tmp_path, timeout=30)
        assert await bot.stop() == 0
    for chat in (GROUP, OTHER):
        assert texts(telegram, chat) == [texts(telegram, chat)[0]], texts(telegram, chat)
        assert "Slow but once" in texts(telegram, chat)[0]
    assert {state for *_, state in delivery_states(tmp_path)} == {"sent"}
