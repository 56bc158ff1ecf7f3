"""`--store postgresql://...`: a fresh database on that server for each bot the bench runs,
dropped afterwards, so a run never reads a previous run's events and leaves nothing."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def with_database(url: str, database: str) -> str:
    """`url` naming another database on the same server, as the same user."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@contextlib.asynccontextmanager
async def fresh_database(url: str) -> AsyncIterator[str]:
    """The URL of a new, empty database on `url`'s server (its user needs CREATEDB)."""
    name = f"streambot_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
