"""Kick's webhooks: their headers, their RSA signature, and the two livestream events.

From Kick's docs (KickEngineering/KickDevDocs `events/webhook-security.md`): each
delivery carries `Kick-Event-Message-Id` (a ULID, "idempotent key"),
`Kick-Event-Subscription-Id`, `Kick-Event-Signature` (base64), `Kick-Event-Message-Timestamp`
(RFC 3339), `Kick-Event-Type` and `Kick-Event-Version`. The signature is Kick's private
key's over `"{message_id}.{timestamp}.{raw body}"`, checked with its public key: RSA
PKCS#1 v1.5 with SHA-256 (`rsa.VerifyPKCS1v15(publicKey, crypto.SHA256, ...)` in their Go
example). Kick documents neither a retry schedule nor a replay window, only that it
unsubscribes an app whose webhook kept failing "for over a day"; so a day is the longest
a genuine message is taken to be late: the bot refuses only messages older than that and
dedupes on the message id (the "idempotent key").

`livestream.status.updated` (`events/event-types.md`) has no stream id: a start is named
by broadcaster and `started_at`, so the webhook's and the poll's starts of one stream are
one event, and its end likewise.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bot import events as ev
from bot.durations import format_duration
from bot.errors import AuthError, SchemaError, SourceNotReady
from bot.events import Event, LiveInfo
from bot.sources.base import Fields, WebhookRequest, parse_rfc3339

MESSAGE_ID: Final = "Kick-Event-Message-Id"
SUBSCRIPTION_ID: Final = "Kick-Event-Subscription-Id"
SIGNATURE: Final = "Kick-Event-Signature"
TIMESTAMP: Final = "Kick-Event-Message-Timestamp"
EVENT_TYPE: Final = "Kick-Event-Type"
EVENT_VERSION: Final = "Kick-Event-Version"

STATUS_UPDATED: Final = "livestream.status.updated"
METADATA_UPDATED: Final = "livestream.metadata.updated"
#: The events each followed channel is subscribed to, with their version.
SUBSCRIBED: Final = ((STATUS_UPDATED, 1), (METADATA_UPDATED, 1))

#: Kick gives up on a failing webhook after "over a day" (webhook-security.md); a message
#: older than that is taken for a replay.
MAX_AGE: Final = timedelta(hours=24)

PLATFORM: Final = "kick"
CHANNEL_URL: Final = "https://kick.com/{slug}"

#: Kick event type -> the bot's kind (a status update is a start or an end by is_live).
KIND_BY_TYPE: Final = {
    STATUS_UPDATED: ev.LIVE_START,
    METADATA_UPDATED: ev.STREAM_UPDATE,
}


class KeyProblem(ValueError):
    """Text that is not an RSA public key in PEM form."""


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """Kick's public key from its PEM text ("-----BEGIN PUBLIC KEY-----")."""
    try:
        key = serialization.load_pem_public_key(pem.strip().encode())
    except (ValueError, TypeError):
        raise KeyProblem("is not a PEM public key (-----BEGIN PUBLIC KEY----- ...)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyProblem("is not an RSA public key")
    return key


def verify(
    key: rsa.RSAPublicKey | None, request: WebhookRequest, *, loading: bool = False
) -> None:
    """Raise AuthError unless Kick's key signed this message, within the last day;
    SourceNotReady while the key kept in the database is still being read (at start)."""
    if key is None and loading:
        raise SourceNotReady("Kick's public key is being loaded; retry in a few seconds")
    if key is None:
        raise AuthError(
            reason="Kick's public key is not known yet (it is fetched from Kick's API at"
            " start; public_key pins it)"
        )
    parts: dict[str, str] = {}
    for header in (MESSAGE_ID, TIMESTAMP, SIGNATURE):
        value = request.header(header)
        if not value:
            raise AuthError(reason=f"no {header} header")
        parts[header] = value.strip()
    try:
        signature = base64.b64decode(parts[SIGNATURE], validate=True)
    except (binascii.Error, ValueError):
        raise AuthError(reason=f"{SIGNATURE} is not base64") from None
    signed = f"{parts[MESSAGE_ID]}.{parts[TIMESTAMP]}.".encode() + request.body
    try:
        key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise AuthError(
            reason="the signature does not verify with Kick's public key (not sent by Kick,"
            " or changed on the way)"
        ) from None
    try:
        sent = parse_rfc3339(parts[TIMESTAMP], TIMESTAMP)
    except SchemaError:
        raise AuthError(reason=f"{TIMESTAMP} is not an RFC 3339 time") from None
    gap = request.received_at - sent
    if abs(gap) > MAX_AGE:
        said = "old" if gap > timedelta(0) else "ahead of this clock"
        raise AuthError(
            reason=f"the message is {format_duration(abs(gap))} {said}; Kick's messages are"
            " taken for a day at most (a replay, or a clock that is off)"
        )


@dataclass(frozen=True, slots=True)
class Broadcaster:
    """Who an event is about: Kick's user id, channel slug, name and picture."""

    user_id: str
    slug: str
    name: str
    picture: str | None

    @classmethod
    def of(cls, payload: Fields) -> Broadcaster:
        """The `broadcaster` object every livestream event has."""
        who = payload.req_obj("broadcaster")
        slug = who.req_str("channel_slug").strip().lower()
        return cls(
            user_id=who.id_str("user_id", required=True) or "",
            slug=slug,
            name=(who.string("username") or "").strip() or slug,
            picture=who.string("profile_picture") or None,
        )


def moment(value: datetime) -> str:
    """A time as the part of an event id: UTC, to the second, whatever offset it came in."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def start_id(user_id: str, started: datetime) -> str:
    """The event id of a stream's start, from the webhook or the poll alike."""
    return f"live/{user_id}/{moment(started)}"


def end_id(user_id: str, started: datetime | None, fallback: str) -> str:
    """The event id of a stream's end (`fallback`, the message id, when its start is
    unknown)."""
    return f"end/{user_id}/{moment(started)}" if started is not None else fallback


def event_type(payload: Fields, request: WebhookRequest) -> str:
    """The event's type: its header, or (a sample file with no headers) its shape."""
    header = request.header(EVENT_TYPE)
    if header:
        return header.strip().lower()
    return METADATA_UPDATED if payload.has("metadata") else STATUS_UPDATED


def base_event(
    source: str, event_id: str, kind: str, who: Broadcaster, request: WebhookRequest
) -> Event:
    """The fields every Kick event shares."""
    stamp = request.header(TIMESTAMP)
    occurred = parse_rfc3339(stamp, TIMESTAMP) if stamp else request.received_at
    return Event(
        source=source,
        event_id=event_id,
        kind=kind,
        occurred_at=occurred,
        received_at=request.received_at,
        platform=PLATFORM,
        channel=who.slug,
        display_name=who.name,
        url=CHANNEL_URL.format(slug=who.slug),
    )


def status_updated(
    source: str,
    message_id: str,
    payload: Fields,
    request: WebhookRequest,
    *,
    same_as: Callable[[str, datetime], datetime] | None = None,
) -> Event:
    """`livestream.status.updated` v1: is_live true -> live_start, false -> live_end.

    `same_as(user_id, started_at)` gives the start already known for that stream (the
    poll's, seconds apart), so that both name one stream alike."""
    who = Broadcaster.of(payload)
    live = payload.boolean("is_live", required=True)
    started = payload.time("started_at")
    if started is not None and same_as is not None:
        started = same_as(who.user_id, started)
    info = LiveInfo(
        title=payload.string("title"),
        avatar=who.picture,
        uid=who.user_id,
        uname=who.slug,
        start_time=started,
    )
    if live:
        if started is None:
            raise SchemaError("started_at", "is required when is_live is true")
        event = base_event(source, start_id(who.user_id, started), ev.LIVE_START, who, request)
        return event.with_changes(live=info)
    ended = payload.time("ended_at")
    event = base_event(source, end_id(who.user_id, started, message_id), ev.LIVE_END, who, request)
    return event.with_changes(live=info, started_at=started, ended_at=ended)


def metadata_updated(
    source: str, message_id: str, payload: Fields, request: WebhookRequest
) -> Event:
    """`livestream.metadata.updated` v1 -> the stream's state (title, category)."""
    who = Broadcaster.of(payload)
    metadata = payload.req_obj("metadata")
    category = metadata.obj("category")
    name = (category.string("name") or "").strip() if category is not None else ""
    event = base_event(source, message_id, ev.STREAM_UPDATE, who, request)
    return event.with_changes(
        live=LiveInfo(
            title=metadata.string("title"),
            categories=(name,) if name else (),
            avatar=who.picture,
            uid=who.user_id,
            uname=who.slug,
        )
    )
