"""`python -m bot store migrate --to postgresql://...`: an SQLite database copied into an
empty PostgreSQL one, so a bot moves without losing a card.

Everything goes: events (raw bodies too), live state and session marks, mutes,
subscriptions, every delivery (pending ones are sent by the bot on PostgreSQL; sent ones
are the card refs later edits need), moved chats and what sources keep. Row ids are
kept, since deliveries and session marks refer to them. The copy is one snapshot (one
SQLite read transaction) written in one PostgreSQL transaction: it lands whole or not at
all. The bot must not run on the SQLite file meanwhile (the caller holds its lock).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.store.postgres import PostgresStore
from bot.store.sqlite import TRANSFER_TABLES, SQLiteStore


class TargetNotEmpty(Exception):
    """The PostgreSQL database holds a bot's data already: nothing is copied over it."""


@dataclass(frozen=True, slots=True)
class Copied:
    """How many rows of each table went across, and the schema both are at."""

    rows: dict[str, int]
    schema: int


async def copy_sqlite_to_postgres(source: SQLiteStore, target: PostgresStore) -> Copied:
    """Copy every table of `source` (open, migrated) into `target` (open, migrated, empty)."""
    if not await target.is_empty():
        raise TargetNotEmpty(
            f"{target.location} already holds a bot's data; copy into an empty database"
        )
    schema = await source.schema_version()
    if schema != await target.schema_version():
        raise RuntimeError("the two databases are at different schema versions")
    async with source.transaction():
        tables = {table: source.table_rows(table) for table in TRANSFER_TABLES}
    await target.import_rows(tables)
    return Copied(rows={table: len(rows) for table, rows in tables.items()}, schema=schema)
