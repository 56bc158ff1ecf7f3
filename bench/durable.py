"""The durable ingest baseline: the least an aiohttp handler must do to accept a webhook safely.

Key check (`?key=`, as the OneLiveRec source), JSON parse, `INSERT OR IGNORE` into SQLite
in WAL mode with one group commit per pass of the event loop, 202 only after the COMMIT,
no access log. The bot does all of this and more per event; what it does on top is what
the ratio against this baseline measures.

Run as ``python -m bench.durable DB``; logs ``listening on http://HOST:PORT`` to stderr
like the bot, so the benchmark starts and finds it the same way.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import sqlite3
import sys
from pathlib import Path

from aiohttp import web

from bench.bare import serve
from bench.common import SECRET

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    raw BLOB NOT NULL,
    UNIQUE (source, event_id)
)
"""
INSERT = "INSERT OR IGNORE INTO events (source, event_id, kind, raw) VALUES (?, ?, ?, ?)"

_Row = tuple[str, str, str, bytes]


class GroupCommit:
    """Rows queued during one loop pass go into one transaction; each waiter hears its fate."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._waiting: list[tuple[_Row, asyncio.Future[bool]]] = []
        self._scheduled = False

    async def insert(self, row: _Row) -> bool:
        """Store the row; True once committed, False if (source, event_id) was there already."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((row, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._waiting = self._waiting, []
        outcomes: list[bool] = []
        try:
            self._conn.execute("BEGIN")
            for row, _ in batch:
                outcomes.append(self._conn.execute(INSERT, row).rowcount == 1)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), inserted in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(inserted)


def make_app(store: GroupCommit, secret: str) -> web.Application:
    """One POST route, `/webhook/{source}?key=...`."""
    expected = secret.encode()

    async def accept(request: web.Request) -> web.Response:
        key = request.query.get("key")
        if key is None or not hmac.compare_digest(key.encode(), expected):
            return web.json_response({"error": "unauthorized"}, status=401)
        raw = await request.read()
        try:
            payload = json.loads(raw)
            row = (request.match_info["source"], str(payload["id"]), str(payload["type"]), raw)
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "bad request"}, status=400)
        try:
            inserted = await store.insert(row)
        except sqlite3.Error:
            return web.json_response({"error": "unavailable"}, status=503)
        if not inserted:
            return web.json_response({"status": "duplicate"}, status=200)
        return web.json_response({"status": "accepted"}, status=202)

    app = web.Application()
    app.router.add_post("/webhook/{source}", accept)
    return app


def connect(db: Path) -> sqlite3.Connection:
    """The database in WAL mode with the bot's durability setting (synchronous=NORMAL)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(SCHEMA)
    return conn


async def main(db: Path) -> None:
    """Serve on 127.0.0.1 at a free port until SIGTERM or SIGINT."""
    conn = connect(db)
    try:
        await serve(make_app(GroupCommit(conn), SECRET))
    finally:
        conn.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.durable DB")
    asyncio.run(main(Path(sys.argv[1])))
