"""blrec (a Bilibili live recorder): `{type, id, date, data}` events, unsigned.

From acgnhiki/blrec `src/blrec/event/models.py`: LiveBeganEvent and LiveEndedEvent carry
`data {user_info, room_info}`, RoomChangeEvent `data {room_info}` (sent when the room's
title, area or cover changes); `id` is a uuid1 and `date` the time in UTC+8, written
`2026-03-11 13:22:38.123456+08:00`. `src/blrec/webhook/webhook_emitter.py` retries a
failed delivery with the same body for up to 180 s, hence the dedupe on `id`. UserInfo
and RoomInfo are `src/blrec/bili/models.py`: `room_info {uid, room_id, short_room_id,
area_name, parent_area_name, live_status (0 preparing, 1 live, 2 round), live_start_time
(Unix seconds, 0 when offline), title, cover, ...}`, `user_info {name, face, uid}`.
A room change reports the whole state: a stream_update, from which the pipeline derives
the title and category changes while live.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from bot import events as ev
from bot.errors import SchemaError
from bot.events import Event, LiveInfo
from bot.sources.base import Fields, WebhookRequest

PLATFORM: Final = "bilibili"
ROOM_URL: Final = "https://live.bilibili.com/{room_id}"

#: blrec event type -> bot event kind; the recording and file events are not notified.
KIND_BY_TYPE: Final[Mapping[str, str]] = {
    "LiveBeganEvent": ev.LIVE_START,
    "LiveEndedEvent": ev.LIVE_END,
    "RoomChangeEvent": ev.STREAM_UPDATE,
}
_LIVE: Final = 1


def parse(source: str, payload: Mapping[str, Any], request: WebhookRequest) -> Event | None:
    """The Event for a blrec webhook; None for a type that is not a live-room event."""
    top = Fields(payload)
    kind = KIND_BY_TYPE.get(top.req_str("type"))
    if kind is None:
        return None
    data = top.req_obj("data")
    room = data.req_obj("room_info")
    user = data.obj("user_info") or Fields({}, "data.user_info")
    room_id = room.id_str("room_id", required=True)
    assert room_id is not None
    started = _start_time(room)
    live_status = room.number("live_status")
    state = {ev.LIVE_START: "live", ev.LIVE_END: "offline"}.get(kind)
    if state is None and live_status is not None:
        state = "live" if live_status == _LIVE else "offline"
    # An area is often named like its parent ("虚拟主播" in "虚拟主播"): shown once.
    areas = (room.string("area_name"), room.string("parent_area_name"))
    categories = tuple(dict.fromkeys(name for name in areas if name))
    name = user.string("name")
    return Event(
        source=source,
        event_id=top.req_str("id"),
        kind=kind,
        occurred_at=top.time("date") or request.received_at,
        received_at=request.received_at,
        platform=PLATFORM,
        channel=room_id,
        display_name=name,
        url=ROOM_URL.format(room_id=room_id),
        live=LiveInfo(
            title=room.string("title"),
            categories=categories,
            cover=room.string("cover") or None,
            avatar=user.string("face") or None,
            uid=room.id_str("uid") or user.id_str("uid"),
            uname=name,
            status=state,
            start_time=started if kind != ev.LIVE_END else None,
        ),
        started_at=started if kind == ev.LIVE_END else None,
    )


def _start_time(room: Fields) -> datetime | None:
    """`live_start_time` (Unix seconds; 0 means the room is not live)."""
    seconds = room.number("live_start_time")
    if not seconds:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise SchemaError(f"{room.path}.live_start_time", "is not a Unix time") from None


# -- samples: one evening in one Bilibili room, shaped like blrec's event models --------

_ROOM: Final[Mapping[str, Any]] = {
    "uid": 322892,
    "room_id": 21452505,
    "short_room_id": 0,
    "area_id": 372,
    "area_name": "虚拟主播",
    "parent_area_id": 9,
    "parent_area_name": "虚拟主播",
    "live_status": 1,
    "live_start_time": 1_773_206_558,
    "online": 5120,
    "title": "深夜合成器即兴 🌙",
    "cover": "https://i0.hdslb.com/bfs/live/new_room_cover/3f2a9c.jpg",
    "tags": "合成器,音乐",
    "description": "每周三晚上见",
}
_USER: Final[Mapping[str, Any]] = {
    "name": "极光Vale",
    "gender": "女",
    "face": "https://i1.hdslb.com/bfs/face/8b1d3e.jpg",
    "uid": 322892,
}


def _sample(etype: str, index: int, date: str, data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": etype,
        "id": f"5f0c3a7e-1d2b-11f1-9a4c-{index:012x}",
        "date": date,
        "data": dict(data),
    }


SAMPLES: Final[Mapping[str, Mapping[str, Any]]] = {
    "LiveBeganEvent": _sample(
        "LiveBeganEvent",
        1,
        "2026-03-11 13:22:40.183250+08:00",
        {"user_info": _USER, "room_info": _ROOM},
    ),
    "RoomChangeEvent": _sample(
        "RoomChangeEvent",
        2,
        "2026-03-11 14:09:38.502114+08:00",
        {"room_info": {**_ROOM, "title": "模块合成器答疑", "area_name": "唱见电台"}},
    ),
    "LiveEndedEvent": _sample(
        "LiveEndedEvent",
        3,
        "2026-03-11 15:36:19.774031+08:00",
        {
            "user_info": _USER,
            "room_info": {**_ROOM, "live_status": 0, "title": "模块合成器答疑"},
        },
    ),
}
