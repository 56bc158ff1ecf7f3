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
        """The first match of `pattern` in the log, polling every 5 ms."""
        async with asyncio.timeout(within):
            while True:
                found = re.search(pattern, self.log())
                if found:
                    return found
                if self.proc.returncode is not None:
                    raise RuntimeError(f"process exited early:\n{self.log()[-3000:]}")
                await asyncio.sleep(0.005)

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far, from /proc."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        """Resident set size from /proc, in MiB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        return kib / 1024


@contextlib.asynccontextmanager
async def server_process(argv: Sequence[str], workdir: Path, name: str) -> AsyncIterator[Proc]:
    """Start `argv` with stderr to `workdir/name.log`; wait for its listening line; stop it."""
    log_path = workdir / f"{name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log_file:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=log_file, env=env
        )
    server = Proc(proc=proc, log_path=log_path, started=started)
    try:
        found = await server.wait_for_log(LISTENING)
        server.listening_after = time.perf_counter() - started
        server.url = found.group(1)
        yield server
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()


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
