"""A Store wrapper for tests at the store seam: counts transactions, can fail commits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from bot.errors import StoreUnavailable
from bot.events import Event
from bot.store import Store


class InstrumentedStore:
    """Delegates everything to a real store; counts commits and, while `fail_commits` is
    set, makes each fail (as a full disk does: the work is rolled back and the caller
    gets StoreUnavailable). A commit is a transaction's end, or a batch insert made
    outside one (`insert_new_events` is atomic on its own: its own commit)."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.commits = 0
        self.fail_commits = False
        # Per task, as the store's own transactions are: another task's insert is not
        # inside this one's transaction.
        self._open: ContextVar[bool] = ContextVar("instrumented_open", default=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @asynccontextmanager
    async def transaction(self, *, serial: bool = True) -> AsyncIterator[None]:
        """The inner store's transaction, failing at the end when asked to."""
        token = self._open.set(True)
        try:
            async with self._inner.transaction(serial=serial):
                yield
                if self.fail_commits:
                    raise _disk_full()
        finally:
            self._open.reset(token)
        self.commits += 1

    async def insert_new_events(
        self, batch: Sequence[tuple[Event, bytes | None]]
    ) -> list[int | None]:
        """The inner store's; on its own, a commit (failing, with nothing stored, when asked)."""
        if self._open.get():
            return await self._inner.insert_new_events(batch)
        if self.fail_commits:
            raise _disk_full()
        rows = await self._inner.insert_new_events(batch)
        self.commits += 1
        return rows


def _disk_full() -> StoreUnavailable:
    return StoreUnavailable("SQLITE_FULL: database or disk is full", code="SQLITE_FULL")
