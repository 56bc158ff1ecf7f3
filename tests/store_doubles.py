"""A Store wrapper for tests at the store seam: counts transactions, can fail commits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bot.errors import StoreUnavailable
from bot.store import Store


class InstrumentedStore:
    """Delegates everything to a real store; counts committed transactions and, while
    `fail_commits` is set, makes each transaction fail at its commit (as a full disk does:
    the work inside it is rolled back and the caller gets StoreUnavailable)."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.commits = 0
        self.fail_commits = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @asynccontextmanager
    async def transaction(self, *, serial: bool = True) -> AsyncIterator[None]:
        """The inner store's transaction, failing at the end when asked to."""
        async with self._inner.transaction(serial=serial):
            yield
            if self.fail_commits:
                raise StoreUnavailable("SQLITE_FULL: database or disk is full", code="SQLITE_FULL")
        self.commits += 1
