"""What every webhook source provides, and the typed JSON readers their parsers share."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, TypeAlias

from bot.errors import SchemaError

if TYPE_CHECKING:
    from bot.events import Event

#: AuthError's reason (for the log) when a signature does not match the body.
SIGNATURE_MISMATCH: Final = (
    "the signature does not match the body (the secret here differs from the provider's)"
)


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """The parts of an HTTP request a source may look at; `body` is the raw bytes."""

    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    received_at: datetime

    def header(self, name: str) -> str | None:
        """A header by name, case-insensitively (aiohttp's mapping is; a plain dict is not)."""
        value = self.headers.get(name)
        if value is not None:
            return value
        lowered = name.lower()
        for key, item in self.headers.items():
            if key.lower() == lowered:
                return item
        return None


@dataclass(frozen=True, slots=True)
class SourceAnswer:
    """What a source answers by itself, storing nothing: a handshake (Twitch's challenge,
    which must come back as the raw text) or a notice it acts on itself (a revocation)."""

    status: int
    text: str = ""
    content_type: str = "text/plain"


@dataclass(frozen=True, slots=True)
class Ignored:
    """A payload the source understood and chose not to record, and why (logged once):
    a stream type the config leaves out, say. Answered 202 "ignored" like an unknown type."""

    reason: str


class Source(Protocol):
    """A webhook provider: checks who sent a request, then turns its JSON into an Event.

    `verify` runs on the raw request before any parsing and raises AuthError. `parse`
    returns None for an event type the provider documents nothing useful for (the web
    layer answers 202 "ignored"), `Ignored` for one it knows and leaves out on purpose,
    a `SourceAnswer` for a message that is answered, not stored, and raises SchemaError
    naming the field path for a payload of the wrong shape.
    """

    kind: ClassVar[str]

    @property
    def name(self) -> str:
        """The configured source name (the URL path segment)."""
        ...

    def verify(self, request: WebhookRequest) -> None:
        """Raise AuthError unless the request proves it knows the source's secret."""
        ...

    def parse(self, payload: Mapping[str, Any], request: WebhookRequest) -> Parsed:
        """The normalized event for this payload, or None for a type to ignore."""
        ...


#: What `Source.parse` may return.
Parsed: TypeAlias = "Event | SourceAnswer | Ignored | None"


def body_digest(body: bytes) -> str:
    """A stable id for a payload that carries none: retries of the same body dedupe."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def is_body_digest(event_id: str) -> bool:
    """Whether an event id is a `body_digest`, made up by the bot, not the sender's own."""
    return _DIGEST.fullmatch(event_id) is not None


class Fields:
    """Typed access to one JSON object, raising SchemaError with the full field path.

    `Fields(payload).obj("data").string("channel")` fails with "data.channel: ..." so a
    sender sees exactly which field is wrong.
    """

    def __init__(self, data: Any, path: str = "") -> None:
        if not isinstance(data, Mapping):
            raise SchemaError(path or "body", f"expected an object, got {_type_name(data)}")
        self.data: Mapping[str, Any] = data
        self.path = path

    def _sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        """True when `key` is present and not null."""
        return self.data.get(key) is not None

    def _get(self, key: str, expected: type | tuple[type, ...], label: str, required: bool) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                raise SchemaError(self._sub(key), "is required")
            return None
        # bool is an int in Python but never a number in a payload.
        if isinstance(value, bool) and bool not in _as_tuple(expected):
            raise SchemaError(self._sub(key), f"expected {label}, got boolean")
        if not isinstance(value, expected):
            raise SchemaError(self._sub(key), f"expected {label}, got {_type_name(value)}")
        return value

    def string(self, key: str, *, required: bool = False) -> str | None:
        """A string field (None when absent or null, unless required)."""
        value: str | None = self._get(key, str, "a string", required)
        return value

    def req_str(self, key: str) -> str:
        """A string field that must be present and non-empty."""
        value = self._get(key, str, "a string", True)
        if not value.strip():
            raise SchemaError(self._sub(key), "must not be empty")
        return str(value)

    def id_str(self, key: str, *, required: bool = False) -> str | None:
        """An identifier that senders write as a string or an integer."""
        value = self._get(key, (str, int), "a string or integer", required)
        if value is None:
            return None
        if required and isinstance(value, str) and not value.strip():
            raise SchemaError(self._sub(key), "must not be empty")
        return str(value)

    def number(self, key: str, *, required: bool = False) -> float | None:
        """A JSON number that fits a float (an integer wider than one, or 1e400, does not)."""
        value = self._get(key, (int, float), "a number", required)
        if value is None:
            return None
        try:
            number = float(value)
        except OverflowError:
            raise SchemaError(self._sub(key), "is out of range") from None
        # json reads 1e400 as inf: not a value any sender meant, nor one that stores.
        if not math.isfinite(number):
            raise SchemaError(self._sub(key), "is out of range")
        return number

    def boolean(self, key: str, *, required: bool = False) -> bool | None:
        """A JSON boolean."""
        value: bool | None = self._get(key, bool, "a boolean", required)
        return value

    def obj(self, key: str, *, required: bool = False) -> Fields | None:
        """A nested object."""
        value = self._get(key, Mapping, "an object", required)
        return None if value is None else Fields(value, self._sub(key))

    def req_obj(self, key: str) -> Fields:
        """A nested object that must be present."""
        value = self._get(key, Mapping, "an object", True)
        return Fields(value, self._sub(key))

    def str_list(self, key: str) -> tuple[str, ...]:
        """A list of strings (empty when absent); null items are dropped."""
        value = self._get(key, list, "a list of strings", False)
        if value is None:
            return ()
        out: list[str] = []
        for index, item in enumerate(value):
            if item is None:
                continue
            if not isinstance(item, str):
                raise SchemaError(
                    f"{self._sub(key)}[{index}]", f"expected a string, got {_type_name(item)}"
                )
            out.append(item)
        return tuple(out)

    def array(self, key: str) -> Sequence[Any]:
        """A list of anything (empty when absent)."""
        value = self._get(key, list, "a list", False)
        return value if value is not None else ()

    def time(self, key: str, *, required: bool = False) -> datetime | None:
        """An RFC 3339 timestamp string, returned as an aware UTC datetime."""
        value = self.string(key, required=required)
        if value is None:
            return None
        return parse_rfc3339(value, self._sub(key))

    def epoch_ms(self, key: str, *, required: bool = False) -> datetime | None:
        """A Unix time in milliseconds, returned as an aware UTC datetime."""
        value = self.number(key, required=required)
        if value is None:
            return None
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise SchemaError(self._sub(key), "is not a valid time in milliseconds") from None


def parse_rfc3339(value: str, path: str) -> datetime:
    """Parse an RFC 3339 time, including nanosecond fractions; naive times count as UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python reads at most microseconds; senders like Go write nanoseconds.
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise SchemaError(path, f"{value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        # 9999-12-31T23:59:59-01:00 is a valid local time whose UTC instant is in year
        # 10000, which no datetime holds (likewise year 1 with a positive offset).
        return parsed.astimezone(UTC)
    except OverflowError:
        raise SchemaError(
            path, f"{value!r} is out of range (in UTC it is before year 1 or after 9999)"
        ) from None


def _as_tuple(expected: type | tuple[type, ...]) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
