"""The protocol fakes from tests/fakes, extended (not edited) for benchmarks.

Both record when each message arrived, keyed by the ``bench-N`` marker in its text, and
can enforce the platforms' documented send limits, answering 429 the way the platform
does. Limits are fixed windows that start with the first request in them, like the
per-channel bucket of the Discord fake.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes import discord_api, telegram_api
from tests.fakes.discord_api import FakeDiscord, default_guild
from tests.fakes.telegram_api import FakeTelegram

MARKER = re.compile(r"bench-(\d+)")
FIRST_BENCH_CHANNEL = 990_000_000_000_000_000
FIRST_BENCH_CHAT = -1_009_900_000_000


def bench_channel_id(k: int) -> int:
    """The k-th extra Discord text channel."""
    return FIRST_BENCH_CHANNEL + k


def bench_chat_id(k: int) -> int:
    """The k-th Telegram supergroup."""
    return FIRST_BENCH_CHAT - k


def guild_with_channels(count: int) -> dict[str, Any]:
    """The fake's default guild plus `count` plain text channels the bot may post in."""
    guild = default_guild()
    for k in range(count):
        guild["channels"].append(
            {
                "id": str(bench_channel_id(k)),
                "type": 0,
                "name": f"bench-{k}",
                "position": 10 + k,
                "parent_id": None,
                "topic": None,
                "nsfw": False,
                "rate_limit_per_user": 0,
                "last_message_id": None,
                "flags": 0,
                "permission_overwrites": [],
            }
        )
    return guild


class _Window:
    """A fixed window of `limit` events per `seconds`, opened by the first event in it."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit, self.seconds = limit, seconds
        self.opened, self.used = 0.0, 0

    def take(self, now: float) -> float:
        """0 when an event may pass now (and count it), else the seconds until it may."""
        if now >= self.opened + self.seconds:
            self.opened, self.used = now, 0
        if self.used >= self.limit:
            return self.opened + self.seconds - now
        self.used += 1
        return 0.0


class _Arrivals:
    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}  # marker -> perf_counter at the fake
        self.sent = 0
        self.rejected = 0
        self.first: float | None = None
        self.last: float | None = None
        self.targets: set[str] = set()  # channels / chats that got at least one message
        self.changed = asyncio.Event()  # set on every arrival; waiters clear it

    def arrived(self, result: Any) -> None:
        now = time.perf_counter()
        self.sent += 1
        self.first = now if self.first is None else self.first
        self.last = now
        where = result.get("channel_id") or result.get("chat", {}).get("id")
        self.targets.add(str(where))
        found = MARKER.search(json.dumps(result))
        if found:
            self.arrivals.setdefault(int(found.group(1)), now)
        self.changed.set()

    async def wait_until(self, done: Callable[[_Arrivals], bool]) -> None:
        """Return once `done(self)` holds, re-checking after every arrival (caller bounds it)."""
        while not done(self):
            self.changed.clear()
            await self.changed.wait()


class BenchDiscord(FakeDiscord, _Arrivals):
    """FakeDiscord with arrival times and, optionally, the 50 requests/s global limit."""

    def __init__(self, *, global_limit: int | None = None, **kwargs: Any) -> None:
        FakeDiscord.__init__(self, **kwargs)
        _Arrivals.__init__(self)
        self._global = _Window(global_limit, 1.0) if global_limit else None

    async def _respond(self, rec: discord_api.RecordedRequest) -> web.Response:
        if self._global is not None:
            wait = self._global.take(time.monotonic())
            if wait:
                self.rejected += 1
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": round(wait, 3),
                    "global": True,
                }
                return web.json_response(
                    body,
                    status=429,
                    headers={
                        "Via": "1.1 google",
                        "X-RateLimit-Global": "true",
                        "X-RateLimit-Scope": "global",
                        "Retry-After": str(max(1, round(wait))),
                    },
                )
        response = await super()._respond(rec)
        if response.status == 429:
            self.rejected += 1
        return response

    async def _create_message(self, rec: discord_api.RecordedRequest, cid: str) -> Any:
        reply = await super()._create_message(rec, cid)
        if reply.status < 300:
            self.arrived(reply.body)
        return reply


class BenchTelegram(FakeTelegram, _Arrivals):
    """FakeTelegram with arrival times and, optionally, Telegram's send limits.

    limits=True: 30 messages/s overall, 1/s per chat, 20/min per group or supergroup.
    """

    SENDS = ("sendmessage", "sendphoto")

    def __init__(self, *, limits: bool = False, **kwargs: Any) -> None:
        FakeTelegram.__init__(self, **kwargs)
        _Arrivals.__init__(self)
        self._limits = limits
        self._overall = _Window(30, 1.0)
        self._per_chat: dict[str, _Window] = {}
        self._per_group: dict[str, _Window] = {}
        for name in self.SENDS:
            method, handler = self._methods[name]
            self._methods[name] = (method, self._wrap(handler))

    def _wrap(self, handler: Any) -> Any:
        async def send(params: dict[str, Any], files: dict[str, Any]) -> Any:
            if self._limits:
                self._check_limits(str(params.get("chat_id")))
            result = await handler(params, files)
            self.arrived(result)
            return result

        return send

    def _check_limits(self, chat: str) -> None:
        now = time.monotonic()
        windows = [self._overall, self._per_chat.setdefault(chat, _Window(1, 1.0))]
        if chat.startswith("-"):
            windows.append(self._per_group.setdefault(chat, _Window(20, 60.0)))
        # Probe without counting: a rejected send must not use up any window.
        waits = [
            w.opened + w.seconds - now
            for w in windows
            if now < w.opened + w.seconds and w.used >= w.limit
        ]
        if waits:
            self.rejected += 1
            seconds = max(1, round(max(waits) + 0.499))  # Telegram says whole seconds
            raise telegram_api._ApiError(
                429, f"Too Many Requests: retry after {seconds}", {"retry_after": seconds}
            )
        for window in windows:
            window.take(now)
