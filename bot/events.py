"""The normalized stream event: what every source produces and every sink renders."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

LIVE_START: Final = "live_start"
TITLE_CHANGE: Final = "title_change"
CATEGORY_CHANGE: Final = "category_change"
LIVE_END: Final = "live_end"
ERROR: Final = "error"

#: A recording or replay of an ended stream is ready (`Event.replay_url`): the ended
#: cards gain a link to it, by editing (issue 19). Sources emit it, or any event of theirs
#: that carries a `replay_url` (Livepeer's recording.ready) derives it.
REPLAY_READY: Final = "replay_ready"

#: The kinds a route gets when it does not name its `events`.
NOTIFIED_KINDS: Final = (LIVE_START, TITLE_CHANGE, CATEGORY_CHANGE, LIVE_END, ERROR, REPLAY_READY)

#: A source that reports the stream's whole state (not a change) emits this kind; the
#: store compares it with what it knows and derives title_change / category_change.
STREAM_UPDATE: Final = "stream_update"

#: The kinds the pipeline itself understands. Every other kind is a source's own
#: (`SourceSpec.event_types`): stored, and notified only when a route names it;
#: `bot.registry.KNOWN_KINDS` is the whole list.
CORE_KINDS: Final = (*NOTIFIED_KINDS, STREAM_UPDATE)


@dataclass(frozen=True, slots=True)
class LiveInfo:
    """What a stream looks like at one moment: title, categories, artwork, session id."""

    title: str | None = None
    categories: tuple[str, ...] = ()
    cover: str | None = None
    avatar: str | None = None
    uid: str | None = None
    uname: str | None = None
    status: str | None = None
    live_id: str | None = None
    start_time: datetime | None = None

    @property
    def category(self) -> str | None:
        """The primary category, or None when the stream has none."""
        return self.categories[0] if self.categories else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict that `from_json` reads back."""
        return {
            "title": self.title,
            "categories": list(self.categories),
            "cover": self.cover,
            "avatar": self.avatar,
            "uid": self.uid,
            "uname": self.uname,
            "status": self.status,
            "live_id": self.live_id,
            "start_time": _dt_out(self.start_time),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LiveInfo:
        """Read what `to_json` wrote."""
        return cls(
            title=data.get("title"),
            categories=tuple(data.get("categories") or ()),
            cover=data.get("cover"),
            avatar=data.get("avatar"),
            uid=data.get("uid"),
            uname=data.get("uname"),
            status=data.get("status"),
            live_id=data.get("live_id"),
            start_time=_dt_in(data.get("start_time")),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to a stream (or to the recorder), in the bot's own terms.

    `started_at` / `ended_at` describe the live session the event belongs to; the store
    fills `started_at` from the stream's saved state when the payload does not carry it,
    which is how a live_end after a restart still knows how long the stream lasted.
    """

    source: str
    event_id: str
    kind: str
    occurred_at: datetime
    received_at: datetime
    platform: str | None = None
    channel: str | None = None
    display_name: str | None = None
    url: str | None = None
    live: LiveInfo | None = None
    old_live: LiveInfo | None = None
    error: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    #: Where the recording or replay of the session can be watched (http or https).
    replay_url: str | None = None

    @property
    def streamer_key(self) -> str | None:
        """`<platform>/<channel>`, the name routes, mutes and commands use for a stream."""
        if self.platform is None or self.channel is None:
            return None
        return streamer_key(self.platform, self.channel)

    @property
    def name(self) -> str:
        """The best human name for the stream: display name, else channel, else source."""
        return self.display_name or self.channel or self.source

    @property
    def duration(self) -> timedelta | None:
        """How long the session lasted (at its end) or has lasted so far (at `occurred_at`)."""
        if self.started_at is None:
            return None
        end = self.ended_at or self.occurred_at
        return max(end - self.started_at, timedelta(0))

    def with_changes(self, **changes: Any) -> Event:
        """A copy with some fields replaced."""
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict that `from_json` reads back."""
        return {
            "source": self.source,
            "event_id": self.event_id,
            "kind": self.kind,
            "occurred_at": _dt_out(self.occurred_at),
            "received_at": _dt_out(self.received_at),
            "platform": self.platform,
            "channel": self.channel,
            "display_name": self.display_name,
            "url": self.url,
            "live": self.live.to_json() if self.live else None,
            "old_live": self.old_live.to_json() if self.old_live else None,
            "error": self.error,
            "started_at": _dt_out(self.started_at),
            "ended_at": _dt_out(self.ended_at),
            "details": dict(self.details),
            "replay_url": self.replay_url,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        """Read what `to_json` wrote."""
        occurred = _dt_in(data["occurred_at"])
        received = _dt_in(data["received_at"])
        assert occurred is not None and received is not None
        return cls(
            source=data["source"],
            event_id=data["event_id"],
            kind=data["kind"],
            occurred_at=occurred,
            received_at=received,
            platform=data.get("platform"),
            channel=data.get("channel"),
            display_name=data.get("display_name"),
            url=data.get("url"),
            live=LiveInfo.from_json(data["live"]) if data.get("live") else None,
            old_live=LiveInfo.from_json(data["old_live"]) if data.get("old_live") else None,
            error=data.get("error"),
            started_at=_dt_in(data.get("started_at")),
            ended_at=_dt_in(data.get("ended_at")),
            details=data.get("details") or {},
            replay_url=data.get("replay_url"),
        )


def streamer_key(platform: str, channel: str) -> str:
    """The key for a stream: platform lower-cased (it names a service), channel as sent."""
    return f"{platform.strip().lower()}/{channel.strip()}"


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def _dt_out(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt_in(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def glob_match(key: str, pattern: str) -> bool:
    """Case-insensitive glob match of a streamer key (`twitch/*`, `*/quinn`, `*`)."""
    return fnmatch.fnmatchcase(key.casefold(), pattern.casefold())
