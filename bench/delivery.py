"""The bot with both platform clients, against the fakes: footprint, latency and fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import pgstore
from bench.common import (
    Proc,
    bare_argv,
    bot_fleet,
    live_start,
    percentile,
    server_process,
    toml_config,
    wait_ready,
    webhook_url,
)
from bench.fakes import (
    BenchDiscord,
    BenchTelegram,
    bench_channel_id,
    bench_chat_id,
    guild_with_channels,
)
from tests.fakes.discord_api import TOKEN as DISCORD_TOKEN

_markers = itertools.count(1)


@dataclass
class Fakes:
    """Both fakes and how many channels/chats they hold."""

    discord: BenchDiscord
    telegram: BenchTelegram
    targets: int


@contextlib.asynccontextmanager
async def fakes(targets: int, *, limits: bool) -> AsyncIterator[Fakes]:
    """Fake Discord (a guild with `targets` extra channels) and fake Telegram (`targets`
    supergroups); with `limits`, both enforce the platforms' documented send limits."""
    # PTB warns when building RetryAfter unless this opt-in is set (tests/conftest.py).
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    discord = BenchDiscord(
        guilds=[guild_with_channels(targets)],
        token=DISCORD_TOKEN,
        heartbeat_interval=30_000,
        global_limit=50 if limits else None,
        message_rate_limit=(5, 5.0) if limits else None,
    )
    telegram = BenchTelegram(limits=limits)
    for k in range(targets):
        telegram.add_chat(bench_chat_id(k), "supergroup", title=f"bench {k}")
    async with discord, telegram:
        yield Fakes(discord=discord, telegram=telegram, targets=targets)


def routes_one_per_target(count: int) -> list[dict[str, Any]]:
    """Route `twitch/cK-*` to Discord channel K and Telegram chat K."""
    return [
        {
            "match": f"twitch/c{k}-*",
            "discord_channels": [str(bench_channel_id(k))],
            "telegram_chats": [str(bench_chat_id(k))],
        }
        for k in range(count)
    ]


def routes_fan_out(count: int) -> list[dict[str, Any]]:
    """Route `twitch/fan*` to all `count` channels and chats."""
    return [
        {
            "match": "twitch/fan*",
            "discord_channels": [str(bench_channel_id(k)) for k in range(count)],
            "telegram_chats": [str(bench_chat_id(k)) for k in range(count)],
        }
    ]


@contextlib.asynccontextmanager
async def bots_with_fakes(
    workdir: Path,
    name: str,
    fx: Fakes,
    routes: list[dict[str, Any]],
    *,
    store_url: str | None = None,
    processes: int = 1,
) -> AsyncIterator[list[Proc]]:
    """`processes` real `python -m bot run` on one config (several need `store_url`, a
    PostgreSQL database), both sinks pointed at the fakes, all healthy on yield.

    `extra["ready_after"]`: seconds from process start until /healthz says every sink runs.
    """
    db = workdir / f"{name}.sqlite3"
    config = workdir / f"{name}.toml"
    config.write_text(
        toml_config(
            db,
            routes=routes,
            discord={
                "token": DISCORD_TOKEN,
                "api_url": fx.discord.api_url,
                "gateway_url": fx.discord.gateway_url,
            },
            telegram={"token": fx.telegram.token, "api_url": fx.telegram.api_url},
            store_url=store_url,
        )
    )
    async with bot_fleet(config, workdir, name, processes) as bots:
        for bot in bots:
            await wait_ready(bot)
            bot.extra["ready_after"] = time.perf_counter() - bot.started
        yield bots


async def footprint(workdir: Path, *, idle: float) -> dict[str, float]:
    """Start-to-ready time and idle RSS of the bot with both clients connected, versus the
    bare aiohttp process (start to listening, RSS)."""
    async with server_process(bare_argv(), workdir, "bare-footprint") as bare:
        await asyncio.sleep(idle)
        bare_rss, bare_start = bare.rss_mb(), bare.listening_after
    async with (
        fakes(4, limits=False) as fx,
        bots_with_fakes(workdir, "bot-footprint", fx, routes_one_per_target(4)) as (bot,),
    ):
        await asyncio.sleep(idle)
        return {
            "bare_rss_mb": bare_rss,
            "bot_rss_mb": bot.rss_mb(),
            "bare_start_s": bare_start,
            "bot_listening_s": bot.listening_after,
            "bot_ready_s": bot.extra["ready_after"],
        }


async def latency(
    workdir: Path,
    *,
    seconds: float,
    rate: float = 10.0,
    targets: int = 60,
    store_url: str | None = None,
) -> dict[str, Any]:
    """Webhook POST -> message at each fake, at a steady `rate` over `targets` channels and
    chats (each gets one message per targets/rate seconds: under every platform limit).

    Baseline: POST -> 202 round trips to the bare process, same rate, same client."""
    count = int(seconds * rate)
    async with server_process(bare_argv(), workdir, "bare-latency") as bare:
        bare_rtt = await _steady(bare.url, count, rate, targets, {})
    async with (
        fakes(targets, limits=True) as fx,
        bots_with_fakes(
            workdir, "bot-latency", fx, routes_one_per_target(targets), store_url=store_url
        ) as (bot,),
    ):
        # The first message after start is cold (templates compiled, connections opened):
        # reported on its own, kept out of the steady-state percentiles.
        cold_at: dict[int, float] = {}
        await _steady(bot.url, 1, rate, targets, cold_at)
        await _arrived(fx, cold_at)
        sent_at: dict[int, float] = {}
        # Starting after the cold event's target keeps every chat at one message per
        # targets/rate seconds (a second message to it within 1 s would be a 429).
        bot_rtt = await _steady(bot.url, count, rate, targets, sent_at, first=1)
        await _arrived(fx, sent_at)
        result: dict[str, Any] = {
            "events": count,
            "bare_rtt": _stats(bare_rtt),
            "webhook_rtt": _stats(bot_rtt),
        }
        for name, fake in (("discord", fx.discord), ("telegram", fx.telegram)):
            result[name] = _stats(
                [(fake.arrivals[m] - t) for m, t in sent_at.items() if m in fake.arrivals]
            )
            result[name]["cold_ms"] = 1000 * sum(fake.arrivals[m] - t for m, t in cold_at.items())
            result[name]["429s"] = fake.rejected
    return result


async def _arrived(fx: Fakes, sent_at: dict[int, float], within: float = 15.0) -> None:
    """Wait (bounded) until both fakes got every message in `sent_at`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            for fake in (fx.discord, fx.telegram):
                await fake.wait_until(lambda f: sent_at.keys() <= f.arrivals.keys())


def _stats(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else float("nan"),
    }


async def _steady(
    base: str, count: int, rate: float, targets: int, sent_at: dict[int, float], *, first: int = 0
) -> list[float]:
    """POST `count` live_starts at `rate`/s, open loop (each on its own schedule); event i
    goes to target (first + i) % targets."""
    rtts: list[float] = []
    url = webhook_url(base)
    headers = {"Content-Type": "application/json"}

    async def one(session: aiohttp.ClientSession, i: int, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        marker = next(_markers)
        target = (first + i) % targets
        body = live_start(f"lat-{marker}", f"c{target}-{marker}", f"bench-{marker}")
        start = time.perf_counter()
        sent_at[marker] = start
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            if response.status != 202:
                raise RuntimeError(f"webhook answered {response.status}")
        rtts.append(time.perf_counter() - start)

    async with aiohttp.ClientSession() as session:
        # One warm-up request opens the keep-alive connection (not measured).
        async with session.get(f"{base}/healthz") as response:
            await response.read()
        t0 = time.perf_counter() + 0.1
        async with asyncio.timeout(count / rate + 30):
            await asyncio.gather(*(one(session, i, t0 + i / rate) for i in range(count)))
    return rtts


def fixed_window_bound(messages: int, limit: int, window: float) -> float:
    """Least time from first to last send that `limit` per `window` allows."""
    return (-(-messages // limit) - 1) * window


async def fan_out(
    workdir: Path,
    *,
    targets: int = 200,
    wait: float = 60.0,
    settle: float = 1.5,
    store_url: str | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """One live_start routed to `targets` Discord channels and `targets` Telegram chats,
    against fakes enforcing the platforms' limits (Discord 50 requests/s global and 5 per
    5 s per channel; Telegram 30/s overall, 1/s per chat, 20/min per group), sent by
    `processes` bots on one database (several need `store_url`), which share the limits.

    Time is from the webhook POST to the last message; the bound is what the binding
    limit allows (Discord: the global 50/s; Telegram: the overall 30/s). The event is
    sent `settle` seconds after the bots are ready: their start-up requests to Discord
    (login, command sync) count towards the same global limit, and the bound assumes the
    fan-out's messages have the windows to themselves."""
    name = "bot-fanout" if processes == 1 else f"bot-fanout-x{processes}"
    async with (
        fakes(targets, limits=True) as fx,
        bots_with_fakes(
            workdir, name, fx, routes_fan_out(targets), store_url=store_url, processes=processes
        ) as bots,
    ):
        bot = bots[0]
        await asyncio.sleep(settle)
        before = {"discord": fx.discord.rejected, "telegram": fx.telegram.rejected}
        marker = next(_markers)
        body = live_start(f"fan-{marker}", f"fan{marker}", f"bench-{marker}")
        async with aiohttp.ClientSession() as session:
            start = time.perf_counter()
            async with session.post(
                webhook_url(bot.url), data=body, headers={"Content-Type": "application/json"}
            ) as response:
                if response.status != 202:
                    raise RuntimeError(f"webhook answered {response.status}")
        fakes_ = {"discord": fx.discord, "telegram": fx.telegram}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                for fake in fakes_.values():
                    await fake.wait_until(lambda f: len(f.targets) >= targets)
        result: dict[str, Any] = {"targets": targets, "settle": settle, "processes": processes}
        if store_url:
            # Whether the processes shared the fan-out (the caller drops the database).
            result["sent_by_process"] = await pgstore.sends_by_process(store_url)
        bounds = {
            "discord": fixed_window_bound(targets, 50, 1.0),
            "telegram": fixed_window_bound(targets, 30, 1.0),
        }
        for name, fake in fakes_.items():
            delivered = len(fake.targets)
            done = (fake.last - start) if fake.last is not None and delivered else float("nan")
            first = (fake.first - start) if fake.first is not None else float("nan")
            result[name] = {
                "delivered": delivered,
                "lost": targets - delivered,
                "duplicates": fake.sent - delivered,
                "seconds": done if delivered == targets else float("nan"),
                "first_s": first,
                "bound": bounds[name],
                "429s": fake.rejected - before[name],
                "timed_out": delivered < targets,
            }
    return result
