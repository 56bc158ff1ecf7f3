"""What every source that keeps state with its provider shares: the pass loop.

Twitch's and Kick's subscriptions are kept by a pass that runs at start, every
`interval`, and whenever something asks for it (a revocation, a chat's /subscribe). A
pass that fails (the provider's API down, the database refusing writes) is tried again
with a growing pause. `followed()` asks for a pass and waits a little for it, so a chat
command can say how it went. Events the source makes itself go to the store through the
host, retried while the database refuses writes; problems go to the host's registry.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Final

from bot.errors import StoreUnavailable
from bot.events import Event
from bot.sources.problems import SourceProblem
from bot.sources.service import SourceHost

#: After a pass that failed (the provider's API down, the database refusing writes).
RETRY_FIRST_SECONDS: Final = 5.0
RETRY_MAX_SECONDS: Final = 300.0
#: How long a chat command waits for the pass it asked for (a command must answer).
FOLLOW_WAIT_SECONDS: Final = 2.5
#: How often an event the source made is tried while the database refuses writes.
EMIT_TRIES: Final = 5


class Keeper:
    """The pass loop of one source; subclasses say what a pass does (`one_pass`)."""

    def __init__(
        self,
        *,
        source: str,
        interval: timedelta,
        follow_wait: float = FOLLOW_WAIT_SECONDS,
    ) -> None:
        self.source = source
        self.interval = interval
        self.follow_wait = follow_wait
        self.host: SourceHost | None = None
        self._wake = asyncio.Event()
        # Passes asked for and passes done, counted, so a waiter waits for a pass that
        # began after it asked.
        self._asked = 0
        self._passed = 0
        self._pass_done = asyncio.Event()

    async def one_pass(self) -> bool:
        """Do one pass; False when it failed and is to be tried again soon."""
        raise NotImplementedError

    async def started(self) -> None:
        """Called once `host` is set, before the first pass (open clients, load state)."""

    async def stopped(self) -> None:
        """Called when the loop ends, however it ends (close clients, cancel tasks)."""

    async def run(self, host: SourceHost, stop: asyncio.Event) -> None:
        """Passes at start, every `interval` and when asked, until `stop` is set."""
        self.host = host
        delay = RETRY_FIRST_SECONDS
        try:
            await self.started()
            while not stop.is_set():
                covering = self._asked
                self._wake.clear()
                ok = await self.one_pass()
                self._passed = covering
                self._pass_done.set()
                self._pass_done = asyncio.Event()
                if ok:
                    delay = RETRY_FIRST_SECONDS
                    wait = self.interval.total_seconds()
                else:
                    wait, delay = delay, min(delay * 2, RETRY_MAX_SECONDS)
                await first_of(stop, self._wake, within=wait)
        finally:
            await self.stopped()

    async def standby(self, host: SourceHost, stop: asyncio.Event) -> None:
        """Another process runs the passes: nothing to keep here unless a subclass says."""
        self.host = host
        await stop.wait()

    def reconcile_soon(self) -> None:
        """Have a pass run now (or right after the one running)."""
        self._asked += 1
        self._wake.set()

    async def reconcile_and_wait(self) -> bool:
        """Ask for a pass and wait for it (at most `follow_wait`); True when it ran."""
        self.reconcile_soon()
        wanted = self._asked
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.follow_wait):
                while self._passed < wanted:
                    await self._pass_done.wait()
        return self._passed >= wanted

    async def emit(self, event: Event) -> bool:
        """Record an event; while the database refuses writes, try a few more times."""
        assert self.host is not None
        delay = 1.0
        for attempt in range(EMIT_TRIES):
            try:
                return await self.host.emit(event)
            except StoreUnavailable:
                if attempt == EMIT_TRIES - 1:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
        return False

    def report(self, who: str, kind: str, detail: str) -> None:
        """Record a problem of this source (`who`: a streamer key, or "" for all of it)."""
        if self.host is not None:
            self.host.problems.report(SourceProblem(self.source, who, kind, detail))

    def resolve(self, who: str, kind: str) -> None:
        """Forget a problem of this source."""
        if self.host is not None:
            self.host.problems.resolve(self.source, who, kind)

    def problem_kinds(self, who: str) -> set[str]:
        """The kinds of problem known now about `who`."""
        return self.host.problems.kinds(self.source, who) if self.host is not None else set()


async def first_of(stop: asyncio.Event, wake: asyncio.Event, *, within: float) -> None:
    """Wait until `stop` or `wake` is set, or `within` seconds passed."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
