"""Shared pieces: starting the real bot (or the baseline) as a process, configs, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-not-for-production-7c2e"
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
# Every wait in the benchmark is bounded; a process that hangs is killed after this.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
# Lines of a failed process's log quoted in the error.
LOG_TAIL_LINES = 25


def toml_config(
    db: Path,
    *,
    routes: Sequence[dict[str, Any]] = (),
    discord: dict[str, Any] | None = None,
    telegram: dict[str, Any] | None = None,
    store_url: str | None = None,
) -> str:
    """A bot.toml: one OneLiveRec source `rec`, console off, the given sinks and routes;
    the database at `store_url` (PostgreSQL) instead of the file `db`, when given."""

    def value(v: Any) -> str:
        return json.dumps(v)  # JSON strings, numbers and arrays are valid TOML

    lines = [
        "[server]",
        'host = "127.0.0.1"',
        "port = 0",
        "",
        "[storage]",
        f"url = {value(store_url)}" if store_url else f"path = {value(str(db))}",
        "",
        "[console]",
        "enabled = false",
        "",
        "[[sources]]",
        'name = "rec"',
        'kind = "onliverec"',
        f"secret = {value(SECRET)}",
        "",
    ]
    for name, table in (("discord", discord), ("telegram", telegram)):
        if table:
            lines.append(f"[{name}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
            lines.append("")
    for route in routes:
        lines.append("[[routes]]")
        lines += [f"{k} = {value(v)}" for k, v in route.items()]
        lines.append("")
    return "\n".join(lines)


@dataclass
class Proc:
    """A server process (the bot or the baseline) with its stderr going to a file."""

    proc: asyncio.subprocess.Process
    log_path: Path
    started: float
    url: str = ""
    listening_after: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def log(self) -> str:
        """Everything the process wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    async def wait_for_log(
        self, pattern: str | re.Pattern[str], within: float = START_TIMEOUT
    ) -> re.Match[str]:
        """The first match of `pattern` in the log, polling every 5 ms; a process that
        exits first, or does not log it within `within` seconds, fails the run."""
        try:
            async with asyncio.timeout(within):
                while True:
                    found = re.search(pattern, self.log())
                    if found:
                        return found
                    if self.proc.returncode is not None:
                        raise self.failure(f"exited ({self.proc.returncode})")
                    await asyncio.sleep(0.005)
        except TimeoutError:
            wanted = getattr(pattern, "pattern", pattern)
            raise self.failure(f"no {wanted!r} in its log within {within:g} s") from None

    def failure(self, what: str) -> RuntimeError:
        """The error that ends a run because of this process: what went wrong, then the
        end of its log."""
        tail = "\n".join(self.log().splitlines()[-LOG_TAIL_LINES:])
        return RuntimeError(f"{self.log_path.stem}: {what}\nthe end of its log:\n{tail}")

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT."""
        if self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far, from /proc."""
        return cpu_seconds(self.proc.pid)

    def rss_mb(self) -> float:
        """Resident set size from /proc, in MiB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        return kib / 1024


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (in parentheses, and it may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process `pid` has used so far; 0 once it is gone."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parent_if(pid: int, command: str) -> int | None:
    """The parent of process `pid` if that process runs `command` here, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, fields = stat.split(" (", 1)[1].rsplit(")", 1)
    return int(fields.split()[1]) if name == command else None


def children_of(parent: int) -> list[int]:
    """`parent` and its child processes (a PostgreSQL server's backends and workers)."""
    found = [parent]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(_stat_fields(int(entry.name))[1]) == parent:
                    found.append(int(entry.name))
    return found


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return sum(values) - idle, sum(values)


@dataclass
class CpuMeter:
    """Cores used between `start()` and `stop()`: by the given processes, by the children
    of `parent` (a local PostgreSQL server, looked up at each end so that backends opened
    meanwhile count), and by the whole machine, which other users share."""

    pids: Sequence[int]
    parent: int | None = None
    _began: float = 0.0
    _cpu: dict[int, float] = field(default_factory=dict)
    _parent_cpu: dict[int, float] = field(default_factory=dict)
    _machine: tuple[int, int] = (0, 0)

    def start(self) -> None:
        """Take the first reading."""
        self._began = time.perf_counter()
        self._cpu = {pid: cpu_seconds(pid) for pid in self.pids}
        self._parent_cpu = self._parent_readings()
        self._machine = _machine_jiffies()

    def stop(self) -> dict[str, float]:
        """Cores used since `start()`: `servers` (the pids), `database`, `machine`; and the
        `wall` seconds since."""
        wall = time.perf_counter() - self._began
        servers = sum(cpu_seconds(pid) - before for pid, before in self._cpu.items())
        # A backend started meanwhile counts from 0: its start-up is part of the load.
        database = sum(
            now - self._parent_cpu.get(pid, 0.0) for pid, now in self._parent_readings().items()
        )
        busy, total = _machine_jiffies()
        share = (busy - self._machine[0]) / max(total - self._machine[1], 1)
        return {
            "servers": servers / wall,
            "database": database / wall if self.parent is not None else float("nan"),
            "machine": share * (os.cpu_count() or 1),
            "wall": wall,
        }

    def _parent_readings(self) -> dict[int, float]:
        if self.parent is None:
            return {}
        return {pid: cpu_seconds(pid) for pid in children_of(self.parent)}


async def _spawn(argv: Sequence[str], workdir: Path, name: str) -> Proc:
    """Start `argv` with stderr to `workdir/name.log`."""
    log_path = workdir / f"{name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log_file:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=log_file, env=env
        )
    return Proc(proc=proc, log_path=log_path, started=started)


@contextlib.asynccontextmanager
async def fleet(
    argv: Sequence[str], workdir: Path, name: str, count: int
) -> AsyncIterator[list[Proc]]:
    """`count` processes of `argv` started together, as a deployment starts its replicas,
    logging to `workdir/name-N.log` (`name.log` for one); yielded once each logs its
    listening line; all stopped after, together."""
    names = [name] if count == 1 else [f"{name}-{n}" for n in range(count)]
    servers: list[Proc] = []
    try:
        for each in names:
            servers.append(await _spawn(argv, workdir, each))
        # All of them are starting already: waiting for one lets the others go on.
        for server in servers:
            found = await server.wait_for_log(LISTENING)
            server.listening_after = time.perf_counter() - server.started
            server.url = found.group(1)
        yield servers
    finally:
        await asyncio.gather(*(server.stop() for server in servers))


@contextlib.asynccontextmanager
async def server_process(argv: Sequence[str], workdir: Path, name: str) -> AsyncIterator[Proc]:
    """One process of `argv` (`fleet`), listening on yield, stopped after."""
    async with fleet(argv, workdir, name, 1) as (server,):
        yield server


#: What each bot process logs once its heartbeat counted the others (bot/heartbeat.py).
SHARING = "{count} bot processes share the database"


@contextlib.asynccontextmanager
async def bot_fleet(
    config: Path, workdir: Path, name: str, count: int
) -> AsyncIterator[list[Proc]]:
    """`count` bots on `config` (`fleet`). Several share one PostgreSQL database: they
    are yielded once each has counted all of them through their heartbeat rows, so each
    sends at its share of the platforms' limits from the first measured request."""
    async with fleet(bot_argv(config), workdir, name, count) as bots:
        if count > 1:
            for bot in bots:
                await bot.wait_for_log(SHARING.format(count=count))
        yield bots


def bot_argv(config: Path) -> list[str]:
    """The real CLI: `python -m bot run -c CONFIG`."""
    return [sys.executable, "-m", "bot", "run", "-c", str(config)]


def bare_argv() -> list[str]:
    """The ingest baseline process."""
    return [sys.executable, "-m", "bench.bare"]


def durable_argv(db: Path) -> list[str]:
    """The durable ingest baseline process, storing into `db`."""
    return [sys.executable, "-m", "bench.durable", str(db)]


async def wait_healthy(url: str, within: float = START_TIMEOUT) -> dict[str, Any]:
    """Poll /healthz every 5 ms until it answers ok (every sink running)."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(within):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/healthz") as response:
                    body = await response.json()
                    if response.status == 200 and body.get("ok"):
                        return dict(body)
            await asyncio.sleep(0.005)


async def wait_ready(bot: Proc, within: float = START_TIMEOUT) -> None:
    """`wait_healthy` for a bot process; one that never gets there (a hung sink, say)
    fails the run with the end of its log, not a bare timeout."""
    try:
        await wait_healthy(bot.url, within)
    except TimeoutError:
        raise bot.failure(f"/healthz not ok within {within:g} s") from None


def live_start(event_id: str, channel: str, title: str, platform: str = "twitch") -> bytes:
    """A OneLiveRec live_start webhook body."""
    return json.dumps(
        {
            "id": event_id,
            "type": "live_start",
            "data": {
                "platform": platform,
                "channel": channel,
                "url": f"https://twitch.tv/{channel}",
                "live_info": {"uname": channel.title(), "title": title, "categories": ["Bench"]},
            },
        }
    ).encode()


def webhook_url(base: str) -> str:
    """Where the OneLiveRec source `rec` listens (the baseline accepts any source name)."""
    return f"{base}/webhook/rec?key={SECRET}"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
