"""The rate limiter the sinks use to stay under the platforms' request limits."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(eq=False, slots=True)
class _Reservation:
    limiter: WindowLimiter
    used: bool = False


# Slots taken by `WindowLimiter.reserve` in this task, each for the first request made
# under it. A context variable because the request is made deep inside a platform library.
_reserved: ContextVar[tuple[_Reservation, ...]] = ContextVar("reserved_slots", default=())


class WindowLimiter:
    """At most `limit` requests in any `period` seconds, first come first served.

    Each request holds one of `limit` slots from the moment it starts until `period`
    seconds after it is answered (or fails), so a burst of `limit` goes at once and the
    next waits. The platform counts a request somewhere between its start and its
    answer, so no `period` of the platform's ever counts more than `limit`, however late
    it counts and wherever its windows begin. (A leaky bucket such as aiolimiter's, under
    PTB's AIORateLimiter, lets `limit` through and then `limit` per `period` more: nearly
    twice the limit in the first period.)

    An `urgent` request (a reply to a command someone just typed) waits in a lane of its
    own that is served first, so a chat's backlog of card edits never keeps its answer
    waiting for a minute. A `background` one (the preflight's reads of every chat at
    start) is served last, and only while more than half the window is free, so a
    notification never queues behind a hundred of them.
    """

    def __init__(self, limit: int, period: float) -> None:
        if limit < 1 or period <= 0:
            raise ValueError(f"a rate limit needs limit >= 1 and period > 0, not {limit}/{period}")
        self.limit = limit
        self.period = period
        #: The limit the platform sets for the whole bot token; `limit` is this
        #: process's part of it (`share`).
        self.whole = limit
        self._available = limit
        # Waiters, first come first served within each lane; the urgent lane goes first.
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._background: deque[asyncio.Future[None]] = deque()
        # Slots background requests leave free for the others.
        self._kept_free = limit // 2
        self._held = 0
        # Slots held for requests other processes made (`hold_elsewhere`), by key.
        self._elsewhere: dict[int, asyncio.TimerHandle] = {}
        self._hold_keys = itertools.count()

    def __repr__(self) -> str:
        return f"<WindowLimiter {self.limit} per {self.period:g}s, {self._held} held>"

    @property
    def idle(self) -> bool:
        """No slot is held or waited for: the limiter is as good as a new one."""
        return self._held == 0 and not (
            self._urgent or self._waiting or self._background or self._elsewhere
        )

    async def acquire(self, *, urgent: bool = False, background: bool = False) -> None:
        """Wait for one request's slot, or take the one `reserve` set aside for it.

        Call `release` once the request is answered or has failed.
        """
        for reservation in _reserved.get():
            if reservation.limiter is self and not reservation.used:
                # From here on the slot is this request's, released when it is over: a
                # later request in the same block (a retry, a fallback) never waits for
                # a slot while holding one, which could leave everyone waiting.
                reservation.used = True
                return
        await self._take(urgent=urgent, background=background)

    def share(self, processes: int, rank: int = 0) -> None:
        """Take `1/processes` of the whole limit: several bot processes send with one
        token, and the platform counts their requests together (issue 20). What does not
        divide evenly goes to the processes of the lowest `rank`s (0 is the first), so
        the parts add up to the whole: 17, 17 and 16 of 50. A smaller part takes effect
        as held slots free up; a larger one at once."""
        processes = max(processes, 1)
        extra = 1 if rank % processes < self.whole % processes else 0
        limit = max(1, self.whole // processes + extra)
        grown = limit - self.limit
        if grown == 0:
            return
        self.limit = limit
        self._kept_free = limit // 2
        self._available += grown
        self._give_out()

    def hold_elsewhere(self, seconds_left: Iterable[float]) -> None:
        """Requests other bot processes made that the platform still counts: each holds
        one slot for the seconds it has left in the window, as this process's own would.
        Replaces what was said before (each call tells all there are now). Slots held
        beyond the limit leave none free until enough of them end."""
        loop = asyncio.get_running_loop()
        ended = len(self._elsewhere)
        for handle in self._elsewhere.values():
            handle.cancel()
        self._elsewhere.clear()
        for left in seconds_left:
            if left > 0:
                key = next(self._hold_keys)
                self._elsewhere[key] = loop.call_later(left, self._end_hold, key)
        self._available += ended - len(self._elsewhere)
        self._give_out()

    def _end_hold(self, key: int) -> None:
        if self._elsewhere.pop(key, None) is not None:
            self._hand_over()

    def _give_out(self) -> None:
        """Hand available slots to waiters, until one is left with nobody to take it (the
        background lane waits for half the window: its waiters may stay queued)."""
        while self._available > 0:
            self._available -= 1
            if not self._hand_over():
                break

    def release(self) -> None:
        """A request is over: its slot frees up `period` seconds from now."""
        asyncio.get_running_loop().call_later(self.period, self._free)

    @contextlib.asynccontextmanager
    async def slot(self, *, urgent: bool = False, background: bool = False) -> AsyncIterator[None]:
        """One request's slot: ``async with limiter.slot(): await send()``."""
        await self.acquire(urgent=urgent, background=background)
        try:
            yield
        finally:
            self.release()

    @contextlib.asynccontextmanager
    async def reserve(self) -> AsyncIterator[None]:
        """Take a slot now for the first request made inside the block, in this task.

        Then the work before that request (rendering it) waits for its turn too, and the
        requests of a burst go out before the ones behind them are even prepared.
        """
        await self._take()
        reservation = _Reservation(self)
        token = _reserved.set((*_reserved.get(), reservation))
        try:
            yield
        finally:
            _reserved.reset(token)
            if not reservation.used:
                self._free()  # no request went out: nothing for the platform to count

    async def _take(self, *, urgent: bool = False, background: bool = False) -> None:
        floor = self._kept_free if background else 0
        queued = self._urgent or self._waiting or (background and self._background)
        if self._available > floor and not queued:
            self._available -= 1
        else:
            turn = asyncio.get_running_loop().create_future()
            lane = self._urgent if urgent else self._background if background else self._waiting
            lane.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._hand_over()  # given a slot just as it was cancelled: pass it on
                else:
                    with contextlib.suppress(ValueError):
                        lane.remove(turn)
                raise
        self._held += 1

    def _free(self) -> None:
        self._held -= 1
        self._hand_over()

    def _hand_over(self) -> bool:
        """A slot is free: to the first urgent waiter, else the first other one, else a
        background one if that leaves more than half the window free. False when
        nobody took it (it is available again, or gone if the part shrank)."""
        if self._available < 0:
            self._available += 1  # the part shrank (`share`): this slot is one too many
            return False
        lanes = [self._urgent, self._waiting]
        if self._available + 1 > self._kept_free:
            lanes.append(self._background)
        for lane in lanes:
            while lane:
                turn = lane.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return True
        self._available += 1
        return False
