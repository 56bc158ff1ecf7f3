"""Ingest: webhook events per second the real bot durably accepts, versus a bare handler."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.common import (
    bare_argv,
    bot_argv,
    live_start,
    server_process,
    toml_config,
    webhook_url,
)

# Hard cap on requests per run, whatever the duration: every load loop is bounded.
MAX_REQUESTS = 500_000


@dataclass
class Load:
    """What one load run achieved."""

    accepted: int
    other: int
    seconds: float

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
    return Load(accepted=counted["ok"], other=counted["other"], seconds=seconds)


def stored_events(db: Path) -> int:
    """Events committed to the bot's database (read after the bot stopped)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


async def run(workdir: Path, *, seconds: float, connections: int, rounds: int) -> dict[str, float]:
    """Alternate bare and bot runs `rounds` times; report the best rate of each and the ratio."""
    db = workdir / "ingest.sqlite3"
    config = workdir / "ingest.toml"
    # Console off and no route matches youtube/*: the bot stores, dispatches to nothing.
    config.write_text(toml_config(db, routes=[{"match": "nomatch/*"}]))
    bare_rates: list[float] = []
    bot_rates: list[float] = []
    bot_accepted = 0
    errors = 0
    for r in range(rounds):
        async with server_process(bare_argv(), workdir, "bare") as bare:
            load = await generate(
                webhook_url(bare.url),
                connections=connections,
                seconds=seconds,
                warmup=1.0,
                prefix=f"b{r}",
            )
            bare_rates.append(load.rate)
            errors += load.other
        async with server_process(bot_argv(config), workdir, "bot-ingest") as bot:
            load = await generate(
                webhook_url(bot.url),
                connections=connections,
                seconds=seconds,
                warmup=1.0,
                prefix=f"i{r}",
            )
            bot_rates.append(load.rate)
            bot_accepted += load.accepted
            errors += load.other
    stored = stored_events(db)
    return {
        "bare_rps": max(bare_rates),
        "bot_rps": max(bot_rates),
        "ratio": max(bot_rates) / max(bare_rates),
        "bare_all": bare_rates,  # type: ignore[dict-item]
        "bot_all": bot_rates,  # type: ignore[dict-item]
        "non_2xx": errors,
        # Durability check: every counted 202 must be a row (warm-up rows come on top).
        "stored_ge_accepted": float(stored >= bot_accepted),
        "stored": stored,
    }
