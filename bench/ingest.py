"""Ingest: webhook events per second the real bot durably accepts and dispatches, versus two
baselines in the same run: a bare handler (`bench/bare.py`) and a minimal durable one
(`bench/durable.py`).

The bot's run ends when every accepted event has also been dispatched: after the load
stops, `/metrics` is polled until `streambot_dispatch_backlog` reads 0, and that drain time
counts against the bot's rate (a backlog is not speed). Where the bot has no such gauge
(dispatch inline, before the 202) the backlog counts as 0.

With `--store`, `run_postgresql` also measures the bot on PostgreSQL with one process and
with several on one database, the webhooks round-robin over them as a load balancer
spreads them, against the bot on SQLite and what the load generator does against as many
bare servers, all with the same generator in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench import pgstore
from bench.common import (
    CpuMeter,
    Proc,
    bare_argv,
    bot_fleet,
    durable_argv,
    fleet,
    server_process,
    toml_config,
    webhook_url,
)
from bench.loadgen import ClientProcesses, InProcess, Load

BACKLOG_GAUGE = "streambot_dispatch_backlog"
# How long the bot may take to dispatch what it accepted before the run counts as failed.
DRAIN_TIMEOUT = 120.0
# Each scrape costs the bot some loop time, so polling faster would slow the drain it times.
DRAIN_POLL = 0.05
# Console off and no route matches youtube/*: the bot stores, dispatches to nothing.
NO_ROUTE = [{"match": "nomatch/*"}]


class Generator(Protocol):
    """Where the load comes from: the bench process, or client processes."""

    async def run(self, urls: Sequence[str], prefix: str, started: Callable[[], None]) -> Load:
        """One load run over `urls`; `started` is called as the load begins."""
        ...


@dataclass
class Round:
    """One server's (or several's) load run, with what it cost."""

    load: Load
    # Cores used under load: `servers`, `database` (a local PostgreSQL), `machine`.
    cores: dict[str, float]
    # Cores the load generator used.
    client_cores: float
    # PostgreSQL: how many of the bots' connections did what, on average (pgstore.activity).
    activity: dict[str, float] | None = None
    # Bots: seconds to dispatch what was accepted, after the load; None: not within the limit.
    drain: float | None = 0.0
    # Bots: events in the database after the run; each counted 202 must be one.
    stored: int | None = None

    @property
    def rate(self) -> float:
        """Accepted events / (load seconds + drain seconds); NaN when it did not drain."""
        if self.drain is None:
            return float("nan")
        return self.load.accepted / (self.load.seconds + self.drain)

    @property
    def per_server_core(self) -> float:
        """Accepted events per second of the servers' CPU: what one core's worth of them
        takes in, however many processes share the load."""
        busy = self.cores["servers"]
        return self.load.rate / busy if busy else float("nan")


async def measure(
    servers: Sequence[Proc], load: Generator, prefix: str, *, store_url: str | None = None
) -> Round:
    """Load `servers` round-robin, with the cores everything used meanwhile. With
    `store_url` (bots on PostgreSQL), also what their connections did and, when the
    server runs on this machine, the cores it used."""
    postmaster = await pgstore.postmaster_pid(store_url) if store_url else None
    meter = CpuMeter([server.proc.pid for server in servers], parent=postmaster)
    urls = [webhook_url(server.url) for server in servers]
    sampling = pgstore.activity(store_url) if store_url else contextlib.nullcontext(None)
    async with sampling as doing:
        result = await load.run(urls, prefix, meter.start)
        cores = meter.stop()
    return Round(
        load=result,
        cores=cores,
        client_cores=result.client_cpu / cores["wall"],
        activity=doing,
    )


async def bot_round(
    workdir: Path, load: Generator, prefix: str, processes: int, store_url: str | None = None
) -> Round:
    """`processes` bots on `store_url` (else a SQLite file of this round's own) under the
    load, round-robin; then drained (the backlog gauge counts the shared database, so any
    one process answers for all), and the events their database holds counted."""
    db = workdir / f"ingest-{prefix}.sqlite3"
    config = workdir / f"ingest-{prefix}.toml"
    config.write_text(toml_config(db, routes=NO_ROUTE, store_url=store_url))
    async with bot_fleet(config, workdir, f"bot-ingest-{prefix}", processes) as bots:
        measured = await measure(bots, load, prefix, store_url=store_url)
        measured.drain = await drain(bots[0].url, measured.load.ended)
    measured.stored = await pgstore.stored_events(store_url) if store_url else stored_events(db)
    return measured


def summary(name: str, rounds: Sequence[Round]) -> dict[str, Any]:
    """The best rate of `rounds` and every round's figures, keyed by `name`."""
    drained = [r for r in rounds if r.drain is not None]
    best = max(drained, key=lambda r: r.rate, default=None)
    return {
        f"{name}_rps": best.rate if best else float("nan"),
        f"{name}_drain_s": best.drain if best else float("nan"),
        f"{name}_per_core": best.per_server_core if best else float("nan"),
        f"{name}_all": [r.rate for r in drained],
        # Accepted events / load seconds, without the drain: what the 202s alone suggest.
        f"{name}_load_all": [r.load.rate for r in rounds],
        f"{name}_drain_all": [r.drain for r in drained],
        f"cpu_{name}_all": [r.cores["servers"] for r in rounds],
        f"db_{name}_all": [r.cores["database"] for r in rounds],
        f"machine_{name}_all": [r.cores["machine"] for r in rounds],
        f"client_{name}_all": [r.client_cores for r in rounds],
        f"activity_{name}_all": [r.activity for r in rounds if r.activity is not None],
        f"{name}_accepted": sum(r.load.accepted for r in rounds),
    }


def checks(series: dict[str, list[Round]]) -> dict[str, Any]:
    """What fails a run rather than giving figures, over every round of `series`: a bot
    that did not drain, a non-2xx answer, a counted 202 not in the bot's database (each
    bot run's rows counted on their own; warm-up rows come on top)."""
    rounds = [r for measured in series.values() for r in measured]
    return {
        "rounds": len(rounds),
        "drain_timeout_s": DRAIN_TIMEOUT,
        "drain_timeouts": sum(r.drain is None for r in rounds),
        "non_2xx": sum(r.load.other for r in rounds),
        "stored_ge_accepted": all(r.stored is None or r.stored >= r.load.accepted for r in rounds),
    }


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
    durable_db = workdir / "durable.sqlite3"
    load = InProcess(connections=connections, seconds=seconds)
    series: dict[str, list[Round]] = {"bare": [], "durable": [], "bot": []}
    for r in range(rounds):
        async with server_process(bare_argv(), workdir, "bare") as bare:
            series["bare"].append(await measure([bare], load, f"b{r}"))
        async with server_process(durable_argv(durable_db), workdir, "durable") as durable:
            series["durable"].append(await measure([durable], load, f"d{r}"))
        series["bot"].append(await bot_round(workdir, load, f"i{r}", 1))
    out: dict[str, Any] = {}
    for name, measured in series.items():
        out.update(summary(name, measured))
    return {
        **out,
        **checks(series),
        "ratio_bare": out["bot_rps"] / out["bare_rps"],
        "ratio_durable": out["bot_rps"] / out["durable_rps"],
        "durable_vs_bare": out["durable_rps"] / out["bare_rps"],
        # The durable baseline keeps one file over its rounds: all its 202s are rows there.
        "durable_stored_ge_accepted": stored_events(durable_db) >= out["durable_accepted"],
    }


async def run_postgresql(
    workdir: Path,
    store_url: str,
    *,
    seconds: float,
    connections: int,
    rounds: int,
    processes: int = 3,
    clients: int = 2,
) -> dict[str, Any]:
    """The bot on PostgreSQL with one process and with `processes` on one database, the
    webhooks round-robin over them, beside the bot on SQLite, `rounds` times alternating.

    The load comes from `clients` client processes, so one Python client is not the
    limit of several bots; the same client is first measured against `processes` bare
    servers (what it can generate here). Each bot run gets a fresh database."""
    load = ClientProcesses(clients=clients, connections=connections, seconds=seconds)
    series: dict[str, list[Round]] = {"bare": [], "sqlite": [], "pg1": [], "pgN": []}
    for r in range(rounds):
        async with fleet(bare_argv(), workdir, "bare-fleet", processes) as bares:
            series["bare"].append(await measure(bares, load, f"pb{r}"))
        series["sqlite"].append(await bot_round(workdir, load, f"sqlite-{r}", 1))
        for name, count in (("pg1", 1), ("pgN", processes)):
            async with pgstore.fresh_database(store_url) as url:
                series[name].append(await bot_round(workdir, load, f"{name}-{r}", count, url))
    out: dict[str, Any] = {"processes": processes, "clients": clients}
    for name, measured in series.items():
        out.update(summary(name, measured))
    return {
        **out,
        **checks(series),
        "ratio_pg1_sqlite": out["pg1_rps"] / out["sqlite_rps"],
        "ratio_pgN_pg1": out["pgN_rps"] / out["pg1_rps"],
    }
