"""Twitch EventSub's webhook transport: its headers, its signature, and its three messages.

From Twitch's "Handling Webhook Events" (dev.twitch.tv/docs/eventsub/handling-webhook-events):
every message carries `Twitch-Eventsub-Message-Id`, `-Message-Retry`, `-Message-Type`
(`notification`, `webhook_callback_verification` or `revocation`), `-Message-Signature`,
`-Message-Timestamp`, `-Subscription-Type` and `-Subscription-Version`. The signature is
"sha256=" + hex(HMAC-SHA256(secret, message id + timestamp + raw body)): "the order is
important". "Make sure the value in the timestamp field isn't older than 10 minutes", and
"keep a history of the message IDs" to drop duplicates (a resend keeps its id).

Everything here is pure: the notifications become the bot's Events, given what the
source knows of the broadcaster (its avatar) at that moment.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from bot import events as ev
from bot.durations import format_duration
from bot.errors import AuthError, SchemaError
from bot.events import Event, LiveInfo
from bot.sources.base import SIGNATURE_MISMATCH, Fields, WebhookRequest, parse_rfc3339

MESSAGE_ID: Final = "Twitch-Eventsub-Message-Id"
MESSAGE_RETRY: Final = "Twitch-Eventsub-Message-Retry"
MESSAGE_TYPE: Final = "Twitch-Eventsub-Message-Type"
MESSAGE_SIGNATURE: Final = "Twitch-Eventsub-Message-Signature"
MESSAGE_TIMESTAMP: Final = "Twitch-Eventsub-Message-Timestamp"
SUBSCRIPTION_TYPE: Final = "Twitch-Eventsub-Subscription-Type"

NOTIFICATION: Final = "notification"
VERIFICATION: Final = "webhook_callback_verification"
REVOCATION: Final = "revocation"

#: "Make sure the value in the timestamp field isn't older than 10 minutes." A message
#: dated ahead of this clock by as much is refused too: this clock is off.
MAX_AGE: Final = timedelta(minutes=10)

PLATFORM: Final = "twitch"
#: What a viewer opens; logins are the URL path on twitch.tv.
CHANNEL_URL: Final = "https://twitch.tv/{login}"
#: The size the cover is asked for: Discord and Telegram show 16:9 images up to this wide.
THUMBNAIL_SIZE: Final = (1280, 720)
#: Get Streams' `thumbnail_url`, whose form is fixed by the login ("live_user_<login>");
#: known before Helix lists the stream (it lags `stream.online` by seconds), so the first
#: card has its cover at once. Helix's own value replaces it when it comes.
PREDICTED_THUMBNAIL: Final = (
    "https://static-cdn.jtvnw.net/previews-ttv/live_user_{login}-{width}x{height}.jpg"
)

#: stream.online's `type`: "Valid values are: live, playlist, watch_party, premiere, rerun."
STREAM_TYPES: Final = ("live", "playlist", "watch_party", "premiere", "rerun")

#: The subscriptions each followed channel gets: (type, version). channel.update v1 is
#: deprecated; v2 carries category_id/category_name and fires while offline too.
SUBSCRIBED: Final = (("stream.online", "1"), ("stream.offline", "1"), ("channel.update", "2"))

#: Twitch event type -> the bot's kind. channel.update reports the channel's whole
#: state, so the store derives title_change / category_change from it (while live).
KIND_BY_TYPE: Final = {
    "stream.online": ev.LIVE_START,
    "stream.offline": ev.LIVE_END,
    "channel.update": ev.STREAM_UPDATE,
}


def signature(secret: bytes, message_id: str, timestamp: str, body: bytes) -> str:
    """Twitch's `Twitch-Eventsub-Message-Signature` for one message."""
    mac = hmac.new(secret, message_id.encode() + timestamp.encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: bytes, request: WebhookRequest) -> None:
    """Raise AuthError unless the message is signed with `secret` and fresh enough."""
    if not secret:
        raise AuthError(reason="this source has no secret")
    parts = {}
    for header in (MESSAGE_ID, MESSAGE_TIMESTAMP, MESSAGE_SIGNATURE):
        value = request.header(header)
        if not value:
            raise AuthError(reason=f"no {header} header")
        parts[header] = value
    expected = signature(secret, parts[MESSAGE_ID], parts[MESSAGE_TIMESTAMP], request.body)
    # Bytes on both sides: compare_digest refuses a str with non-ASCII characters.
    if not hmac.compare_digest(expected.encode(), parts[MESSAGE_SIGNATURE].strip().encode()):
        raise AuthError(reason=SIGNATURE_MISMATCH)
    try:
        sent = parse_rfc3339(parts[MESSAGE_TIMESTAMP], MESSAGE_TIMESTAMP)
    except SchemaError:
        raise AuthError(reason=f"{MESSAGE_TIMESTAMP} is not an RFC 3339 time") from None
    gap = request.received_at - sent
    if abs(gap) > MAX_AGE:
        said = "old" if gap > timedelta(0) else "ahead of this clock"
        raise AuthError(
            reason=f"the message is {format_duration(abs(gap))} {said}; Twitch's limit is"
            f" {format_duration(MAX_AGE)} (a replay, or a clock that is off)"
        )


@dataclass(frozen=True, slots=True)
class Message:
    """One EventSub message: its type, id and time, and its subscription's fields."""

    type: str
    id: str
    timestamp: datetime
    subscription: Fields

    @property
    def subscription_type(self) -> str:
        """`stream.online`, `channel.update`, ..."""
        return self.subscription.req_str("type")

    @property
    def broadcaster_id(self) -> str | None:
        """The subscription's condition's broadcaster, when it has one."""
        condition = self.subscription.obj("condition")
        return condition.id_str("broadcaster_user_id") if condition is not None else None


def message(payload: Fields, request: WebhookRequest, fallback_id: str) -> Message:
    """The message a request carries. Without Twitch's headers (a sample file given to
    `render --event`) it is a notification with `fallback_id`, at arrival time."""
    stamp = request.header(MESSAGE_TIMESTAMP)
    return Message(
        type=(request.header(MESSAGE_TYPE) or NOTIFICATION).strip().lower(),
        id=(request.header(MESSAGE_ID) or "").strip() or fallback_id,
        timestamp=parse_rfc3339(stamp, MESSAGE_TIMESTAMP) if stamp else request.received_at,
        subscription=payload.req_obj("subscription"),
    )


@dataclass(frozen=True, slots=True)
class Broadcaster:
    """Who an event is about: Twitch's user id, login and display name."""

    id: str
    login: str
    name: str

    @classmethod
    def of(cls, event: Fields) -> Broadcaster:
        """The `broadcaster_user_*` fields every event of ours has."""
        login = event.req_str("broadcaster_user_login").strip().lower()
        return cls(
            id=event.id_str("broadcaster_user_id", required=True) or "",
            login=login,
            name=(event.string("broadcaster_user_name") or "").strip() or login,
        )


def base_event(
    source: str, message: Message, kind: str, who: Broadcaster, request: WebhookRequest
) -> Event:
    """The fields every Twitch event shares."""
    return Event(
        source=source,
        event_id=message.id,
        kind=kind,
        occurred_at=message.timestamp,
        received_at=request.received_at,
        platform=PLATFORM,
        channel=who.login,
        display_name=who.name,
        url=CHANNEL_URL.format(login=who.login),
    )


def online(
    source: str,
    message: Message,
    event: Fields,
    request: WebhookRequest,
    *,
    avatar: str | None,
) -> Event:
    """`stream.online` v1 -> live_start. Its id is the stream's: Twitch has been seen to
    send one stream's online twice under two message ids, and it must post one card."""
    who = Broadcaster.of(event)
    stream_id = event.id_str("id", required=True) or ""
    started = event.time("started_at") or message.timestamp
    width, height = THUMBNAIL_SIZE
    return base_event(source, message, ev.LIVE_START, who, request).with_changes(
        event_id=online_event_id(stream_id),
        live=LiveInfo(
            cover=PREDICTED_THUMBNAIL.format(login=who.login, width=width, height=height),
            avatar=avatar,
            uid=who.id,
            uname=who.login,
            status=event.string("type") or "live",
            live_id=stream_id,
            start_time=started,
        ),
    )


def online_event_id(stream_id: str) -> str:
    """The event id of a stream's start, whoever tells of it (the webhook, or the check
    of Helix at start): one id, so it is stored and notified once."""
    return f"stream.online/{stream_id}"


def offline(source: str, message: Message, event: Fields, request: WebhookRequest) -> Event:
    """`stream.offline` v1 -> live_end; the duration comes from the stored start."""
    return base_event(source, message, ev.LIVE_END, Broadcaster.of(event), request)


def channel_update(
    source: str,
    message: Message,
    event: Fields,
    request: WebhookRequest,
    *,
    avatar: str | None,
) -> Event:
    """`channel.update` v2 -> the channel's state (title, category): changes while live
    notify, while offline they only update what the next card will say."""
    who = Broadcaster.of(event)
    category = (event.string("category_name") or "").strip()
    return base_event(source, message, ev.STREAM_UPDATE, who, request).with_changes(
        live=LiveInfo(
            title=event.string("title"),
            categories=(category,) if category else (),
            avatar=avatar,
            uid=who.id,
            uname=who.login,
        ),
    )


def thumbnail(template: str | None) -> str | None:
    """Get Streams' `thumbnail_url` with its `{width}x{height}` filled in."""
    if not template:
        return None
    width, height = THUMBNAIL_SIZE
    return template.replace("{width}", str(width)).replace("{height}", str(height))


def wanted_type(stream_type: str | None, types: Collection[str]) -> bool:
    """Whether a stream.online of this type notifies (`types`, by default only "live")."""
    return (stream_type or "live") in types
