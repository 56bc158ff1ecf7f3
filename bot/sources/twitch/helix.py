"""Twitch's API for the calls the EventSub source makes: an app token, users, streams,
channels and EventSub subscriptions.

From Twitch's docs: the client credentials grant (dev.twitch.tv/docs/authentication/
getting-tokens-oauth, "Client credentials grant flow": `POST https://id.twitch.tv/oauth2/
token` with client_id, client_secret and grant_type=client_credentials, answering
access_token and expires_in), the API reference (Get Users, Get Streams, Get Channel
Information, Create/Get/Delete EventSub Subscription(s)) and the API guide's rate limits
(a 429 with `Ratelimit-Reset`, "the epoch timestamp of when the bucket is reset"). Every
Helix call carries `Authorization: Bearer <token>` and `Client-Id`. A token Twitch stops
accepting (401) is replaced once and the call repeated.

The token, the 401 and 429 handling and the errors are `bot.sources.appclient`'s,
shared with Kick. Errors are HelixError, saying whether trying again later can help;
the client secret and tokens never appear in one, nor in a log line or a repr.
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
    "CredentialsRefused",
    "EventSubSubscription",
    "Helix",
    "HelixError",
    "TwitchChannel",
    "TwitchStream",
    "TwitchUser",
    "TwitchVideo",
]


#: "You may specify a maximum of 100" ids or logins per Get Users / Get Streams / Get
#: Channel Information call.
BATCH: Final = 100


#: Twitch's errors are the shared client's (`HelixError.retryable`, `CredentialsRefused`).
HelixError = ApiError


@dataclass(frozen=True, slots=True)
class TwitchUser:
    """Get Users' fields the bot uses."""

    id: str
    login: str
    display_name: str
    profile_image_url: str | None


@dataclass(frozen=True, slots=True)
class TwitchStream:
    """Get Streams' fields the bot uses; `thumbnail_url` keeps `{width}x{height}`."""

    id: str
    user_id: str
    user_login: str
    user_name: str
    title: str
    game_name: str
    type: str
    started_at: datetime | None
    thumbnail_url: str | None


@dataclass(frozen=True, slots=True)
class TwitchChannel:
    """Get Channel Information's fields the bot uses."""

    broadcaster_id: str
    login: str
    name: str
    title: str
    game_name: str
    language: str


@dataclass(frozen=True, slots=True)
class TwitchVideo:
    """Get Videos' fields the bot uses: an archive (past broadcast) of a stream."""

    id: str
    stream_id: str
    url: str
    viewable: str


@dataclass(frozen=True, slots=True)
class EventSubSubscription:
    """One EventSub subscription as Twitch lists it."""

    id: str
    type: str
    version: str
    status: str
    broadcaster_user_id: str | None
    callback: str | None
    created_at: str | None


class Helix(AppClient):
    """One application's client for Twitch's API (an app access token, refreshed)."""

    provider = "Twitch"

    def headers(self, token: str) -> dict[str, str]:
        """Helix wants the token's client id beside it ("Client ID and OAuth token do not
        match" otherwise)."""
        return {"Authorization": f"Bearer {token}", "Client-Id": self.client_id}

    # -- the calls ---------------------------------------------------------------------

    async def users(self, logins: Iterable[str]) -> dict[str, TwitchUser]:
        """The users with these logins, by lower-cased login; unknown ones are absent."""
        found: dict[str, TwitchUser] = {}
        for batch in _batches(dict.fromkeys(login.lower() for login in logins)):
            for item in await self._data("GET", "/users", [("login", login) for login in batch]):
                user = _user(item)
                found[user.login.lower()] = user
        return found

    async def users_by_id(self, ids: Iterable[str]) -> dict[str, TwitchUser]:
        """The users with these ids, by id."""
        found: dict[str, TwitchUser] = {}
        for batch in _batches(dict.fromkeys(ids)):
            for item in await self._data("GET", "/users", [("id", user_id) for user_id in batch]):
                user = _user(item)
                found[user.id] = user
        return found

    async def streams(self, user_ids: Iterable[str]) -> dict[str, TwitchStream]:
        """The live streams of these users, by user id (a user not live is absent)."""
        found: dict[str, TwitchStream] = {}
        for batch in _batches(dict.fromkeys(user_ids)):
            params = [("user_id", user_id) for user_id in batch] + [("first", str(BATCH))]
            for item in await self._data("GET", "/streams", params):
                stream = _stream(item)
                found[stream.user_id] = stream
        return found

    async def channels(self, user_ids: Iterable[str]) -> dict[str, TwitchChannel]:
        """The channel information of these users, by user id."""
        found: dict[str, TwitchChannel] = {}
        for batch in _batches(dict.fromkeys(user_ids)):
            params = [("broadcaster_id", user_id) for user_id in batch]
            for item in await self._data("GET", "/channels", params):
                channel = _channel(item)
                found[channel.broadcaster_id] = channel
        return found

    async def archives(self, user_id: str, *, first: int = 5) -> list[TwitchVideo]:
        """A user's latest archives (past broadcasts), newest first: `GET /videos` with
        `user_id`, `type=archive` ("archive: On-demand videos (VODs) of past streams")."""
        params = [("user_id", user_id), ("type", "archive"), ("first", str(first))]
        return [_video(item) for item in await self._data("GET", "/videos", params)]

    async def subscriptions(self) -> list[EventSubSubscription]:
        """Every EventSub subscription of the application, oldest first, every page."""
        found: list[EventSubSubscription] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            params = [("after", cursor)] if cursor else []
            body = await self._call("GET", "/eventsub/subscriptions", params)
            found += [_subscription(item) for item in _items(body)]
            cursor = _cursor(body)
            if not cursor or cursor in seen:
                return found
            seen.add(cursor)  # a cursor seen before would loop forever

    async def create_subscription(
        self, *, type: str, version: str, broadcaster_user_id: str, callback: str, secret: str
    ) -> EventSubSubscription | None:
        """Create one webhook subscription; None when it exists already (409)."""
        payload = {
            "type": type,
            "version": version,
            "condition": {"broadcaster_user_id": broadcaster_user_id},
            "transport": {"method": "webhook", "callback": callback, "secret": secret},
        }
        try:
            body = await self._call("POST", "/eventsub/subscriptions", [], json_body=payload)
        except HelixError as exc:
            if exc.status == 409:  # "A subscription already exists for the specified ..."
                return None
            raise
        items = _items(body)
        if not items:
            raise _shape("a created subscription without data")
        return _subscription(items[0])

    async def delete_subscription(self, subscription_id: str) -> bool:
        """Delete one subscription; False when Twitch does not know it (404)."""
        try:
            await self._call("DELETE", "/eventsub/subscriptions", [("id", subscription_id)])
        except HelixError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _data(
        self, method: str, path: str, params: Sequence[tuple[str, str]]
    ) -> list[Mapping[str, Any]]:
        return data_items(await self._call(method, path, params), self.provider)

    async def _call(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]],
        *,
        json_body: Mapping[str, Any] | None = None,
    ) -> Any:
        _status, body = await self.call(method, path, params, json_body=json_body)
        return body


def _batches(values: Iterable[str]) -> list[list[str]]:
    return batches(values, BATCH)


def _items(body: Any) -> list[Mapping[str, Any]]:
    return data_items(body, "Twitch")


def _shape(what: str) -> ApiError:
    return shape_error("Twitch", what)


def _cursor(body: Any) -> str | None:
    pagination = body.get("pagination") if isinstance(body, Mapping) else None
    cursor = pagination.get("cursor") if isinstance(pagination, Mapping) else None
    return cursor if isinstance(cursor, str) and cursor else None


def _text(item: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    return text_field(item, key, "Twitch", required=required)


_time = time_field


def _user(item: Mapping[str, Any]) -> TwitchUser:
    return TwitchUser(
        id=_text(item, "id", required=True),
        login=_text(item, "login", required=True),
        display_name=_text(item, "display_name"),
        profile_image_url=_text(item, "profile_image_url") or None,
    )


def _stream(item: Mapping[str, Any]) -> TwitchStream:
    return TwitchStream(
        id=_text(item, "id", required=True),
        user_id=_text(item, "user_id", required=True),
        user_login=_text(item, "user_login"),
        user_name=_text(item, "user_name"),
        title=_text(item, "title"),
        game_name=_text(item, "game_name"),
        type=_text(item, "type"),
        started_at=_time(item, "started_at"),
        thumbnail_url=_text(item, "thumbnail_url") or None,
    )


def _channel(item: Mapping[str, Any]) -> TwitchChannel:
    return TwitchChannel(
        broadcaster_id=_text(item, "broadcaster_id", required=True),
        login=_text(item, "broadcaster_login"),
        name=_text(item, "broadcaster_name"),
        title=_text(item, "title"),
        game_name=_text(item, "game_name"),
        language=_text(item, "broadcaster_language"),
    )


def _video(item: Mapping[str, Any]) -> TwitchVideo:
    return TwitchVideo(
        id=_text(item, "id", required=True),
        stream_id=_text(item, "stream_id"),
        url=_text(item, "url"),
        viewable=_text(item, "viewable") or "public",
    )


def _subscription(item: Mapping[str, Any]) -> EventSubSubscription:
    condition = item.get("condition")
    transport = item.get("transport")
    broadcaster = (
        _text(condition, "broadcaster_user_id") or None if isinstance(condition, Mapping) else None
    )
    callback = _text(transport, "callback") or None if isinstance(transport, Mapping) else None
    return EventSubSubscription(
        id=_text(item, "id", required=True),
        type=_text(item, "type", required=True),
        version=_text(item, "version"),
        status=_text(item, "status"),
        broadcaster_user_id=broadcaster,
        callback=callback,
        created_at=_text(item, "created_at") or None,
    )
