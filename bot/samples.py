"""Realistic sample events for every known kind: `python -m bot render` and template checks."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from bot.events import KNOWN_KINDS, Event, LiveInfo

# One evening of one stream, as OneLiveRec would report it (seeds/onliverec-webhooks.txt).
_START: Final = datetime(2026, 3, 11, 5, 22, 38, tzinfo=UTC)
_PLATFORM: Final = "twitch"
_CHANNEL: Final = "auroravale"
_NAME: Final = "Aurora Vale"
_URL: Final = "https://www.twitch.tv/auroravale"
_AVATAR: Final = (
    "https://static-cdn.jtvnw.net/jtv_user_pictures/auroravale-profile_image-300x300.png"
)
_COVER: Final = "https://static-cdn.jtvnw.net/previews-ttv/live_user_auroravale-1280x720.jpg"
_LIVE: Final = LiveInfo(
    title="Cozy ranked grind 🌙 road to Diamond | !socials",
    categories=("Just Chatting", "Music"),
    cover=_COVER,
    avatar=_AVATAR,
    uid="73519240",
    uname="auroravale",
    status="live",
    live_id="318847223",
    start_time=_START,
)
_RETITLED: Final = replace(_LIVE, title="Diamond or bust: last 40 LP 🔥 | !socials")
_RECATEGORISED: Final = replace(_RETITLED, categories=("League of Legends",))
_ENDED: Final = replace(_RECATEGORISED, status="offline")
_RECORDING: Final = "rec/twitch/auroravale/2026-03-11_05-22-38"

# Livepeer and FastPix streams, for their own event kinds.
_LIVEPEER_STREAM: Final = "a4f2d3c1-7b8e-4c2a-9f1d-6e5b4a3c2d1e"
_LIVEPEER_PLAYBACK: Final = "a4f2xk9q7wz3m8pd"
_FASTPIX_STREAM: Final = "8f3c2b1a9d7e4f6a5b0c1d2e3f4a5b6c"
_FASTPIX_PLAYBACK: Final = "d1e2f3a4-b5c6-4d7e-8f9a-0b1c2d3e4f5a"


def sample_event(kind: str) -> Event:
    """A realistic event of `kind` (any kind in bot.events.KNOWN_KINDS); ValueError else."""
    if kind not in KNOWN_KINDS:
        known = ", ".join(sorted(KNOWN_KINDS))
        raise ValueError(f"no sample for unknown event kind {kind!r}; known: {known}")
    specific = _SAMPLES.get(kind)
    if specific is not None:
        return specific()
    if kind.startswith("video."):
        return _fastpix(kind)
    if "." in kind:
        return _livepeer(kind)
    return _onliverec(kind, minutes=0)


def _tag(kind: str) -> str:
    """A stable 12-digit event-id suffix per kind (str hash() changes between runs)."""
    return f"{zlib.crc32(kind.encode()):012d}"


def _onliverec(kind: str, *, minutes: float, **changes: Any) -> Event:
    at = _START + timedelta(minutes=minutes)
    event = Event(
        source="onliverec",
        event_id=f"398ea849-7c4b-45c4-bd2f-{_tag(kind)}",
        kind=kind,
        occurred_at=at,
        received_at=at + timedelta(milliseconds=212),
        platform=_PLATFORM,
        channel=_CHANNEL,
        display_name=_NAME,
        url=_URL,
        live=_LIVE,
        started_at=_START,
    )
    return event.with_changes(**changes) if changes else event


def _live_start() -> Event:
    return _onliverec("live_start", minutes=0)


def _title_change() -> Event:
    return _onliverec("title_change", minutes=47, live=_RETITLED, old_live=_LIVE)


def _category_change() -> Event:
    return _onliverec("category_change", minutes=72, live=_RECATEGORISED, old_live=_RETITLED)


def _live_end() -> Event:
    end = _START + timedelta(hours=2, minutes=13, seconds=41)
    return _onliverec("live_end", minutes=133.7, live=_ENDED, ended_at=end, occurred_at=end)


def _error() -> Event:
    return _onliverec(
        "error",
        minutes=95,
        error=(
            "ffmpeg exited with status 1 while recording: "
            "rtmp://live-fra05.twitch.tv/app: Connection reset by peer"
        ),
        details={"retry_in_seconds": 30},
    )


def _app(kind: str) -> Callable[[], Event]:
    def make() -> Event:
        return _onliverec(
            kind,
            minutes=-5 if kind == "app_launch" else 180,
            platform=None,
            channel=None,
            display_name="OneLiveRec",
            url=None,
            live=None,
            started_at=None,
            details={"version": "1.8.2"},
        )

    return make


def _video_file_create() -> Event:
    return _onliverec("video_file_create", minutes=0.1, details={"path": f"{_RECORDING}.ts"})


def _video_file_finish() -> Event:
    return _onliverec(
        "video_file_finish",
        minutes=133.8,
        live=_ENDED,
        details={"path": f"{_RECORDING}.ts", "filesize": 6_442_450_944, "duration": 8021},
    )


def _video_transmux_finish() -> Event:
    return _onliverec(
        "video_transmux_finish",
        minutes=136,
        live=_ENDED,
        details={"input": f"{_RECORDING}.ts", "output": f"{_RECORDING}.mp4"},
    )


def _recording_ready() -> Event:
    return _livepeer(
        "recording_ready",
        details={
            "recording_url": f"https://livepeercdn.studio/recordings/{_LIVEPEER_STREAM}/index.m3u8",
            "mp4_url": f"https://livepeercdn.studio/recordings/{_LIVEPEER_STREAM}/source.mp4",
        },
    )


def _stream_update() -> Event:
    return _fastpix("stream_update")


_LIVEPEER_DETAILS: Final[Mapping[str, Mapping[str, Any]]] = {
    "multistream": {"target_id": "yt-main", "target_name": "YouTube (main channel)"},
    "asset": {"asset_id": "9b7e5c3a-1d2f-4e6a-8b0c-2d4f6a8c0e1b", "asset_name": "Friday stream"},
    "task": {"task_id": "c0ffee12-3456-4789-abcd-ef0123456789", "task_type": "transcode-file"},
    "recording": {"record": True},
    "playback": {"playback_id": _LIVEPEER_PLAYBACK},
    "stream": {"playback_id": _LIVEPEER_PLAYBACK},
}


def _livepeer(kind: str, *, details: Mapping[str, Any] | None = None) -> Event:
    at = _START + timedelta(minutes=30)
    family = kind.split(".", 1)[0]
    return Event(
        source="livepeer",
        event_id=f"6a1b2c3d-4e5f-4a6b-8c7d-{_tag(kind)}",
        kind=kind,
        occurred_at=at,
        received_at=at + timedelta(milliseconds=340),
        platform="livepeer",
        channel=_LIVEPEER_STREAM,
        display_name="Aurora Vale Studio",
        url=f"https://lvpr.tv/?v={_LIVEPEER_PLAYBACK}",
        live=LiveInfo(title="Aurora Vale Studio", status="live", live_id="b1c2d3e4f5a6"),
        details=dict(details if details is not None else _LIVEPEER_DETAILS.get(family, {})),
    )


def _fastpix(kind: str) -> Event:
    at = _START + timedelta(minutes=20)
    details: dict[str, Any] = {"type": kind, "workspace": "Aurora Productions"}
    if kind.startswith(("video.media.", "video.upload.", "video.asset.")):
        details["media_id"] = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
        details["status"] = "ready"
    return Event(
        source="fastpix",
        event_id=f"e7d6c5b4-a392-4817-b6c5-{_tag(kind)}",
        kind=kind,
        occurred_at=at,
        received_at=at + timedelta(milliseconds=150),
        platform="fastpix",
        channel=_FASTPIX_STREAM,
        display_name="Aurora Vale Live",
        url=f"https://play.fastpix.com/?playbackId={_FASTPIX_PLAYBACK}",
        live=LiveInfo(
            title="Late-night synth jam",
            categories=("Music",),
            cover=f"https://images.fastpix.io/{_FASTPIX_PLAYBACK}/thumbnail.jpg",
            status="live",
        ),
        details=details,
    )


_SAMPLES: Final[Mapping[str, Callable[[], Event]]] = {
    "live_start": _live_start,
    "title_change": _title_change,
    "category_change": _category_change,
    "live_end": _live_end,
    "error": _error,
    "app_launch": _app("app_launch"),
    "app_exit": _app("app_exit"),
    "video_file_create": _video_file_create,
    "video_file_finish": _video_file_finish,
    "video_transmux_finish": _video_transmux_finish,
    "recording_ready": _recording_ready,
    "stream_update": _stream_update,
}
