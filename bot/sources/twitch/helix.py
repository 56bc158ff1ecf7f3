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

Errors are HelixError, saying whether trying again later can help; the client secret and
tokens never appear in one, nor in a log line or a repr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import aiohttp

from bot.durations import format_duration
from bot.errors import SchemaError
from bot.sources.base import parse_rfc3339

log = logging.getLogger(__name__)

#: "You may specify a maximum of 100" ids or logins per Get Users / Get Streams / Get
#: Channel Information call.
BATCH: Final = 100
#: A token is replaced this long before Twitch says it expires.
TOKEN_MARGIN_SECONDS: Final = 60.0
#: How often a 429 is waited out before the call gives up.
RATE_LIMIT_TRIES: Final = 3


class HelixError(Exception):
    """Twitch answered with an error, or not in time, or not in the documented shape."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        #: True when the same call may work later (rate limit, 5xx, timeout, network).
        self.retryable = retryable


class CredentialsRefused(HelixError):
    """The token endpoint refused client_id / client_secret: only fixing config helps."""


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
class EventSubSubscription:
    """One EventSub subscription as Twitch lists it."""

    id: str
    type: str
    version: str
    status: str
    broadcaster_user_id: str | None
    callback: str | None
    created_at: str | None


class Helix:
    """One application's client for Twitch's API (an app access token, refreshed)."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        api_url: str,
        auth_url: str,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        max_rate_limit_wait: float = 60.0,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._api_url = api_url.rstrip("/")
        self._auth_url = auth_url.rstrip("/")
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_wait = max_rate_limit_wait
        self._token: str | None = None
        self._token_until = 0.0
        self._token_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Helix(client_id={self._client_id!r})"

    async def close(self) -> None:
        """Close the HTTP session, when this client made it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

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

    # -- plumbing ----------------------------------------------------------------------

    async def _data(
        self, method: str, path: str, params: Sequence[tuple[str, str]]
    ) -> list[Mapping[str, Any]]:
        return _items(await self._call(method, path, params))

    async def _call(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]],
        *,
        json_body: Mapping[str, Any] | None = None,
    ) -> Any:
        """One Helix call: a fresh token after a 401 (once), 429s waited out."""
        renewed = False
        limited = 0
        while True:
            token = await self._app_token()
            status, headers, body = await self._send(method, path, params, token, json_body)
            if status == 401 and not renewed:
                renewed = True
                self._forget_token(token)
                continue
            if status == 429:
                limited += 1
                wait = _reset_in(headers)
                if limited >= RATE_LIMIT_TRIES or wait > self._max_wait:
                    raise HelixError(
                        f"rate limited by Twitch ({path}); the limit resets in"
                        f" {format_duration(timedelta(seconds=max(wait, 0)))}",
                        status=429,
                        retryable=True,
                    )
                log.info("twitch: rate limited on %s; waiting %.1fs", path, wait)
                await asyncio.sleep(max(wait, 0.0))
                continue
            if 200 <= status < 300:
                return body
            raise HelixError(
                f"{method} {path} answered {status}: {_message(body)}",
                status=status,
                retryable=status >= 500,
            )

    async def _send(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]],
        token: str,
        json_body: Mapping[str, Any] | None,
    ) -> tuple[int, Mapping[str, str], Any]:
        headers = {"Authorization": f"Bearer {token}", "Client-Id": self._client_id}
        try:
            async with self._http().request(
                method,
                self._api_url + path,
                params=list(params),
                json=json_body,
                headers=headers,
                timeout=self._timeout,
            ) as response:
                raw = await response.read()
                log.debug("twitch: %s %s -> %d", method, path, response.status)
                return response.status, dict(response.headers), _json(raw, response.status)
        except TimeoutError:
            raise HelixError(f"{method} {path}: no answer in time", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise HelixError(f"{method} {path}: {type(exc).__name__}", retryable=True) from None

    async def _app_token(self) -> str:
        """The app access token, fetched (once, for every waiting call) when due."""
        async with self._token_lock:
            if self._token is not None and time.monotonic() < self._token_until:
                return self._token
            self._token = None
            form = {
                "client_id": self._client_id,
                "client_secret": self._client_secret,
                "grant_type": "client_credentials",
            }
            try:
                async with self._http().post(
                    f"{self._auth_url}/token", data=form, timeout=self._timeout
                ) as response:
                    status = response.status
                    body = _json(await response.read(), status)
            except TimeoutError:
                raise HelixError(
                    "the token endpoint did not answer in time", retryable=True
                ) from None
            except aiohttp.ClientError as exc:
                raise HelixError(
                    f"the token endpoint: {type(exc).__name__}", retryable=True
                ) from None
            if status in (400, 403):
                raise CredentialsRefused(_message(body), status=status, retryable=False)
            if not 200 <= status < 300:
                raise HelixError(
                    f"the token endpoint answered {status}: {_message(body)}",
                    status=status,
                    retryable=True,
                )
            token = body.get("access_token") if isinstance(body, Mapping) else None
            lifetime = body.get("expires_in") if isinstance(body, Mapping) else None
            if not isinstance(token, str) or not token:
                raise _shape("a token answer without access_token")
            if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)):
                lifetime = 3600
            margin = min(TOKEN_MARGIN_SECONDS, lifetime / 10)
            self._token, self._token_until = token, time.monotonic() + lifetime - margin
            log.info(
                "twitch: app access token obtained, valid for %s",
                format_duration(timedelta(seconds=lifetime)),
            )
            return token

    def _forget_token(self, token: str) -> None:
        """Twitch no longer takes `token` (revoked, expired early): fetch another."""
        if self._token == token:
            self._token = None


def _batches(values: Iterable[str]) -> list[list[str]]:
    items = [value for value in values if value]
    return [items[start : start + BATCH] for start in range(0, len(items), BATCH)]


def _json(raw: bytes, status: int) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        if 200 <= status < 300:
            raise _shape("not JSON") from None
        return None


def _message(body: Any) -> str:
    """Twitch's own words for an error, shortened; never anything of the request."""
    if isinstance(body, Mapping):
        message = body.get("message") or body.get("error")
        if isinstance(message, str) and message.strip():
            return message.strip()[:200]
    return "no message"


def _shape(what: str) -> HelixError:
    return HelixError(f"unexpected answer from Twitch: {what}", retryable=True)


def _items(body: Any) -> list[Mapping[str, Any]]:
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list) or not all(isinstance(item, Mapping) for item in data):
        raise _shape("no data list")
    return data


def _cursor(body: Any) -> str | None:
    pagination = body.get("pagination") if isinstance(body, Mapping) else None
    cursor = pagination.get("cursor") if isinstance(pagination, Mapping) else None
    return cursor if isinstance(cursor, str) and cursor else None


def _reset_in(headers: Mapping[str, str]) -> float:
    """Seconds until `Ratelimit-Reset` (epoch seconds); 1 s when absent or unreadable."""
    for key, value in headers.items():
        if key.lower() == "ratelimit-reset":
            try:
                return max(float(value) - time.time(), 0.0)
            except ValueError:
                break
    return 1.0


def _text(item: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = item.get(key)
    if value is None:
        if required:
            raise _shape(f"{key} missing")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _shape(f"{key} is not a string")
    return str(value)


def _time(item: Mapping[str, Any], key: str) -> datetime | None:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_rfc3339(value, key)
    except SchemaError:
        return None


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
