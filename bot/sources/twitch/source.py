"""The Twitch source: EventSub webhooks in, with the subscriptions managed by the bot.

`verify` checks Twitch's signature and the message's age; `parse` answers the challenge
itself (the raw string, text/plain, nothing stored), acts on a revocation (answered 204)
and turns notifications into events: `stream.online` -> live_start (only the `types` the
config wants), `stream.offline` -> live_end, `channel.update` -> the channel's state
(changes notify while live; offline they only update the next card). Streamer keys are
`twitch/<login>`, so routes, mutes and subscriptions written for a recorder's Twitch
streams keep working. Its own work (subscriptions, Helix lookups) is `follow.Follower`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final

from bot.errors import SchemaError
from bot.sources.base import Fields, Ignored, Parsed, SourceAnswer, WebhookRequest, body_digest
from bot.sources.service import SourceHost
from bot.sources.spec import (
    DurationOption,
    SecretOption,
    StringListOption,
    TextOption,
    UrlOption,
)
from bot.sources.twitch import eventsub
from bot.sources.twitch.follow import Follower, Settings
from bot.sources.twitch.helix import EventSubSubscription

if TYPE_CHECKING:
    from bot.config import SourceConfig

DEFAULT_API_URL: Final = "https://api.twitch.tv/helix"
DEFAULT_AUTH_URL: Final = "https://id.twitch.tv/oauth2"

CLIENT_ID: Final = TextOption("client_id")
CLIENT_SECRET: Final = SecretOption("client_secret")
CALLBACK_URL: Final = UrlOption("callback_url")
CHANNELS: Final = StringListOption("channels")
TYPES: Final = StringListOption("types", default=("live",))
API_URL: Final = UrlOption("api_url")
AUTH_URL: Final = UrlOption("auth_url")
#: "On start and every reconcile_interval (default 1h)" (issue 17): a subscription lost
#: on Twitch's side is noticed within the hour even without a revocation message.
RECONCILE_INTERVAL: Final = DurationOption(
    "reconcile_interval", default=timedelta(hours=1), positive=True
)


class TwitchSource:
    """Verifies and parses Twitch EventSub webhooks; runs its subscriptions beside them."""

    kind: ClassVar[str] = "twitch"

    def __init__(self, config: SourceConfig) -> None:
        self._name = config.name
        self._secret = config.secret.encode()
        self._types = frozenset(TYPES.get(config))
        self.follower = Follower(
            Settings(
                source=config.name,
                client_id=CLIENT_ID.get(config),
                client_secret=CLIENT_SECRET.get(config),
                secret=config.secret,
                callback_url=CALLBACK_URL.get(config),
                channels=tuple(login.lower() for login in CHANNELS.get(config)),
                api_url=API_URL.get(config) or DEFAULT_API_URL,
                auth_url=AUTH_URL.get(config) or DEFAULT_AUTH_URL,
                reconcile_interval=RECONCILE_INTERVAL.get(config),
                types=TYPES.get(config),
            )
        )

    @property
    def name(self) -> str:
        """The configured source name."""
        return self._name

    def __repr__(self) -> str:
        return f"TwitchSource(name={self._name!r})"

    def verify(self, request: WebhookRequest) -> None:
        """Twitch's HMAC over message id, timestamp and raw body; at most 10 minutes old."""
        eventsub.verify(self._secret, request)

    def parse(self, payload: Mapping[str, Any], request: WebhookRequest) -> Parsed:
        """The event a notification makes, or the answer to a challenge or revocation."""
        fields = Fields(payload)
        message = eventsub.message(fields, request, body_digest(request.body))
        if message.type == eventsub.VERIFICATION:
            challenge = fields.req_str("challenge")
            sub_id = message.subscription.string("id")
            if sub_id:
                self.follower.challenged(sub_id)
            # "the response body must contain the raw challenge value": nothing else.
            return SourceAnswer(200, challenge, "text/plain")
        if message.type == eventsub.REVOCATION:
            self.follower.revoked(_subscription(message.subscription))
            return SourceAnswer(204)
        if message.type != eventsub.NOTIFICATION:
            raise SchemaError(
                eventsub.MESSAGE_TYPE,
                f"unknown message type {message.type[:64]!r} (expected notification,"
                " webhook_callback_verification or revocation)",
            )
        sub_type = message.subscription_type
        event = fields.req_obj("event")
        if sub_type == "stream.online":
            stream_type = event.string("type")
            if not eventsub.wanted_type(stream_type, self._types):
                return Ignored(
                    f"a stream.online of type {stream_type!r}; types = {sorted(self._types)}"
                )
            who = eventsub.Broadcaster.of(event)
            start = eventsub.online(
                self._name, message, event, request, avatar=self.follower.avatar(who.login)
            )
            if start.live is not None and start.live.live_id:
                self.follower.went_live(who, start.live.live_id)
            return start
        if sub_type == "stream.offline":
            end = eventsub.offline(self._name, message, event, request)
            who = eventsub.Broadcaster.of(event)
            self.follower.went_offline(who.id)
            self.follower.ended(who)
            return end
        if sub_type == "channel.update":
            who = eventsub.Broadcaster.of(event)
            update = eventsub.channel_update(
                self._name, message, event, request, avatar=self.follower.avatar(who.login)
            )
            self.follower.channel_updated(who.id)
            return update
        return None

    async def run(self, host: SourceHost, stop: asyncio.Event) -> None:
        """Keep the subscriptions right until `stop` (follow.Follower)."""
        await self.follower.run(host, stop)

    async def followed(self, pattern: str, *, added: bool) -> str | None:
        """/subscribe twitch/<login> subscribes at Twitch; /unsubscribe stops it."""
        return await self.follower.followed(pattern, added=added)

    async def standby(self, host: SourceHost, stop: asyncio.Event) -> None:
        """Another process keeps the subscriptions; the webhooks need nothing of it."""
        await self.follower.standby(host, stop)


def _subscription(sub: Fields) -> EventSubSubscription:
    """The `subscription` object of a message, as the Helix client reads it too."""
    condition = sub.obj("condition")
    transport = sub.obj("transport")
    return EventSubSubscription(
        id=sub.req_str("id"),
        type=sub.req_str("type"),
        version=sub.string("version") or "",
        status=sub.string("status") or "",
        broadcaster_user_id=condition.id_str("broadcaster_user_id") if condition else None,
        callback=transport.string("callback") if transport else None,
        created_at=sub.string("created_at"),
    )
