"""Owncast's webhooks: `{type, eventData}`, unsigned, one stream per server.

From owncast/owncast `core/webhooks/stream.go` (SendStreamStatusEvent): the stream
events carry `eventData {id, name, summary, streamTitle, timestamp}`; newer servers add
`serverURL` and a `status {online, lastConnectTime, streamTitle, ...}` object (its
webhook docs). `id` is a fresh shortid per event and Owncast sends each event once
(`core/webhooks/webhooks.go`, no retry), so it is the dedupe id. `streamTitle` is empty
when none was set: the server's name stands in. A title update reports the whole state,
so it is a stream_update from which the pipeline derives a title_change while live
(and which only records the title while offline).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from bot import events as ev
from bot.events import Event, LiveInfo
from bot.sources.base import Fields, WebhookRequest, body_digest

PLATFORM: Final = "owncast"

#: Owncast event type -> bot event kind; chat and fediverse events are not notified.
KIND_BY_TYPE: Final[Mapping[str, str]] = {
    "STREAM_STARTED": ev.LIVE_START,
    "STREAM_STOPPED": ev.LIVE_END,
    "STREAM_TITLE_UPDATED": ev.STREAM_UPDATE,
}


def parse(
    source: str,
    payload: Mapping[str, Any],
    request: WebhookRequest,
    *,
    channel: str,
    server_url: str,
) -> Event | None:
    """The Event for an Owncast webhook; None for a type that is not a stream event.

    `channel` and `server_url` come from the config; a preview without one (`render
    --event FILE --source-kind webhook`) takes the body's `serverURL` and its host.
    """
    top = Fields(payload)
    kind = KIND_BY_TYPE.get(top.req_str("type"))
    if kind is None:
        return None
    data = top.req_obj("eventData")
    status = data.obj("status") or Fields({}, "eventData.status")
    server_name = data.string("name")
    title = (data.string("streamTitle") or status.string("streamTitle") or "").strip()
    base_url = server_url or (data.string("serverURL") or "").strip().rstrip("/")
    key = channel or urlsplit(base_url).hostname or PLATFORM
    occurred = data.time("timestamp") or request.received_at
    connected = status.time("lastConnectTime")
    # Discord and Telegram cache an image by its URL: a fixed one would show the
    # first frame they ever fetched, so each event's time is added to it.
    cover = f"{base_url}/thumbnail.jpg?t={int(occurred.timestamp())}" if base_url else None
    state = {ev.LIVE_START: "live", ev.LIVE_END: "offline"}.get(kind)
    if state is None and status.has("online"):
        state = "live" if status.boolean("online") else "offline"
    return Event(
        source=source,
        event_id=data.id_str("id") or body_digest(request.body),
        kind=kind,
        occurred_at=occurred,
        received_at=request.received_at,
        platform=PLATFORM,
        channel=key,
        display_name=server_name,
        url=base_url or None,
        live=LiveInfo(
            title=title or server_name,
            cover=cover,
            uname=server_name,
            status=state,
            start_time=connected if kind == ev.LIVE_START else None,
        ),
        started_at=connected if kind == ev.LIVE_END else None,
    )


# -- samples: one evening on one Owncast server, shaped like Owncast's webhook docs -----

_SERVER: Final = "https://live.auroravale.tv"
_STARTED: Final = "2026-03-11T05:22:38.979071420Z"


def _sample(etype: str, event_id: str, at: str, title: str, *, online: bool) -> dict[str, Any]:
    return {
        "type": etype,
        "eventData": {
            "id": event_id,
            "name": "Aurora Vale Live",
            "serverURL": _SERVER,
            "status": {
                "lastConnectTime": _STARTED,
                "lastDisconnectTime": None if online else at,
                "versionNumber": "0.2.5",
                "streamTitle": title,
                "viewerCount": 12 if online else 0,
                "overallMaxViewerCount": 48,
                "sessionMaxViewerCount": 31,
                "online": online,
            },
            "streamTitle": title,
            "summary": "Synths, chat and the occasional cat.",
            "timestamp": at,
        },
    }


SAMPLES: Final[Mapping[str, Mapping[str, Any]]] = {
    "STREAM_STARTED": _sample(
        "STREAM_STARTED", "WtokptnVR", _STARTED, "Late-night synth jam", online=True
    ),
    "STREAM_TITLE_UPDATED": _sample(
        "STREAM_TITLE_UPDATED",
        "DmeikEf4Rz",
        "2026-03-11T06:09:38.121391094Z",
        "Modular patching Q&A",
        online=True,
    ),
    "STREAM_STOPPED": _sample(
        "STREAM_STOPPED",
        "YP-aptn4g",
        "2026-03-11T07:36:19.205872269Z",
        "Modular patching Q&A",
        online=False,
    ),
}
