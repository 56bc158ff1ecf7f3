"""Any JSON sender: `[sources.fields]` maps our event fields to dotted paths in its body,
`[sources.kinds]` its kind values to ours.

A path is names joined by dots (`data.user.login`); a number steps into a list
(`data.games.0`). The tables are checked when the config loads (`problems`), so a
misspelt field or a kind that is not ours is named at `check`, not at the first webhook.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from bot import events as ev
from bot.errors import SchemaError
from bot.events import Event, LiveInfo
from bot.sources.base import WebhookRequest, body_digest, parse_rfc3339

#: Our event fields a path may be given for, and what each means.
FIELDS: Final[Mapping[str, str]] = {
    "event_id": "the delivery's id (dedupe); a hash of the body when not given",
    "kind": "the sender's event type, looked up in [sources.kinds] (required)",
    "platform": "the streamer key's platform (or platform_value, a constant)",
    "channel": "the streamer key's channel (required)",
    "display_name": "the streamer's name as shown",
    "title": "the stream's title",
    "category": "its category: a string or a list of them",
    "url": "the link to watch",
    "cover": "the preview image",
    "avatar": "the streamer's picture",
    "started_at": "when the stream started: RFC 3339, or Unix seconds (or ms)",
    "occurred_at": "when the event happened: RFC 3339, or Unix seconds (or ms)",
    "error": "the error text, for an error event",
}
#: The kinds a sender's value may map to.
KINDS: Final = frozenset(ev.CORE_KINDS)
_PATH: Final = re.compile(r"[A-Za-z0-9_$@-]+(\.[A-Za-z0-9_$@-]+)*")
_PLATFORM: Final = re.compile(r"[A-Za-z0-9_.-]+")
# Unix times above this are milliseconds (10^11 s is the year 5138).
_MS_FROM: Final = 10**11


@dataclass(frozen=True, slots=True)
class CustomMap:
    """A custom sender's tables, checked: our field -> path, its kind -> ours."""

    fields: Mapping[str, str]
    kinds: Mapping[str, str]
    platform_value: str = ""


def problems(
    fields: Mapping[str, str] | None,
    kinds: Mapping[str, str] | None,
    platform_value: str,
    problem: Callable[[str, str], None],
    entry: Callable[[str, str], str],
) -> None:
    """Record what is wrong with a custom preset's tables, naming each bad entry."""
    if fields is None:
        problem("fields", "is required with preset custom: [sources.fields] maps our fields")
        fields = {}
    for name, path in fields.items():
        if name not in FIELDS:
            problem(entry("fields", name), f"unknown field; known: {', '.join(FIELDS)}")
        elif not _PATH.fullmatch(path):
            problem(
                entry("fields", name),
                f"{path!r} is not a dotted path such as data.user.login",
            )
    for required in ("kind", "channel"):
        if required not in fields:
            problem(entry("fields", required), "is required (the dotted path to it)")
    if platform_value and "platform" in fields:
        problem("platform_value", "set fields.platform or platform_value, not both")
    elif not platform_value and "platform" not in fields:
        problem("platform_value", "is required unless fields.platform names a path")
    elif platform_value and not _PLATFORM.fullmatch(platform_value):
        problem("platform_value", "must be letters, digits, '_', '.' or '-' (no '/')")
    if kinds is None or not kinds:
        problem("kinds", "is required with preset custom: [sources.kinds] maps its kinds")
        kinds = {}
    for value, ours in kinds.items():
        if ours not in KINDS:
            problem(
                entry("kinds", value),
                f"{ours!r} is not one of our kinds: {', '.join(sorted(KINDS))}",
            )


def parse(
    source: str, payload: Mapping[str, Any], request: WebhookRequest, table: CustomMap
) -> Event | None:
    """The Event a custom sender's body maps to; None for a kind value not in the table."""
    fields = table.fields
    raw_kind = _text(payload, fields["kind"], required=True, ids=True)
    kind = table.kinds.get(raw_kind or "")
    if kind is None:
        return None
    platform = table.platform_value or _text(payload, fields["platform"], required=True)
    title = _field(payload, fields, "title")
    return Event(
        source=source,
        event_id=_field(payload, fields, "event_id", ids=True) or body_digest(request.body),
        kind=kind,
        occurred_at=_time(payload, fields.get("occurred_at")) or request.received_at,
        received_at=request.received_at,
        platform=platform,
        channel=_text(payload, fields["channel"], required=True, ids=True),
        display_name=_field(payload, fields, "display_name"),
        url=_field(payload, fields, "url"),
        live=LiveInfo(
            title=title,
            categories=_categories(payload, fields.get("category")),
            cover=_field(payload, fields, "cover"),
            avatar=_field(payload, fields, "avatar"),
            status={ev.LIVE_START: "live", ev.LIVE_END: "offline"}.get(kind),
            start_time=_time(payload, fields.get("started_at")),
        ),
        error=_field(payload, fields, "error") if kind == ev.ERROR else None,
    )


def _lookup(payload: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, None where the body has nothing there."""
    value: Any = payload
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _field(
    payload: Mapping[str, Any], fields: Mapping[str, str], name: str, *, ids: bool = False
) -> str | None:
    path = fields.get(name)
    return None if path is None else _text(payload, path, ids=ids)


def _text(
    payload: Mapping[str, Any], path: str, *, required: bool = False, ids: bool = False
) -> str | None:
    """A string at `path` (or an integer, for ids); blank counts as absent."""
    value = _lookup(payload, path)
    if ids and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is not None and not isinstance(value, str):
        wanted = "a string or integer" if ids else "a string"
        raise SchemaError(path, f"expected {wanted}, got {type(value).__name__}")
    if value is None or not value.strip():
        if required:
            raise SchemaError(path, "is required")
        return None
    return value


def _categories(payload: Mapping[str, Any], path: str | None) -> tuple[str, ...]:
    if path is None:
        return ()
    value = _lookup(payload, path)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(item for item in value if item.strip())
    text = _text(payload, path)
    return (text,) if text else ()


def _time(payload: Mapping[str, Any], path: str | None) -> datetime | None:
    if path is None:
        return None
    value = _lookup(payload, path)
    if value is None:
        return None
    if isinstance(value, str):
        return parse_rfc3339(value, path)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) >= _MS_FROM else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise SchemaError(path, "is not a valid Unix time") from None
    raise SchemaError(path, "expected an RFC 3339 time or a Unix time")
