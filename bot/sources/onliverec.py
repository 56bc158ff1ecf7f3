"""OneLiveRec: a stream recorder that posts JSON events, authenticated by `?key=<secret>`.

Every type in its webhook docs parses. live_start, live_end, title_change,
category_change and error become notified events; app_launch, app_exit and the
recording events are recorded. A payload without `id` (the docs' examples omit it) gets
a content-hash id, so a retried delivery of the same body still dedupes.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from bot import events as ev
from bot.errors import AuthError
from bot.events import Event, LiveInfo
from bot.sources.base import Fields, WebhookRequest, body_digest
from bot.sources.spec import Credential, SourceSpec

if TYPE_CHECKING:
    from bot.config import SourceConfig

_STREAM_KINDS: Final = frozenset(
    {ev.LIVE_START, ev.LIVE_END, ev.TITLE_CHANGE, ev.CATEGORY_CHANGE, ev.ERROR}
)
_RECORDING_KINDS: Final = frozenset(
    {"video_file_create", "video_file_finish", "video_transmux_finish"}
)
_APP_KINDS: Final = frozenset({"app_launch", "app_exit"})
KNOWN_TYPES: Final = _STREAM_KINDS | _RECORDING_KINDS | _APP_KINDS


class OneLiveRecSource:
    """Parses OneLiveRec webhooks; the secret travels as the `key` query parameter."""

    kind: ClassVar[str] = "onliverec"

    def __init__(self, config: SourceConfig) -> None:
        self._name = config.name
        self._secret = config.secret.encode()

    @property
    def name(self) -> str:
        """The configured source name."""
        return self._name

    def __repr__(self) -> str:
        return f"OneLiveRecSource(name={self._name!r})"

    def verify(self, request: WebhookRequest) -> None:
        """Check `?key=` against the secret in constant time."""
        key = request.query.get("key")
        if key is None:
            raise AuthError(reason="the URL has no ?key= (use the webhook URL init printed)")
        if not hmac.compare_digest(key.encode(), self._secret):
            raise AuthError(reason="the ?key= does not match this source's secret")

    def parse(self, payload: Mapping[str, Any], request: WebhookRequest) -> Event | None:
        """The Event for a OneLiveRec payload; None for a type its docs do not list."""
        top = Fields(payload)
        kind = top.req_str("type")
        if kind not in KNOWN_TYPES:
            return None
        event_id = top.id_str("id") or body_digest(request.body)
        occurred = top.time("ts") or request.received_at
        data = top.obj("data") or Fields({}, "data")
        base = Event(
            source=self._name,
            event_id=event_id,
            kind=kind,
            occurred_at=occurred,
            received_at=request.received_at,
        )
        if kind in _APP_KINDS:
            return base
        # Errors may come from the recorder itself, with no channel attached.
        needs_channel = kind != ev.ERROR
        platform = data.req_str("platform") if needs_channel else data.string("platform")
        channel = data.id_str("channel", required=needs_channel)
        if kind in _RECORDING_KINDS:
            return base.with_changes(
                platform=platform, channel=channel, details=_recording_details(kind, data)
            )
        live: LiveInfo | None = None
        old: LiveInfo | None = None
        if kind in (ev.TITLE_CHANGE, ev.CATEGORY_CHANGE):
            old = _live_info(data.obj("old_live_info"))
            live = _live_info(data.obj("new_live_info"))
        else:
            live = _live_info(data.obj("live_info"))
        error = data.string("error") if kind == ev.ERROR else None
        display = (live.uname if live else None) or (old.uname if old else None)
        return base.with_changes(
            platform=platform,
            channel=channel,
            display_name=display,
            url=data.string("url"),
            live=live,
            old_live=old,
            error=error,
            started_at=live.start_time if live else None,
        )


def _live_info(fields: Fields | None) -> LiveInfo | None:
    """LiveInfo from a `live_info` object; None when absent or `{}` (the docs' examples)."""
    if fields is None or not fields.data:
        return None
    return LiveInfo(
        title=fields.string("title"),
        categories=fields.str_list("categories"),
        cover=fields.string("cover"),
        avatar=fields.string("avatar"),
        uid=fields.id_str("uid"),
        uname=fields.string("uname"),
        status=fields.string("status"),
        live_id=fields.id_str("live_id"),
        start_time=fields.time("start_time"),
    )


def _recording_details(kind: str, data: Fields) -> dict[str, Any]:
    if kind == "video_transmux_finish":
        return {"input": data.string("input"), "output": data.string("output")}
    details: dict[str, Any] = {"path": data.string("path")}
    if kind == "video_file_finish":
        details["filesize"] = data.number("filesize")
        details["duration"] = data.number("duration")
    return details


# -- samples: one evening of one stream, in the shape of seeds/onliverec-webhooks.txt ----

_SAMPLE_DATA: Final[Mapping[str, Any]] = {
    "platform": "twitch",
    "channel": "auroravale",
    "url": "https://www.twitch.tv/auroravale",
}
_SAMPLE_LIVE: Final[Mapping[str, Any]] = {
    "uid": "73519240",
    "uname": "Aurora Vale",
    "avatar": "https://static-cdn.jtvnw.net/jtv_user_pictures/auroravale-profile_image-300x300.png",
    "title": "Cozy ranked grind 🌙 road to Diamond | !socials",
    "cover": "https://static-cdn.jtvnw.net/previews-ttv/live_user_auroravale-1280x720.jpg",
    "categories": ["Just Chatting", "Music"],
    "status": "live",
    "live_id": "318847223",
    "start_time": "2026-03-11T05:22:38Z",
}
_SAMPLE_RETITLED: Final = {**_SAMPLE_LIVE, "title": "Diamond or bust: last 40 LP 🔥 | !socials"}
_SAMPLE_RECATEGORISED: Final = {**_SAMPLE_RETITLED, "categories": ["League of Legends"]}
_SAMPLE_RECORDING: Final = "rec/twitch/auroravale/2026-03-11_05-22-38"


def _sample(index: int, kind: str, ts: str, data: Mapping[str, Any] | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": f"398ea849-7c4b-45c4-bd2f-{index:012d}",
        "ts": ts,
        "type": kind,
    }
    if data is not None:
        payload["data"] = dict(data)
    return payload


SAMPLES: Final[Mapping[str, Mapping[str, Any]]] = {
    "app_launch": _sample(1, "app_launch", "2026-03-11T05:17:38Z", None),
    "live_start": _sample(
        2,
        "live_start",
        "2026-03-11T05:22:38Z",
        {**_SAMPLE_DATA, "live_info": _SAMPLE_LIVE},
    ),
    "video_file_create": _sample(
        3,
        "video_file_create",
        "2026-03-11T05:22:44Z",
        {**_SAMPLE_DATA, "path": f"{_SAMPLE_RECORDING}.ts"},
    ),
    "title_change": _sample(
        4,
        "title_change",
        "2026-03-11T06:09:38Z",
        {**_SAMPLE_DATA, "old_live_info": _SAMPLE_LIVE, "new_live_info": _SAMPLE_RETITLED},
    ),
    "category_change": _sample(
        5,
        "category_change",
        "2026-03-11T06:34:38Z",
        {
            **_SAMPLE_DATA,
            "old_live_info": _SAMPLE_RETITLED,
            "new_live_info": _SAMPLE_RECATEGORISED,
        },
    ),
    "error": _sample(
        6,
        "error",
        "2026-03-11T06:57:38Z",
        {
            **_SAMPLE_DATA,
            "live_info": _SAMPLE_RETITLED,
            "error": "ffmpeg exited with status 1 while recording: "
            "rtmp://live-fra05.twitch.tv/app: Connection reset by peer",
        },
    ),
    "live_end": _sample(
        7,
        "live_end",
        "2026-03-11T07:36:19Z",
        {**_SAMPLE_DATA, "live_info": {**_SAMPLE_RECATEGORISED, "status": "offline"}},
    ),
    "video_file_finish": _sample(
        8,
        "video_file_finish",
        "2026-03-11T07:36:25Z",
        {
            **_SAMPLE_DATA,
            "path": f"{_SAMPLE_RECORDING}.ts",
            "filesize": 6_442_450_944,
            "duration": 8021,
        },
    ),
    "video_transmux_finish": _sample(
        9,
        "video_transmux_finish",
        "2026-03-11T07:38:38Z",
        {
            **_SAMPLE_DATA,
            "input": f"{_SAMPLE_RECORDING}.ts",
            "output": f"{_SAMPLE_RECORDING}.mp4",
        },
    ),
    "app_exit": _sample(10, "app_exit", "2026-03-11T08:22:38Z", None),
}

SPEC: Final = SourceSpec(
    kind=OneLiveRecSource.kind,
    title="OneLiveRec",
    build=OneLiveRecSource,
    credential=Credential.QUERY_KEY,
    event_types={kind: kind for kind in sorted(KNOWN_TYPES)},
    webhook_url="{url}?key={secret}",
    setup=(
        "OneLiveRec: Settings > Automation > Webhooks, add a webhook with this URL:\n"
        "  {webhook_url}"
    ),
    samples=SAMPLES,
    # The recorder runs beside the bot, often on the same machine or network.
    from_internet=False,
)
