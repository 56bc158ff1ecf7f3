"""Several bot processes on one PostgreSQL database (issue 20), through real
`python -m bot run` processes against the Discord and Telegram fakes.

The full-size run: three processes, Discord in three shards, 300 events posted round-robin
(as a load balancer spreads webhooks) while processes are killed with SIGKILL and started
again at random, ten times. Every accepted event reaches its Discord channel exactly once
(the enforced nonce makes a resend after a kill a no-op) and its Telegram chat at least
once and at most once more per kill (the documented edge: Telegram has no idempotency
key); each shard ends up run by exactly one process, and a command in each server is
answered once; one process at a time long-polls Telegram; nobody gets a 429 from either
platform's global limit.

And Telegram by webhook across processes: Telegram posts each update to whichever
process its proxy picks, a dead one's updates go to the others, and processes starting
together all come up although Telegram takes one setWebhook a second."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.events import Event, LiveInfo
from bot.store.postgres import PostgresStore
from tests.conftest import SECRET
from tests.fakes.discord_api import TOKEN as DISCORD_TOKEN
from tests.fakes.discord_api import FakeDiscord, guild_channel_id, sharded_guilds
from tests.fakes.telegram_api import FakeTelegram
from tests.test_cli import BotProcess, start_bot

PROCESSES = 3
SHARDS = 3
EVENTS = 300
KILLS = 10
#: Twelve servers, four on each shard; one Discord channel and one Telegram chat a group.
GROUPS = 12
CHATS = [7001, 7002, 7003, 7004]
#: How long a dead process's outbox claims stay its own (the default is 60 s).
LEASE = "10s"


def write_config(
    tmp_path: Path,
    url: str,
    telegram: FakeTelegram | None,
    discord: FakeDiscord | None = None,
    guilds: list[dict[str, Any]] | None = None,
    *,
    telegram_extra: str = "",
    server_extra: str = "",
) -> Path:
    """bot.toml for every process: the shared database, the platforms given, and one
    route a group (`twitch/gNN*`) to that group's Discord channel and Telegram chat."""
    discord_section = ""
    if discord is not None:
        discord_section = f"""
[discord]
token = "{DISCORD_TOKEN}"
api_url = "{discord.api_url}"
gateway_url = "{discord.gateway_url}"
shard_count = {SHARDS}
"""
    telegram_section = ""
    if telegram is not None:
        telegram_section = f"""
[telegram]
token = "{telegram.token}"
api_url = "{telegram.api_url}"
{telegram_extra}
"""
    routes = []
    for group in range(GROUPS):
        channel = chat = ""
        if guilds is not None:
            channel = f'discord_channels = ["{guild_channel_id(guilds[group], "streams")}"]'
        if telegram is not None:
            chat = f'telegram_chats = ["{CHATS[group % len(CHATS)]}"]'
        routes.append(f'[[routes]]\nmatch = "twitch/g{group:02d}*"\n{chat}\n{channel}\n')
    config = tmp_path / "bot.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = 0
{server_extra}

[storage]
url = "{url}"
lease = "{LEASE}"

[console]
enabled = false

{telegram_section}
{discord_section}
[behaviour]
end_grace = "0s"

[[sources]]
name = "rec"
kind = "onliverec"
secret = "{SECRET}"

"""
        + "\n".join(routes)
    )
    return config


async def started(config: Path) -> BotProcess:
    bot = BotProcess(await start_bot(config))
    found = await bot.wait_for("stderr", r"listening on (http://127\.0\.0\.1:\d+)", timeout=30)
    bot.url = found.group(1)
    return bot


def live_start(n: int) -> dict[str, Any]:
    channel = f"g{n % GROUPS:02d}streamer{n:03d}"
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


STREAMER = re.compile(r"Streamer\d{3}")


def on_telegram(telegram: FakeTelegram) -> Counter[tuple[str, int]]:
    """(streamer, chat) -> how many cards the chat got for that streamer."""
    seen: Counter[tuple[str, int]] = Counter()
    for chat in CHATS:
        for message in telegram.messages.get(str(chat), []):
            found = STREAMER.search(str(message.get("text") or message.get("caption")))
            if found and message.get("from", {}).get("is_bot", True):
                seen[found.group(0), chat] += 1
    return seen


def on_discord(discord: FakeDiscord, channels: Iterable[int]) -> Counter[tuple[str, int]]:
    """(streamer, channel) -> how many messages the channel holds for that streamer."""
    seen: Counter[tuple[str, int]] = Counter()
    for channel in channels:
        for message in discord.messages.get(channel, []):
            found = STREAMER.search(json.dumps(message.get("embeds")) + str(message["content"]))
            if found:
                seen[found.group(0), channel] += 1
    return seen


@contextlib.asynccontextmanager
async def fleet(
    config: Path, count: int
) -> AsyncIterator[tuple[list[BotProcess], list[BotProcess]]]:
    """`count` bot processes on `config`, each having counted the others; yields the
    live list (a test replaces killed ones in it) and every process ever started."""
    bots = [await started(config) for _ in range(count)]
    every: list[BotProcess] = list(bots)
    try:
        for bot in bots:
            await bot.wait_for("stderr", f"{count} bot processes share the database")
        yield bots, every
    finally:
        for bot in bots:
            if bot.proc.returncode is None:
                bot.proc.kill()
                await bot.proc.wait()
        for bot in every:
            await asyncio.gather(*bot._readers, return_exceptions=True)


async def kill_and_restart(
    bots: list[BotProcess], every: list[BotProcess], victim: int, config: Path
) -> None:
    bots[victim].proc.kill()  # SIGKILL: no goodbye, claims and shards left behind
    await bots[victim].proc.wait()
    bots[victim] = await started(config)
    every.append(bots[victim])


async def until_delivered(
    wanted: set[tuple[str, int]],
    seen: Callable[[], Counter[tuple[str, int]]],
    every: list[BotProcess],
    timeout: float,
) -> None:
    """Wait until `seen()` covers `wanted`; on timeout fail naming what is missing."""
    try:
        async with asyncio.timeout(timeout):
            while not wanted <= set(seen()):
                await asyncio.sleep(0.25)
    except TimeoutError:
        missing = sorted(wanted - set(seen()))
        tails = "\n---\n".join(bot.stderr[-4000:] for bot in every)
        pytest.fail(f"never delivered ({len(missing)}): {missing[:20]}\n{tails}")


async def until_each_shard_runs_once(discord: FakeDiscord, every: list[BotProcess]) -> None:
    """Wait until every shard has exactly one session; on timeout fail with the logs."""
    try:
        await discord.wait_for_shards([(s, SHARDS) for s in range(SHARDS)], timeout=60)
    except TimeoutError as exc:
        tails = "\n---\n".join(
            "\n".join(line for line in bot.stderr.splitlines() if "discord" in line)[-3000:]
            for bot in every
        )
        pytest.fail(f"{exc}\n{tails}")


async def scrape_identities(bots: list[BotProcess]) -> set[str]:
    """Each process's /metrics: scraped on its own, it says which process it is and how
    many share the database."""
    identities = set()
    async with aiohttp.ClientSession() as session:
        for bot in bots:
            async with session.get(f"{bot.url}/metrics") as response:
                scraped = await response.text()
            assert f"streambot_processes {len(bots)}.0" in scraped
            found = re.search(r'streambot_process_info\{process="([^"]+)"\} 1\.0', scraped)
            assert found is not None, scraped[:2000]
            identities.add(found.group(1))
    return identities


async def test_three_processes_share_300_events_through_ten_kills(
    tmp_path: Path, postgres_url: str
) -> None:
    guilds = sharded_guilds(GROUPS, SHARDS)
    channels = [guild_channel_id(guild, "streams") for guild in guilds]
    async with (
        FakeTelegram(send_limit=(30, 1.0)) as telegram,
        FakeDiscord(
            guilds=guilds,
            token=DISCORD_TOKEN,
            global_rate_limit=(50, 1.0),
            message_rate_limit=(5, 5.0),
            # Discord's one IDENTIFY per 5 s for the token, across the three processes.
            identify_spacing=5.0,
        ) as discord,
    ):
        for chat in CHATS:
            telegram.add_chat(chat, "private", first_name=f"User{chat}")
        config = write_config(tmp_path, postgres_url, telegram, discord, guilds)
        async with fleet(config, PROCESSES) as (bots, every):
            assert len(await scrape_identities(bots)) == PROCESSES
            await until_each_shard_runs_once(discord, every)
            accepted: list[int] = []
            chance = random.Random(20)
            kill_at = set(chance.sample(range(10, EVENTS - 10), KILLS))
            async with aiohttp.ClientSession() as session:
                for n in range(EVENTS):
                    if n in kill_at:
                        await kill_and_restart(bots, every, chance.randrange(PROCESSES), config)
                    if await post_somewhere(session, bots, live_start(n), first=n):
                        accepted.append(n)
                    await asyncio.sleep(0.02)
            discord_wanted = {(f"Streamer{n:03d}", channels[n % GROUPS]) for n in accepted}
            telegram_wanted = {
                (f"Streamer{n:03d}", CHATS[n % GROUPS % len(CHATS)]) for n in accepted
            }
            # Claims of killed processes move on once their 10 s lease runs out.
            await until_delivered(
                telegram_wanted, lambda: on_telegram(telegram), every, timeout=120
            )
            await until_delivered(
                discord_wanted, lambda: on_discord(discord, channels), every, timeout=120
            )
            # The killed processes' shards have moved on: each is run once, and each
            # server's command is answered (a second session answering would get 40060).
            await until_each_shard_runs_once(discord, every)
            for guild in guilds[:SHARDS]:
                answered = await discord.invoke_command(
                    "help",
                    channel_id=guild_channel_id(guild, "general"),
                    guild_id=int(guild["id"]),
                    timeout=10,
                )
                assert answered.response_type in (4, 5)
            # One poller at a time: a command is answered once, by whichever polls.
            telegram.push_message(CHATS[0], "/help", from_user_id=CHATS[0])
            await telegram.wait_for_message(
                CHATS[0], lambda m: "/status" in str(m.get("text")), timeout=20
            )
            await asyncio.sleep(1.0)
            tg_seen, discord_seen = on_telegram(telegram), on_discord(discord, channels)

    assert len(accepted) == EVENTS  # some process always took the webhook
    assert sorted(discord_seen.values()) == [1] * len(discord_wanted), [
        key for key, count in discord_seen.items() if count != 1
    ]
    repeats = sum(count - 1 for count in tg_seen.values())
    # A kill can cut off at most one send per chat after Telegram took it.
    assert repeats <= KILLS * len(CHATS), tg_seen
    helps = [
        m for m in telegram.messages.get(str(CHATS[0]), []) if "/status" in str(m.get("text"))
    ]
    assert len(helps) == 1, helps
    assert [c.method for c in telegram.calls if c.status == 429] == []
    global_429s = [r.path for r in discord.requests if r.status == 429]
    assert global_429s == [], global_429s
    logs = "\n".join(bot.stderr for bot in every)
    assert "Conflict" not in logs, "two processes long-polled at once"
    assert "Traceback" not in logs, logs[logs.index("Traceback") - 600 :][:4000]
    assert "40060" not in logs, "two sessions ran one shard"
    refused = [(shard, at) for at, shard, accepted in discord.identifies if not accepted]
    turns = [line for line in logs.splitlines() if "identify" in line]
    assert refused == [], (
        f"IDENTIFYs within 5 s of another process's: {refused}; all: {discord.identifies};"
        f" the processes said: {turns}"
    )
    assert logs.count("polls for commands") >= 1


PUBLIC = "https://bot.example"


async def queue_backlog(
    store: PostgresStore, channels: list[int], *, per_channel: int
) -> set[tuple[str, int]]:
    """`per_channel` live_start events for each group, stored as a webhook would (not yet
    dispatched), so that the first process to start has them all to send at once; the
    (streamer, channel) pairs they make."""
    at = datetime.now(UTC)
    wanted: set[tuple[str, int]] = set()
    batch: list[tuple[Event, bytes | None]] = []
    for n in range(per_channel * GROUPS):
        channel = f"g{n % GROUPS:02d}streamer{n:03d}"
        batch.append(
            (
                Event(
                    source="rec",
                    event_id=f"mp-{n}",
                    kind="live_start",
                    occurred_at=at,
                    received_at=at,
                    platform="twitch",
                    channel=channel,
                    display_name=f"Streamer{n:03d}",
                    url=f"https://twitch.tv/{channel}",
                    live=LiveInfo(title=f"Stream {n}"),
                ),
                None,
            )
        )
        wanted.add((f"Streamer{n:03d}", channels[n % GROUPS]))
    await store.insert_new_events(batch)
    return wanted


async def test_a_process_joining_a_busy_token_sends_at_its_share_from_the_start(
    tmp_path: Path, postgres_url: str
) -> None:
    """A process starts with a backlog to send while another process of the same bot is
    alive (a heartbeat row, kept fresh here): Discord counts the token's requests
    together, so the newcomer may use half of the 50 a second from its very first
    request. The fake's global limit is that half, as if the other process were sending
    its own; a newcomer sending at the whole token's rate until its first heartbeat
    gets 429s."""
    guilds = sharded_guilds(GROUPS, SHARDS)
    channels = [guild_channel_id(guild, "streams") for guild in guilds]
    # The other process: what its store does every second, nothing more.
    store = PostgresStore(postgres_url, owner="other-host:4242:feedbeef", lease=10)
    await store.open()
    wanted = await queue_backlog(store, channels, per_channel=5)  # 60 cards, due at once

    async def other_process_lives(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await store.heartbeat(now=time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.3)

    stop = asyncio.Event()
    alive = asyncio.create_task(other_process_lives(stop))
    try:
        async with (
            FakeTelegram() as telegram,
            FakeDiscord(
                guilds=guilds, token=DISCORD_TOKEN, global_rate_limit=(25, 1.0)
            ) as discord,
        ):
            for chat in CHATS:
                telegram.add_chat(chat, "private", first_name=f"User{chat}")
            config = write_config(tmp_path, postgres_url, telegram, discord, guilds)
            bot = await started(config)
            try:
                await until_delivered(
                    wanted, lambda: on_discord(discord, channels), [bot], timeout=60
                )
            finally:
                bot.proc.kill()
                await bot.proc.wait()
                await asyncio.gather(*bot._readers, return_exceptions=True)
        assert "2 bot processes share the database" in bot.stderr
        global_429s = [r.path for r in discord.requests if r.status == 429]
        assert global_429s == [], global_429s
    finally:
        stop.set()
        await alive
        await store.close()


async def test_a_process_joining_one_at_the_whole_limit_waits_until_room_is_made(
    tmp_path: Path, postgres_url: str
) -> None:
    """A sends a backlog alone, at Discord's whole 50 requests a second; B starts
    meanwhile, and just then the database holds A's heartbeat back for 2.5 s (another
    transaction locks the processes' table). B makes no request to Discord, not even its
    login, until A has counted it and what A sent at the whole rate has left Discord's
    one-second window; then both send at half. The token never goes over 50 a second:
    not one 429. B's requests at once, or a fixed time after its own first heartbeat
    (without waiting to be counted), are over the limit."""
    guilds = sharded_guilds(GROUPS, SHARDS)
    channels = [guild_channel_id(guild, "streams") for guild in guilds]
    seed = PostgresStore(postgres_url, owner="the test", lease=10)
    await seed.open()
    try:
        # Forty cards a channel: some ten seconds of sending at the whole limit.
        wanted = await queue_backlog(seed, channels, per_channel=40)
    finally:
        await seed.close()
    watcher = await asyncpg.connect(postgres_url)
    async with FakeDiscord(
        guilds=guilds, token=DISCORD_TOKEN, global_rate_limit=(50, 1.0)
    ) as discord:
        config = write_config(tmp_path, postgres_url, None, discord, guilds)
        a = await started(config)
        b: BotProcess | None = None
        try:
            async with asyncio.timeout(30):
                while len(posted_messages(discord)) < 100:  # A is well under way
                    await asyncio.sleep(0.05)
            b = await started(config)
            async with asyncio.timeout(15):  # B's first heartbeat is in
                while await watcher.fetchval("SELECT count(*) FROM processes") < 2:
                    await asyncio.sleep(0.02)
            async with watcher.transaction():
                await watcher.execute("LOCK TABLE processes IN EXCLUSIVE MODE")
                await asyncio.sleep(2.5)
            await b.wait_for("stderr", "2 bot processes share the database")
            await until_delivered(
                wanted, lambda: on_discord(discord, channels), [a, b], timeout=90
            )
        finally:
            await watcher.close()
            for bot in (a, b):
                if bot is not None:
                    bot.proc.kill()
                    await bot.proc.wait()
                    await asyncio.gather(*bot._readers, return_exceptions=True)
    # The second login is B's (the later ones are both clients' again as the shards are
    # shared out). B joined while A was busy: much of the backlog was sent after it.
    logins = [n for n, r in enumerate(discord.requests) if r.path == "/users/@me"]
    sent_after_b = [r for r in discord.requests[logins[1] :] if r.method == "POST"]
    assert len(sent_after_b) > 50, len(sent_after_b)
    global_429s = [r.path for r in discord.requests if r.status == 429]
    assert global_429s == [], global_429s
    assert b is not None and "joining 1 more bot process(es) on the database" in b.stderr


def posted_messages(discord: FakeDiscord) -> list[object]:
    return [r for r in discord.requests if r.method == "POST" and r.path.endswith("/messages")]


async def test_telegram_by_webhook_reaches_whichever_process_is_alive(
    tmp_path: Path, postgres_url: str
) -> None:
    async with FakeTelegram() as telegram:
        for chat in CHATS:
            telegram.add_chat(chat, "private", first_name=f"User{chat}")
        config = write_config(
            tmp_path,
            postgres_url,
            telegram,
            telegram_extra='updates = "webhook"',
            server_extra=f'public_url = "{PUBLIC}"',
        )
        # Three processes start together: Telegram takes one setWebhook a second.
        async with fleet(config, PROCESSES) as (bots, every):
            backends = telegram.route_webhooks(PUBLIC, [bot.url for bot in bots])
            for bot in bots:
                await bot.wait_for("stderr", "taking commands Telegram posts to", timeout=20)
            for chat in CHATS:
                await answered_once(telegram, chat)
            # Each process took some of them: the proxy spreads the posts.
            took = Counter(post.url.split("/telegram/")[0] for post in telegram.webhook_posts)
            assert set(took) == set(backends), took
            # One dies; the proxy still lists it (as a real one would until its health
            # check notices), and Telegram resends what it could not post to the others.
            dead = bots[0]
            dead.proc.kill()
            await dead.proc.wait()
            for chat in CHATS:
                await answered_once(telegram, chat)
            refused = [p for p in telegram.webhook_posts if p.url.startswith(dead.url)][-1:]
            logs = "\n".join(bot.stderr for bot in every)

    assert telegram.calls and not [c for c in telegram.calls if c.method == "getUpdates"]
    assert refused and refused[0].error == "Connection refused"
    assert "Traceback" not in logs
    assert "could not set the webhook" not in logs


async def answered_once(telegram: FakeTelegram, chat: int) -> None:
    """A user's /help gets exactly one answer, from whichever process Telegram posted to."""
    sent = telegram.push_message(chat, "/help", from_user_id=chat)
    await telegram.wait_for_message(
        chat, lambda m: m["message_id"] > sent and "/status" in str(m.get("text")), timeout=20
    )
    await asyncio.sleep(0.5)
    answers = [
        m
        for m in telegram.messages[str(chat)]
        if m["message_id"] > sent and "/status" in str(m.get("text"))
    ]
    assert len(answers) == 1, answers
