"""Ingest: webhook events per second the real bot durably accepts and dispatches, versus two
baselines in the same run: a bare handler (`bench/bare.py`) and a minimal durable one
(`bench/durable.py`).

The bot's run ends when every accepted event has also been dispatched: after the load
stops, `/metrics` is polled until `streambot_dispatch_backlog` reads 0, and that drain time
counts against the bot's rate (a backlog is not speed). Where the bot has no such gauge
(dispatch inline, before the 202) the backlog counts as 0.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.common import (
    Proc,
    bare_argv,
    bot_argv,
    durable_argv,
    live_start,
    server_process,
    toml_config,
    webhook_url,
)

# Hard cap on requests per run, whatever the duration: every load loop is bounded.
MAX_REQUESTS = 500_000
BACKLOG_GAUGE = "streambot_dispatch_backlog"
# How long the bot may take to dispatch what it accepted before the run counts as failed.
DRAIN_TIMEOUT = 120.0
# Each scrape costs the bot some loop time, so polling faster would slow the drain it times.
DRAIN_POLL = 0.05


@dataclass
class Load:
    """What one load run achieved."""

    accepted: int
    other: int
    seconds: float
    # perf_counter() at the end of the counted window.
    ended: float

    @property
    def rate(self) -> float:
        """Accepted (2xx) answers per second."""
        return self.accepted / self.seconds if self.seconds else 0.0


async def generate(
    url: str, *, connections: int, seconds: float, warmup: float, prefix: str
) -> Load:
    """`connections` keep-alive clients POSTing distinct live_start events back to back.

    Answers during `warmup` are not counted; the run ends after `seconds` more or
    MAX_REQUESTS, whichever comes first.
    """
    ids = itertools.count()
    counted = {"ok": 0, "other": 0}
    begin = time.perf_counter()
    measure_from = begin + warmup
    deadline = measure_from + seconds
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    headers = {"Content-Type": "application/json"}

    async def client() -> None:
        while (now := time.perf_counter()) < deadline:
            n = next(ids)
            if n >= MAX_REQUESTS:
                return
            # A different streamer every time: a fresh live session, the common case.
            body = live_start(f"{prefix}-{n}", f"s{n}", "ingest", platform="youtube")
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                done = time.perf_counter()
            if now >= measure_from and done <= deadline:
                counted["ok" if 200 <= response.status < 300 else "other"] += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        async with asyncio.timeout(warmup + seconds + 30):
            await asyncio.gather(*(client() for _ in range(connections)))
    return Load(accepted=counted["ok"], other=counted["other"], seconds=seconds, ended=deadline)


def backlog_from(text: str) -> float | None:
    """The dispatch backlog in a Prometheus text exposition; None when the gauge is absent."""
    # Summed over every family of that name: without a TYPE line the parser may split one.
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == BACKLOG_GAUGE
        for sample in family.samples
    ]
    return sum(values) if values else None


async def drain(base_url: str, since: float, *, within: float = DRAIN_TIMEOUT) -> float | None:
    """Seconds from `since` until the bot's backlog read 0; None if it did not within `within`.

    The time is taken when the scrape that read 0 was sent. An absent gauge reads as 0.
    """
    async with aiohttp.ClientSession() as session:
        try:
            async with asyncio.timeout(within):
                while True:
                    sent = time.perf_counter()
                    async with session.get(f"{base_url}/metrics") as response:
                        text = await response.text()
                        if response.status != 200:
                            raise RuntimeError(
                                f"GET /metrics answered {response.status}: {text[:200]}"
                            )
                    if not backlog_from(text):
                        return max(0.0, sent - since)
                    await asyncio.sleep(DRAIN_POLL)
        except TimeoutError:
            return None


def stored_events(db: Path) -> int:
    """Events committed to a database (the bot's or the durable baseline's), read after it
    stopped."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


async def run(workdir: Path, *, seconds: float, connections: int, rounds: int) -> dict[str, Any]:
    """Alternate bare, durable and bot runs `rounds` times; the best rate of each, the ratios."""
    db = workdir / "ingest.sqlite3"
    durable_db = workdir / "durable.sqlite3"
    config = workdir / "ingest.toml"
    # Console off and no route matches youtube/*: the bot stores, dispatches to nothing.
    config.write_text(toml_config(db, routes=[{"match": "nomatch/*"}]))
    bare_rates: list[float] = []
    durable_rates: list[float] = []
    bot_rates: list[float] = []
    bot_load_rates: list[float] = []
    drains: list[float] = []
    durable_accepted = 0
    bot_accepted = 0
    drain_timeouts = 0
    errors = 0

    # Share of one core each server used under load: near 1.0 it is the limit; well below,
    # the load generator (on the same 2 cores) is.
    cpu: dict[str, list[float]] = {"bare": [], "durable": [], "bot": []}

    async def load(server: Proc, prefix: str, name: str) -> Load:
        cpu_before, began = server.cpu_seconds(), time.perf_counter()
        result = await generate(
            webhook_url(server.url),
            connections=connections,
            seconds=seconds,
            warmup=1.0,
            prefix=prefix,
        )
        cpu[name].append((server.cpu_seconds() - cpu_before) / (time.perf_counter() - began))
        return result

    for r in range(rounds):
        async with server_process(bare_argv(), workdir, "bare") as bare:
            result = await load(bare, f"b{r}", "bare")
            bare_rates.append(result.rate)
            errors += result.other
        async with server_process(durable_argv(durable_db), workdir, "durable") as durable:
            result = await load(durable, f"d{r}", "durable")
            durable_rates.append(result.rate)
            durable_accepted += result.accepted
            errors += result.other
        async with server_process(bot_argv(config), workdir, "bot-ingest") as bot:
            result = await load(bot, f"i{r}", "bot")
            drained = await drain(bot.url, result.ended)
            bot_accepted += result.accepted
            errors += result.other
            bot_load_rates.append(result.rate)
            if drained is None:
                drain_timeouts += 1
            else:
                drains.append(drained)
                bot_rates.append(result.accepted / (result.seconds + drained))
    bot_best = max(bot_rates, default=float("nan"))
    best = bot_rates.index(bot_best) if bot_rates else None
    return {
        "bare_rps": max(bare_rates),
        "durable_rps": max(durable_rates),
        # Accepted events / (load seconds + drain seconds), best round.
        "bot_rps": bot_best,
        "ratio_bare": bot_best / max(bare_rates),
        "ratio_durable": bot_best / max(durable_rates),
        "durable_vs_bare": max(durable_rates) / max(bare_rates),
        "drain_s": float("nan") if best is None else drains[best],
        "drain_timeout_s": DRAIN_TIMEOUT,
        "drain_timeouts": drain_timeouts,
        "bare_all": bare_rates,
        "durable_all": durable_rates,
        "bot_all": bot_rates,
        # Accepted events / load seconds, without the drain: what the 202s alone suggest.
        "bot_load_all": bot_load_rates,
        "drain_all": drains,
        "cpu_bare_all": cpu["bare"],
        "cpu_durable_all": cpu["durable"],
        "cpu_bot_all": cpu["bot"],
        "non_2xx": errors,
        # Durability check: every counted 202 must be a row (warm-up rows come on top).
        "stored_ge_accepted": float(stored_events(db) >= bot_accepted),
        "durable_stored_ge_accepted": float(stored_events(durable_db) >= durable_accepted),
        "stored": stored_events(db),
    }
