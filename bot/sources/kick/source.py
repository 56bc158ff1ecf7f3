"""The Kick source: webhooks checked with Kick's public key, subscriptions kept by the bot.

`verify` checks the RSA signature (with the key `follow.Follower` keeps: pinned in config,
or fetched from Kick and cached in the database) and the message's age; `parse` turns
`livestream.status.updated` into live_start / live_end and `livestream.metadata.updated`
into the stream's state. Streamer keys are `kick/<channel slug>`, links
`https://kick.com/<slug>`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final

from bot import events as ev
from bot.sources.base import Fields, Parsed, WebhookRequest, body_digest
from bot.sources.kick import webhooks
from bot.sources.kick.follow import Follower, Settings
from bot.sources.service import SourceHost
from bot.sources.spec import (
    DurationOption,
    SecretOption,
    StringListOption,
    TextOption,
    UrlOption,
)

if TYPE_CHECKING:
    from bot.config import SourceConfig

DEFAULT_API_URL: Final = "https://api.kick.com/public/v1"
DEFAULT_AUTH_URL: Final = "https://id.kick.com/oauth"

CLIENT_ID: Final = TextOption("client_id")
CLIENT_SECRET: Final = SecretOption("client_secret")
CHANNELS: Final = StringListOption("channels")
PUBLIC_KEY: Final = TextOption("public_key")
API_URL: Final = UrlOption("api_url")
AUTH_URL: Final = UrlOption("auth_url")
#: "a slow poll of GET /livestreams ... (default every 5 minutes, poll_interval)".
POLL_INTERVAL: Final = DurationOption("poll_interval", default=timedelta(minutes=5), positive=True)
#: Kick unsubscribes an app whose webhook failed for a day; hourly passes heal that.
RECONCILE_INTERVAL: Final = DurationOption(
    "reconcile_interval", default=timedelta(hours=1), positive=True
)


class KickSource:
    """Verifies and parses Kick webhooks; runs its subscriptions and poll beside them."""

    kind: ClassVar[str] = "kick"

    def __init__(self, config: SourceConfig) -> None:
        self._name = config.name
        self.follower = Follower(
            Settings(
                source=config.name,
                client_id=CLIENT_ID.get(config),
                client_secret=CLIENT_SECRET.get(config),
                channels=tuple(slug.lower() for slug in CHANNELS.get(config)),
                api_url=API_URL.get(config) or DEFAULT_API_URL,
                auth_url=AUTH_URL.get(config) or DEFAULT_AUTH_URL,
                reconcile_interval=RECONCILE_INTERVAL.get(config),
                poll_interval=POLL_INTERVAL.get(config),
                pinned_key=PUBLIC_KEY.get(config) or None,
            )
        )

    @property
    def name(self) -> str:
        """The configured source name."""
        return self._name

    def __repr__(self) -> str:
        return f"KickSource(name={self._name!r})"

    def verify(self, request: WebhookRequest) -> None:
        """Kick's RSA signature over id, timestamp and raw body; at most a day old."""
        webhooks.verify(self.follower.key, request, loading=not self.follower.key_read)

    def parse(self, payload: Mapping[str, Any], request: WebhookRequest) -> Parsed:
        """The event a livestream webhook makes; None for Kick's other events."""
        fields = Fields(payload)
        message_id = (request.header(webhooks.MESSAGE_ID) or "").strip() or body_digest(
            request.body
        )
        kind = webhooks.event_type(fields, request)
        if kind == webhooks.STATUS_UPDATED:
            event = webhooks.status_updated(
                self._name, message_id, fields, request, same_as=self.follower.known_start
            )
            live = event.live
            if event.kind == ev.LIVE_START and live is not None and live.start_time:
                self.follower.went_live(
                    live.uid or "", event.channel or "", live.start_time, sent=event.occurred_at
                )
            elif live is not None:
                self.follower.went_offline(live.uid or "")
            return event
        if kind == webhooks.METADATA_UPDATED:
            event = webhooks.metadata_updated(self._name, message_id, fields, request)
            if event.live is not None and event.live.uid:
                self.follower.metadata_came(event.live.uid, sent=event.occurred_at)
            return event
        return None

    async def run(self, host: SourceHost, stop: asyncio.Event) -> None:
        """Keep the key and the subscriptions, and poll, until `stop` (follow.Follower)."""
        await self.follower.run(host, stop)

    async def followed(self, pattern: str, *, added: bool) -> str | None:
        """/subscribe kick/<channel> subscribes at Kick; /unsubscribe stops it."""
        return await self.follower.followed(pattern, added=added)

    async def standby(self, host: SourceHost, stop: asyncio.Event) -> None:
        """Another process keeps the key: read it from the database as it changes."""
        await self.follower.standby(host, stop)
