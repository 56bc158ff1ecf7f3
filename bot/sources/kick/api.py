"""Kick's public API for the calls the Kick source makes.

From Kick's docs (KickEngineering/KickDevDocs: `getting-started/generating-tokens-oauth2-
flow.md`, `apis/public-key.md`, `apis/channels.md`, `apis/livestreams.md`,
`events/subscribe-to-events.md` and the OpenAPI document they embed): an app access token
by client credentials at `{auth_url}/token`; `GET /public-key`; `GET /channels?slug=`
(slug -> broadcaster_user_id); `GET /livestreams?broadcaster_user_id=`; and
`GET/POST/DELETE /events/subscriptions`. Answers are `{"data": ..., "message": ...}`.
The token, 401 and 429 handling and the errors are `bot.sources.appclient`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from bot.sources.appclient import (
    ApiError,
    AppClient,
    CredentialsRefused,
    batches,
    data_items,
    shape_error,
    text_field,
    time_field,
)

__all__ = [
    "ApiError",
    "CredentialsRefused",
    "KickApi",
    "KickChannel",
    "KickLivestream",
    "KickSubscription",
]

#: Ids or slugs per call. The docs' API pages only embed Kick's OpenAPI file (not mirrored
#: here); 50 per call is what public clients of it send, and a smaller batch is harmless.
BATCH: Final = 50
_KICK: Final = "Kick"


@dataclass(frozen=True, slots=True)
class KickChannel:
    """Get Channels' fields the bot uses."""

    user_id: str
    slug: str
    title: str
    category: str


@dataclass(frozen=True, slots=True)
class KickLivestream:
    """Get Livestreams' fields the bot uses."""

    user_id: str
    slug: str
    title: str
    category: str
    started_at: datetime | None
    thumbnail: str | None
    profile_picture: str | None


@dataclass(frozen=True, slots=True)
class KickSubscription:
    """One event subscription of the app."""

    id: str
    user_id: str
    event: str
    version: str


class KickApi(AppClient):
    """One Kick app's client (an app access token, refreshed)."""

    provider = "Kick"

    async def public_key(self) -> str:
        """Kick's public key (PEM) that signs the webhooks; needs no token."""
        _status, body = await self.call("GET", "/public-key", authorized=False)
        data = body.get("data") if isinstance(body, Mapping) else None
        key = data.get("public_key") if isinstance(data, Mapping) else None
        if not isinstance(key, str) or "PUBLIC KEY" not in key:
            raise shape_error(_KICK, "no public_key")
        return key

    async def channels(self, slugs: Iterable[str]) -> dict[str, KickChannel]:
        """The channels with these slugs, by lower-cased slug; unknown ones are absent."""
        found: dict[str, KickChannel] = {}
        for batch in batches(dict.fromkeys(slug.lower() for slug in slugs), BATCH):
            for item in await self._data("/channels", [("slug", slug) for slug in batch]):
                channel = KickChannel(
                    user_id=text_field(item, "broadcaster_user_id", _KICK, required=True),
                    slug=text_field(item, "slug", _KICK, required=True).lower(),
                    title=text_field(item, "stream_title", _KICK),
                    category=_category(item),
                )
                found[channel.slug] = channel
        return found

    async def livestreams(self, user_ids: Iterable[str]) -> dict[str, KickLivestream]:
        """The live streams of these broadcasters, by user id (one not live is absent).

        `GET /livestreams` (v1), as issue 18 names it; changelog.md (23/06/2026) marks it
        deprecated for a paginated v2 whose parameters the mirrored docs do not show.
        Asking about at most 50 followed channels per call, v1 needs no pages."""
        found: dict[str, KickLivestream] = {}
        for batch in batches(dict.fromkeys(user_ids), BATCH):
            params = [("broadcaster_user_id", user_id) for user_id in batch]
            for item in await self._data("/livestreams", params):
                stream = KickLivestream(
                    user_id=text_field(item, "broadcaster_user_id", _KICK, required=True),
                    slug=text_field(item, "slug", _KICK).lower(),
                    title=text_field(item, "stream_title", _KICK),
                    category=_category(item),
                    started_at=time_field(item, "started_at"),
                    thumbnail=text_field(item, "thumbnail", _KICK) or None,
                    profile_picture=text_field(item, "profile_picture", _KICK) or None,
                )
                found[stream.user_id] = stream
        return found

    async def subscriptions(self) -> list[KickSubscription]:
        """Every event subscription of the app."""
        return [
            KickSubscription(
                id=text_field(item, "id", _KICK, required=True),
                user_id=text_field(item, "broadcaster_user_id", _KICK),
                event=text_field(item, "event", _KICK, required=True),
                version=text_field(item, "version", _KICK),
            )
            for item in await self._data("/events/subscriptions", [])
        ]

    async def subscribe(
        self, user_id: str, events: Sequence[tuple[str, int]]
    ) -> list[tuple[str, str | None]]:
        """Subscribe to `events` of one broadcaster; (event, error or None) for each."""
        payload = {
            "broadcaster_user_id": int(user_id) if user_id.isdigit() else user_id,
            "events": [{"name": name, "version": version} for name, version in events],
            "method": "webhook",
        }
        _status, body = await self.call("POST", "/events/subscriptions", json_body=payload)
        results: list[tuple[str, str | None]] = []
        for item in data_items(body, _KICK):
            error = item.get("error")
            results.append(
                (
                    text_field(item, "name", _KICK),
                    error.strip()[:200] if isinstance(error, str) and error.strip() else None,
                )
            )
        return results

    async def unsubscribe(self, subscription_ids: Iterable[str]) -> None:
        """Delete these subscriptions (unknown ids are no error)."""
        for batch in batches(subscription_ids, BATCH):
            await self.call(
                "DELETE", "/events/subscriptions", [("id", sub_id) for sub_id in batch], ok=(404,)
            )

    async def _data(self, path: str, params: Sequence[tuple[str, str]]) -> list[Mapping[str, Any]]:
        _status, body = await self.call("GET", path, params)
        return data_items(body, _KICK)


def _category(item: Mapping[str, Any]) -> str:
    category = item.get("category")
    if not isinstance(category, Mapping):
        return ""
    return text_field(category, "name", _KICK).strip()
