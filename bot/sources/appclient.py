"""A provider's API called with an app access token: what Twitch's and Kick's clients share.

The token comes from the OAuth 2.0 client credentials grant (RFC 6749 4.4): `POST
{auth_url}/token` with client_id, client_secret and grant_type=client_credentials as a
form, answering access_token and expires_in. It is fetched once for every waiting call,
replaced shortly before it expires and whenever the API answers 401 (then the call is
repeated once). A 429 is waited out (the provider's reset header, capped) a few times.

Errors are ApiError, saying whether trying again later can help; CredentialsRefused when
the token endpoint refuses the client (only fixing the config helps). The client secret
and tokens never appear in an error, a log line or a repr. Answers are checked: a body of
the wrong shape is an ApiError, never a KeyError.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Final

import aiohttp

from bot.durations import format_duration
from bot.errors import SchemaError
from bot.sources.base import parse_rfc3339

log = logging.getLogger(__name__)

#: A token is replaced this long before the provider says it expires.
TOKEN_MARGIN_SECONDS: Final = 60.0
#: How often a 429 is waited out before the call gives up.
RATE_LIMIT_TRIES: Final = 3


class ApiError(Exception):
    """The provider answered with an error, or not in time, or not in the documented shape."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        #: True when the same call may work later (rate limit, 5xx, timeout, network).
        self.retryable = retryable


class CredentialsRefused(ApiError):
    """The token endpoint refused client_id / client_secret: only fixing config helps."""


class AppClient:
    """Calls to one provider's API with one application's app access token."""

    #: The provider's name, for messages ("Twitch").
    provider: ClassVar[str] = "the provider"
    #: The token endpoint's statuses that mean "wrong client id or secret".
    refused_statuses: ClassVar[frozenset[int]] = frozenset({400, 401, 403})

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
        self.client_id = client_id
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
        return f"{type(self).__name__}(client_id={self.client_id!r})"

    async def close(self) -> None:
        """Close the HTTP session, when this client made it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def headers(self, token: str) -> dict[str, str]:
        """What every API call carries."""
        return {"Authorization": f"Bearer {token}"}

    async def call(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]] = (),
        *,
        json_body: Mapping[str, Any] | None = None,
        ok: Iterable[int] = (),
        authorized: bool = True,
    ) -> tuple[int, Any]:
        """One API call: a fresh token after a 401 (once), 429s waited out. Returns
        (status, parsed body) for a 2xx or a status in `ok`; raises ApiError otherwise.
        `authorized=False` sends no token (an endpoint that needs none works even while
        the credentials are refused)."""
        accepted = set(ok)
        renewed = False
        limited = 0
        while True:
            token = await self.app_token() if authorized else None
            status, headers, body = await self._send(method, path, params, token, json_body)
            if status == 401 and token is not None and not renewed:
                renewed = True
                self._forget_token(token)
                continue
            if status == 429:
                limited += 1
                wait = reset_in(headers)
                if limited >= RATE_LIMIT_TRIES or wait > self._max_wait:
                    raise ApiError(
                        f"rate limited by {self.provider} ({path}); the limit resets in"
                        f" {format_duration(timedelta(seconds=max(wait, 0)))}",
                        status=429,
                        retryable=True,
                    )
                log.info("%s: rate limited on %s; waiting %.1fs", self.provider, path, wait)
                await asyncio.sleep(max(wait, 0.0))
                continue
            if 200 <= status < 300 or status in accepted:
                return status, body
            raise ApiError(
                f"{method} {path} answered {status}: {error_message(body)}",
                status=status,
                retryable=status >= 500,
            )

    async def _send(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]],
        token: str | None,
        json_body: Mapping[str, Any] | None,
    ) -> tuple[int, Mapping[str, str], Any]:
        try:
            async with self._http().request(
                method,
                self._api_url + path,
                params=list(params),
                json=json_body,
                headers=self.headers(token) if token is not None else {},
                timeout=self._timeout,
            ) as response:
                raw = await response.read()
                log.debug("%s: %s %s -> %d", self.provider, method, path, response.status)
                body = parse_json(raw, response.status, self.provider)
                return response.status, dict(response.headers), body
        except TimeoutError:
            raise ApiError(f"{method} {path}: no answer in time", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise ApiError(f"{method} {path}: {type(exc).__name__}", retryable=True) from None

    async def app_token(self) -> str:
        """The app access token, fetched (once, for every waiting call) when due."""
        async with self._token_lock:
            if self._token is not None and time.monotonic() < self._token_until:
                return self._token
            self._token = None
            form = {
                "client_id": self.client_id,
                "client_secret": self._client_secret,
                "grant_type": "client_credentials",
            }
            try:
                async with self._http().post(
                    f"{self._auth_url}/token", data=form, timeout=self._timeout
                ) as response:
                    status = response.status
                    body = parse_json(await response.read(), status, self.provider)
            except TimeoutError:
                raise ApiError(
                    "the token endpoint did not answer in time", retryable=True
                ) from None
            except aiohttp.ClientError as exc:
                raise ApiError(
                    f"the token endpoint: {type(exc).__name__}", retryable=True
                ) from None
            if status in self.refused_statuses:
                raise CredentialsRefused(error_message(body), status=status, retryable=False)
            if not 200 <= status < 300:
                raise ApiError(
                    f"the token endpoint answered {status}: {error_message(body)}",
                    status=status,
                    retryable=True,
                )
            token = body.get("access_token") if isinstance(body, Mapping) else None
            lifetime = body.get("expires_in") if isinstance(body, Mapping) else None
            if not isinstance(token, str) or not token:
                raise shape_error(self.provider, "a token answer without access_token")
            if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)):
                lifetime = 3600
            margin = min(TOKEN_MARGIN_SECONDS, lifetime / 10)
            self._token, self._token_until = token, time.monotonic() + lifetime - margin
            log.info(
                "%s: app access token obtained, valid for %s",
                self.provider,
                format_duration(timedelta(seconds=lifetime)),
            )
            return token

    def _forget_token(self, token: str) -> None:
        """The API no longer takes `token` (revoked, expired early): fetch another."""
        if self._token == token:
            self._token = None


def batches(values: Iterable[str], size: int) -> list[list[str]]:
    """The non-empty values in lists of at most `size`."""
    items = [value for value in values if value]
    return [items[start : start + size] for start in range(0, len(items), size)]


def parse_json(raw: bytes, status: int, provider: str) -> Any:
    """The body as JSON (None when empty); a 2xx that is not JSON is an ApiError."""
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        if 200 <= status < 300:
            raise shape_error(provider, "not JSON") from None
        return None


def error_message(body: Any) -> str:
    """The provider's own words for an error, shortened; never anything of the request."""
    if isinstance(body, Mapping):
        message = body.get("message") or body.get("error")
        if isinstance(message, str) and message.strip():
            return message.strip()[:200]
    return "no message"


def shape_error(provider: str, what: str) -> ApiError:
    """An answer not in the documented shape (retryable: it may be a bad moment)."""
    return ApiError(f"unexpected answer from {provider}: {what}", retryable=True)


def data_items(body: Any, provider: str) -> list[Mapping[str, Any]]:
    """The `data` list of objects of an answer."""
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list) or not all(isinstance(item, Mapping) for item in data):
        raise shape_error(provider, "no data list")
    return data


def reset_in(headers: Mapping[str, str]) -> float:
    """Seconds until the limit resets: `Ratelimit-Reset` (epoch seconds, Twitch) or
    `Retry-After` (seconds or an HTTP date, RFC 9110); 1 s when neither is readable."""
    lowered = {key.lower(): value for key, value in headers.items()}
    reset = lowered.get("ratelimit-reset")
    if reset is not None:
        try:
            return max(float(reset) - time.time(), 0.0)
        except ValueError:
            pass
    after = lowered.get("retry-after")
    if after is not None:
        try:
            return max(float(after), 0.0)
        except ValueError:
            try:
                return max(parsedate_to_datetime(after).timestamp() - time.time(), 0.0)
            except (TypeError, ValueError):
                pass
    return 1.0


def text_field(item: Mapping[str, Any], key: str, provider: str, *, required: bool = False) -> str:
    """A string (or integer id) field of an answer's object, "" when absent."""
    value = item.get(key)
    if value is None:
        if required:
            raise shape_error(provider, f"{key} missing")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise shape_error(provider, f"{key} is not a string")
    return str(value)


def time_field(item: Mapping[str, Any], key: str) -> datetime | None:
    """An RFC 3339 time field, None when absent or unreadable."""
    value = item.get(key)
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_rfc3339(value, key)
    except SchemaError:
        return None
