"""Several bot processes on one PostgreSQL database (issue 20), through real
`python -m bot run` processes against the Telegram fake: webhooks spread over them,
processes killed with SIGKILL and started again while they work. Every accepted event
reaches every chat (at least once; at most the sends a kill cut off are repeated, the
documented Telegram edge), one process at a time long-polls, nobody gets a 429."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import SECRET
from tests.fakes.telegram_api import FakeTelegram
from tests.test_cli import BotProcess, start_bot

CHATS = [7001, 7002, 7003, 7004]
PROCESSES = 3
EVENTS = 30
KILLS = 4


def write_config(tmp_path: Path, url: str, telegram: FakeTelegram) -> Path:
    chats = ", ".join(f'"{chat}"' for chat in CHATS)
    config = tmp_path / "bot.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = 0

[storage]
url = "{url}"
lease = "10s"

[console]
enabled = false

[telegram]
token = "{telegram.token}"
api_url = "{telegram.api_url}"

[behaviour]
end_grace = "0s"

[[sources]]
name = "rec"
kind = "onliverec"
secret = "{SECRET}"

[[routes]]
match = "*"
telegram_chats = [{chats}]
"""
    )
    return config


async def started(config: Path) -> BotProcess:
    bot = BotProcess(await start_bot(config))
    found = await bot.wait_for("stderr", r"listening on (http://127\.0\.0\.1:\d+)", timeout=30)
    bot.url = found.group(1)
    return bot


def live_start(n: int) -> dict[str, Any]:
    channel = f"streamer{n:03d}"
    return {
        "id": f"mp-{n}",
        "type": "live_start",
        "data": {
            "platform": "twitch",
            "channel": channel,
            "url": f"https://twitch.tv/{channel}",
            "live_info": {"uname": f"Streamer{n:03d}", "title": f"Stream {n}"},
        },
    }


async def post_somewhere(
    session: aiohttp.ClientSession, bots: list[BotProcess], payload: dict[str, Any], first: int
) -> bool:
    """POST like a load balancer that retries another backend when one fails: True once a
    process accepted it (202, or 200 for a duplicate: stored by an earlier try)."""
    for attempt in range(len(bots) * 3):
        bot = bots[(first + attempt) % len(bots)]
        if bot.proc.returncode is not None or not bot.url:
            continue
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.post(
                f"{bot.url}/webhook/rec?key={SECRET}",
                json=payload,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                if response.status in (200, 202):
                    return True
        await asyncio.sleep(0.2)
    return False


def delivered(telegram: FakeTelegram) -> Counter[tuple[str, int]]:
    """(streamer, chat) -> how many cards the chat got for that streamer."""
    seen: Counter[tuple[str, int]] = Counter()
    for chat in CHATS:
        for message in telegram.messages.get(str(chat), []):
            found = re.search(r"Streamer\d{3}", str(message.get("text") or message.get("caption")))
            if found and message.get("from", {}).get("is_bot", True):
                seen[found.group(0), chat] += 1
    return seen


async def test_three_processes_share_the_work_through_kills(
    tmp_path: Path, postgres_url: str
) -> None:
    async with FakeTelegram(send_limit=(30, 1.0)) as telegram:
        for chat in CHATS:
            telegram.add_chat(chat, "private", first_name=f"User{chat}")
        config = write_config(tmp_path, postgres_url, telegram)
        bots = [await started(config) for _ in range(PROCESSES)]
        every: list[BotProcess] = list(bots)
        # Each sends at a third of Telegram's limits once it has counted the others.
        for bot in bots:
            await bot.wait_for("stderr", f"{PROCESSES} bot processes share the database")
        # Each is scraped on its own and says which process it is, and how many share.
        identities = set()
        async with aiohttp.ClientSession() as session:
            for bot in bots:
                async with session.get(f"{bot.url}/metrics") as response:
                    scraped = await response.text()
                assert f"streambot_processes {PROCESSES}.0" in scraped
                found = re.search(r'streambot_process_info\{process="([^"]+)"\} 1\.0', scraped)
                assert found is not None, scraped[:2000]
                identities.add(found.group(1))
        assert len(identities) == PROCESSES
        accepted: list[int] = []
        chance = random.Random(20)
        kill_at = set(chance.sample(range(5, EVENTS - 5), KILLS))
        try:
            async with aiohttp.ClientSession() as session:
                for n in range(EVENTS):
                    if n in kill_at:
                        victim = chance.randrange(len(bots))
                        bots[victim].proc.kill()  # SIGKILL: no goodbye, claims left behind
                        await bots[victim].proc.wait()
                        bots[victim] = await started(config)
                        every.append(bots[victim])
                    if await post_somewhere(session, bots, live_start(n), first=n):
                        accepted.append(n)
                    await asyncio.sleep(0.05)
            wanted = {(f"Streamer{n:03d}", chat) for n in accepted for chat in CHATS}
            # Claims of killed processes move on once their 10 s lease runs out.
            try:
                async with asyncio.timeout(90):
                    while not wanted <= set(delivered(telegram)):
                        await asyncio.sleep(0.25)
            except TimeoutError:
                missing = sorted(wanted - set(delivered(telegram)))
                tails = "\n---\n".join(bot.stderr[-4000:] for bot in every)
                pytest.fail(f"never delivered: {missing}\n{tails}")
            seen = delivered(telegram)
            # One poller at a time: a command is answered once, by whichever polls.
            telegram.push_message(CHATS[0], "/help", from_user_id=CHATS[0])
            answer = await telegram.wait_for_message(
                CHATS[0], lambda m: "/status" in str(m.get("text")), timeout=20
            )
            await asyncio.sleep(1.0)
        finally:
            for bot in bots:
                if bot.proc.returncode is None:
                    bot.proc.kill()
                    await bot.proc.wait()
            for bot in every:
                await asyncio.gather(*bot._readers, return_exceptions=True)

    assert len(accepted) == EVENTS  # some process always took the webhook
    repeats = sum(count - 1 for count in seen.values())
    # A kill can cut off at most one send per chat after Telegram took it.
    assert repeats <= KILLS * len(CHATS), seen
    assert answer is not None
    helps = [
        m for m in telegram.messages.get(str(CHATS[0]), []) if "/status" in str(m.get("text"))
    ]
    assert len(helps) == 1, helps
    rejected = [c for c in telegram.calls if c.status == 429]
    assert rejected == [], [c.method for c in rejected]
    logs = "\n".join(bot.stderr for bot in every)
    assert "Conflict" not in logs, "two processes long-polled at once"
    assert "Traceback" not in logs
    assert logs.count("polls for commands") >= 1
