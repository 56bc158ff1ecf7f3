"""`python -m bench.faults`: the promise under faults, counted (README "Reliability").

Not speed: each scenario counts messages lost and messages posted more than once while
the real `python -m bot run` process is killed, stopped or starved of its database, with
the Telegram fake from tests/ answering slowly (it stores each message at once and
answers `latency` seconds later, the ambiguous case a slow platform creates).

- kill9: one event to two chats, then kill -9 at a random moment of the send; repeated.
  After the last kill a clean start delivers what is left. A kill inside a send's round
  trip (request out, answer not yet recorded) may repeat that message: that window is
  what this counts.
- sigterm: the same with SIGTERM, which waits for each send in flight: never a repeat.
- instances: a second `run` on the same database while one runs: refused every time.
- fulldisk: RLIMIT_FSIZE on the running bot (writes fail as on a full disk) while events
  come in; refused webhooks are sent again after the disk has room, as a sender retries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import SECRET
from tests.test_cli import start_bot
from tests.test_reliability import (
    GROUP,
    OTHER,
    FlakyTelegram,
    bot_process,
    two_chats,
    write_config,
)

CHATS = (GROUP, OTHER)


def _event(n: int, title: str) -> dict[str, Any]:
    return {
        "id": f"fault-{n}-{time.monotonic_ns()}",
        "type": "live_start",
        "data": {
            "platform": "twitch",
            "channel": f"fault{n}",
            "url": f"https://twitch.tv/fault{n}",
            "live_info": {"uname": f"Fault {n}", "title": title},
        },
    }


async def _post(url: str, payload: dict[str, Any]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/webhook/rec?key={SECRET}", json=payload) as response,
    ):
        await response.read()
        return response.status


def _count(telegram: FlakyTelegram, titles: list[str]) -> dict[str, int]:
    """Messages lost and repeated over all chats and titles."""
    lost = extra = 0
    for chat in CHATS:
        texts = telegram.texts(chat)
        for title in titles:
            seen = sum(title in text for text in texts)
            lost += seen == 0
            extra += max(seen - 1, 0)
    return {"messages": len(titles) * len(CHATS), "lost": lost, "repeated": extra}


async def _deliver_rest(config: Path, telegram: FlakyTelegram, titles: list[str]) -> None:
    telegram.latency = 0.0
    async with bot_process(config) as bot:
        async with asyncio.timeout(60):
            while _count(telegram, titles)["lost"]:
                await asyncio.sleep(0.1)
        await bot.stop()


async def stops(
    workdir: Path, *, how: str, cycles: int, latency: float, window: float | None = None
) -> dict[str, Any]:
    """Kill -9 or SIGTERM at a random moment within `window` seconds of each event's post
    (by default the send's round trip and as long again: the worst case)."""
    window = 2 * latency + 0.05 if window is None else window
    async with two_chats() as telegram:
        config = write_config(workdir, telegram)
        titles: list[str] = []
        for n in range(cycles):
            telegram.latency = latency
            async with bot_process(config) as bot:
                title = f"{how} cycle {n} {time.monotonic_ns()}"
                titles.append(title)
                assert await _post(bot.url, _event(n, title)) == 202
                await asyncio.sleep(random.uniform(0, window))
                if how == "kill9":
                    bot.proc.kill()
                    await bot.proc.wait()
                else:
                    bot.proc.send_signal(signal.SIGTERM)
                    assert await bot.stop() == 0
        await _deliver_rest(config, telegram, titles)
        return {
            "cycles": cycles,
            "latency_s": latency,
            "window_s": round(window, 2),
            **_count(telegram, titles),
        }


async def instances(workdir: Path, *, tries: int) -> dict[str, Any]:
    """Start a second bot on the same database `tries` times while one runs."""
    async with two_chats() as telegram:
        config = write_config(workdir, telegram)
        refused = 0
        async with bot_process(config) as bot:
            for _ in range(tries):
                second = await start_bot(config)
                _out, err = await asyncio.wait_for(second.communicate(), 30)
                refused += second.returncode == 1 and b"already running" in err
            await bot.stop()
        return {"tries": tries, "refused": refused}


async def full_disk(workdir: Path, *, events: int) -> dict[str, Any]:
    """Events before, during and after a full disk; refused ones are sent again after."""
    async with two_chats() as telegram:
        config = write_config(workdir, telegram)
        titles: list[str] = []
        answers: dict[int, int] = {}
        async with bot_process(config) as bot:
            pid = bot.proc.pid
            _soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            refused: list[dict[str, Any]] = []
            for n in range(3 * events):
                if n == events:
                    resource.prlimit(pid, resource.RLIMIT_FSIZE, (4096, hard))
                if n == 2 * events:
                    resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))
                    # The senders retry what was refused, once the bot takes writes again.
                    async with asyncio.timeout(60):
                        while refused:
                            if await _post(bot.url, refused[0]) == 202:
                                refused.pop(0)
                            else:
                                await asyncio.sleep(0.5)
                title = f"disk {n} {time.monotonic_ns()}"
                titles.append(title)
                payload = _event(n, title)
                status = await _post(bot.url, payload)
                answers[status] = answers.get(status, 0) + 1
                if status == 503:
                    refused.append(payload)
                await asyncio.sleep(0.05)
            async with asyncio.timeout(60):
                while _count(telegram, titles)["lost"]:
                    await asyncio.sleep(0.1)
            await bot.stop()
        return {"events": len(titles), "answers": answers, **_count(telegram, titles)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        root = Path(tmp)
        for name in args.only or ("kill9", "sigterm", "instances", "fulldisk"):
            work = root / name
            work.mkdir()
            began = time.perf_counter()
            print(f"-- {name} ...", file=sys.stderr, flush=True)
            if name == "kill9":
                results[name] = await stops(
                    work,
                    how=name,
                    cycles=args.kills,
                    latency=args.latency,
                    window=args.kill_window,
                )
            elif name == "sigterm":
                results[name] = await stops(
                    work, how=name, cycles=args.terms, latency=args.slow_latency
                )
            elif name == "instances":
                results[name] = await instances(work, tries=5)
            elif name == "fulldisk":
                results[name] = await full_disk(work, events=5)
            print(
                f"   {name}: {time.perf_counter() - began:.1f}s {results[name]}",
                file=sys.stderr,
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--kills", type=int, default=30, help="kill -9 cycles (30)")
    parser.add_argument("--terms", type=int, default=20, help="SIGTERM cycles (20)")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.25,
        help="Telegram answer latency for the kills, seconds (0.25)",
    )
    parser.add_argument(
        "--kill-window",
        type=float,
        help="kill within this many seconds of each post (default: twice"
        " the latency plus 50 ms, the worst case)",
    )
    parser.add_argument(
        "--slow-latency",
        type=float,
        default=2.0,
        help="Telegram answer latency for SIGTERM, seconds (2.0)",
    )
    parser.add_argument(
        "--only", action="append", choices=("kill9", "sigterm", "instances", "fulldisk")
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
