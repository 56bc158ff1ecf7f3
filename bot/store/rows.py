"""Rows into the store's row types, for every backend: an sqlite3.Row and an
asyncpg.Record are both read by column name. Where the backends store a value
differently (SQLite keeps times as ISO text), the backend says how to read it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from bot.events import LiveInfo
from bot.store import Delivery, DeliveryInfo, SessionMarks, StreamState


class Row(Protocol):
    """A database row read by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


def same_moment(value: Any) -> datetime | None:
    """A time column the driver returns as a datetime already (PostgreSQL)."""
    return value if isinstance(value, datetime) else None


def stream_from_row(
    row: Row, moment: Callable[[Any], datetime | None] = same_moment
) -> StreamState:
    state_at = moment(row["state_at"])
    assert state_at is not None  # NOT NULL in both schemas
    return StreamState(
        streamer_key=row["streamer_key"],
        display_name=row["display_name"],
        url=row["url"],
        live=bool(row["live"]),
        info=LiveInfo.from_json(json.loads(row["info"])),
        started_at=moment(row["started_at"]),
        ended_at=moment(row["ended_at"]),
        state_at=state_at,
        marks=SessionMarks(
            session_row=row["session_row"],
            end_row=row["end_row"],
            change_posted_at=row["change_posted_at"],
        ),
    )


def delivery_from_row(row: Row, *, attempts_delta: int = 0) -> Delivery:
    return Delivery(
        id=row["id"],
        event_row=row["event_row"],
        sink=row["sink"],
        target=row["target"],
        action=row["action"],
        options=json.loads(row["options"]),
        attempts=row["attempts"] + attempts_delta,
        created_at=row["created_at"],
        not_before=row["not_before"],
    )


def info_from_row(row: Row) -> DeliveryInfo:
    return DeliveryInfo(
        id=row["id"],
        event_row=row["event_row"],
        sink=row["sink"],
        target=row["target"],
        action=row["action"],
        options=json.loads(row["options"]),
        state=row["state"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        not_before=row["not_before"],
        last_error=row["last_error"],
        message_id=row["message_id"],
        kind=row["kind"],
        streamer_key=row["streamer_key"],
    )
