"""Reaching a bot's SQLite file from outside, as another program (a backup, sqlite3) would."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def run_sql(path: Path | str, sql: str) -> None:
    """Run one statement on the database file through a connection of its own."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        conn.execute(sql)
    finally:
        conn.close()
