"""Shared fixtures: configs built the way users write them, and a store under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, load_config
from bot.store import Store

SECRET = "s3cr3t-key-for-tests-Zq9"


def make_config(tmp_path: Path, **sections: Any) -> Config:
    """A Config from TOML-shaped sections over a minimal OneLiveRec + console setup."""
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "storage": {"path": str(tmp_path / "bot.sqlite3")},
        "sources": [{"name": "rec", "kind": "onliverec", "secret": SECRET}],
        "routes": [{"match": "*"}],
    }
    data.update(sections)
    return load_config(data, environ={}, base_dir=tmp_path)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The minimal config: one OneLiveRec source named `rec`, console, one catch-all route."""
    return make_config(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """An open, migrated store in a temporary file."""
    db = Store(tmp_path / "state.sqlite3")
    db.open()
    yield db
    db.close()


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """python-telegram-bot's RetryAfter warns (an error here) unless PTB_TIMEDELTA is set.

    RetryAfter.__init__ reads its own deprecated int property; under filterwarnings=error
    that warning replaces the 429, so AIORateLimiter would never retry. With the opt-in,
    ``RetryAfter.retry_after`` is a timedelta.
    """
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
