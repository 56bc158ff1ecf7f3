"""A protocol-level fake of Twitch (OAuth, Helix, EventSub webhooks), served on 127.0.0.1.

The bot talks to it as it talks to Twitch, with ``auth_url`` and ``api_url`` pointed here::

    async with FakeTwitch(allow_insecure_callbacks=True) as fake:
        quinn = fake.add_user("quinn", display_name="Quinn")
        # config: client_id=fake.client_id, client_secret=fake.client_secret,
        #         auth_url=fake.auth_url, api_url=fake.api_url,
        #         callback_url=f"http://127.0.0.1:{bot_port}/webhook/twitch"
        ...  # the bot subscribes; the fake sends the challenge; the bot answers it
        await fake.wait_for_subscription("stream.online", quinn.id, status="enabled")
        assert await fake.go_live("quinn", title="Speedrun", game="Celeste") == [204]

Every detail below was checked against Twitch's documentation; where the documentation is
silent the choice is marked "not documented" and leans strict. Sources (quoted in comments):
the "Handling Webhook Events" page (dev.twitch.tv/docs/eventsub/handling-webhook-events),
the API reference (dev.twitch.tv/docs/api/reference: Create/Get/Delete EventSub
Subscription(s), Get Users, Get Streams, Get Channel Information, Get Videos), the API guide's
rate limits (dev.twitch.tv/docs/api/guide), the client credentials grant flow
(dev.twitch.tv/docs/authentication/getting-tokens-oauth), and Twitch's own CLI
(github.com/twitchdev/twitch-cli: internal/events/trigger/forward_event.go signs and sends
webhook events, internal/events/verify/subscription_verify.go checks challenge answers).
Error bodies Twitch sends that the docs do not spell out were taken from answers quoted in
public bug reports (named next to each).

API (everything a test needs; the rest is private):

- ``FakeTwitch(*, client_id=..., client_secret=..., token_lifetime=5_000_000,
  allow_insecure_callbacks=False, strict_challenge=True, max_total_cost=10_000,
  subscriptions_page_size=100, delivery_timeout=5.0)``; ``await start()``,
  ``await close()`` or ``async with``. ``auth_url`` is ``http://127.0.0.1:PORT/oauth2``,
  ``api_url`` ``http://127.0.0.1:PORT/helix``. ``token_lifetime`` is the ``expires_in`` of
  new tokens (seconds); a token past it answers 401 like a revoked one.
- ``allow_insecure_callbacks``: Twitch accepts only ``https`` callbacks on port 443 and
  answers 400 to anything else. The default keeps that rule; ``True`` also accepts
  ``http://`` and any port, so a test can point subscriptions straight at the bot's
  listener on ``http://127.0.0.1:PORT``. Or keep the rule and ``route_callback(public,
  local)``: deliveries for callbacks starting with ``public`` (e.g.
  ``https://bot.example.com``) go to ``local`` (``http://127.0.0.1:PORT``) instead, as a TLS
  proxy in front of the bot would pass them on. The fake never reaches the network: a
  callback that is neither loopback nor routed is recorded as unreachable (its
  verification fails).
- ``strict_challenge`` (default True): besides what Twitch checks (status exactly 200, the
  body exactly the challenge, a ``Content-Length`` equal to its length), the answer's
  ``Content-Type`` must be ``text/plain`` (what the docs' example sends and issue 17 asks
  for). ``False`` checks only what Twitch documents.
- ``add_user(login, *, display_name=None, user_id=None, title="", game=None,
  language="en", broadcaster_type="", description="", tags=()) -> FakeUser``; ``users``
  maps login -> FakeUser (its channel information lives on it too). ``add_game(name,
  game_id=None) -> id``; games named in ``go_live``/``update_channel`` are added on the fly.
- Tokens: ``tokens`` (str -> FakeToken), ``expire_tokens()`` (every token issued so far
  now answers 401), ``revoke_token(token)``.
- Events (each returns the list of HTTP statuses the matching callbacks answered, one per
  enabled subscription of that type and broadcaster, ``None`` for one that did not answer
  in ``delivery_timeout``):
  ``await go_live(login, *, title=None, game=None, type="live", stream_id=None,
  helix_delay=0.0, helix_delay_calls=0, message_id=None)`` starts a stream in Helix and sends
  ``stream.online``; with ``helix_delay`` seconds and/or ``helix_delay_calls`` Get Streams
  calls the stream is not listed yet (Helix lags the event). Only ``type="live"`` streams
  are listed in Get Streams (its only documented type value is "live").
  ``await go_offline(login)`` ends it (an archive video appears in Get Videos) and sends
  ``stream.offline``. ``await update_channel(login, *, title=None, game=None,
  language=None)`` changes the channel (and the live stream) and sends ``channel.update``
  v2, live or not. ``await notify(sub_type, event, *, message_id=None, timestamp=None,
  retry=0, forge_signature=False)`` sends any event dict; ``timestamp`` may be a
  ``datetime`` or a string (e.g. ``fake.timestamp(seconds_ago=601)`` for a stale one);
  ``forge_signature=True`` signs with the wrong secret. ``await resend(delivery, *,
  timestamp=None)`` sends a recorded delivery again: same message id and body,
  ``Twitch-Eventsub-Message-Retry`` one higher (what a duplicate from Twitch looks like; a
  new timestamp unless one is given, as Twitch does not document it). A duplicate online
  with a *new* message id is just ``notify("stream.online", same_event)``.
  ``await revoke(subscription_id, reason) -> int | None`` sets the subscription's status
  to ``reason`` (``user_removed``, ``authorization_revoked``,
  ``notification_failures_exceeded``, ``version_removed``) and sends the ``revocation``.
- ``deliveries``: every POST the fake made to a callback, as ``Delivery`` (message type,
  id, timestamp, retry, headers, raw body, status, response text and headers, elapsed
  seconds, ``timed_out``, ``error``). ``late_deliveries(limit=2.0)`` lists the answers that
  took longer than ``limit`` seconds ("You must respond to notification requests within a
  few seconds").
- Subscriptions: ``subscriptions`` (id -> FakeSubscription, secret included), ``await
  wait_for_subscription(type, broadcaster_user_id, status="enabled", timeout=5)``,
  ``await wait_for_verification(subscription_id, timeout=5) -> FakeSubscription`` (the
  challenge was answered, either way).
- ``requests``: every HTTP request to the fake, as ``RecordedRequest(method, path, query,
  headers, json, status, response)``; ``query`` keeps repeats (``{"login": ["a", "b"]}``).
  ``requests_to(path, method=None)`` filters answered ones (path relative to the server,
  e.g. ``"/helix/streams"``). ``await wait_for_request(path, predicate=None, timeout=5, *,
  start=0)``.
- Failure injection on Helix: ``rate_limit_next(times=1, *, path=None, reset_in=1)`` answers
  429 with ``Ratelimit-Limit``, ``Ratelimit-Remaining: 0`` and ``Ratelimit-Reset`` (unix
  seconds, ``reset_in`` from now, rounded up as the header is whole seconds).
  ``fail_next(path, *, status, message=None, times=1)`` answers any other error in Twitch's
  ``{"error", "status", "message"}`` shape. ``path`` is relative to ``api_url``
  (``"/streams"``); ``None`` matches any Helix path.

Served (everything else 404):

- ``POST /oauth2/token`` (params in the query string or a form body, as Twitch accepts
  both): ``client_id``, ``client_secret``, ``grant_type=client_credentials`` ->
  ``{"access_token", "expires_in", "token_type": "bearer"}``. Unknown client: 400
  ``{"status": 400, "message": "invalid client"}``; wrong secret: 403 ``{"status": 403,
  "message": "invalid client secret"}`` (both as quoted in public reports, e.g.
  Radioh/ha_twitch_helix#3). ``GET /oauth2/validate`` with ``Authorization: OAuth <token>``.
- Helix, each needing ``Authorization: Bearer <token>`` and ``Client-Id`` of that token's
  client, else 401 ``{"error": "Unauthorized", "status": 401, "message": M}`` with M
  "OAuth token is missing", "Client ID is missing", "Invalid OAuth token" or "Client ID
  and OAuth token do not match" (texts quoted in public reports: true-dubach/
  node-twitch-webhook#18, pilcrowonpaper/arctic#35, twitchdev/issues#756,
  louis70109/Twitch-Bot#19). Every answer carries the rate-limit headers (800 a minute).
  ``GET /users`` (``id``/``login``, 100 in all), ``GET /streams`` (``user_id``/
  ``user_login``, ``type``, ``first``), ``GET /channels`` (``broadcaster_id``, required,
  100 at most), ``GET /videos`` (exactly one of ``id``/``user_id``/``game_id``; ``type``),
  ``POST/GET/DELETE /eventsub/subscriptions`` (see the handlers' comments).

Not modelled: user access tokens and scopes, subscription types other than
``stream.online`` v1, ``stream.offline`` v1 and ``channel.update`` v2 (others answer 400),
websocket and conduit transports, Twitch's own retries (send them with ``resend``), the
automatic ``notification_failures_exceeded`` revocation (``revoke`` it), pagination of
Get Streams and Get Videos, and revoked subscriptions disappearing from the list after a
while (they stay, with their status).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hmac
import itertools
import json
import math
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

__all__ = [
    "REVOCATION_REASONS",
    "Delivery",
    "FakeSubscription",
    "FakeToken",
    "FakeTwitch",
    "FakeUser",
    "RecordedRequest",
    "rfc3339_nano",
    "sign",
]

# (type, version) pairs the fake accepts. channel.update v1 is left out on purpose: the bot
# must use v2 (issue 17), and a v1 request should fail loudly in tests.
SUPPORTED_SUBSCRIPTIONS = frozenset(
    {("stream.online", "1"), ("stream.offline", "1"), ("channel.update", "2")}
)
# "Revoking your subscription" lists these four statuses for a revocation.
REVOCATION_REASONS = frozenset(
    {"user_removed", "authorization_revoked", "notification_failures_exceeded", "version_removed"}
)
# Get EventSub Subscriptions' `status` filter values that apply to webhooks.
SUBSCRIPTION_STATUSES = REVOCATION_REASONS | {
    "enabled",
    "webhook_callback_verification_pending",
    "webhook_callback_verification_failed",
    "moderator_removed",
    "chat_user_banned",
    "beta_maintenance",
}
# Subscriptions in these states still exist for Twitch: they conflict (409) with a new one
# and count towards the limits. "a 'dead' sub won't 409" (twitchdev/issues#404).
_LIVE_STATUSES = frozenset({"enabled", "webhook_callback_verification_pending"})
# Create EventSub Subscription's 429: "The request exceeds the number of subscriptions that
# you may create with the same combination of type and condition values"; that number is 3
# (the Twitch4J and twitch.py docs; the old webhooks guide said "at most 3 times").
MAX_SAME_TYPE_AND_CONDITION = 3
RATE_LIMIT_POINTS = 800  # app token bucket, points per minute (API guide, "Rate limits")
# stream.online's type: "Valid values are: live, playlist, watch_party, premiere, rerun."
_STREAM_TYPES = frozenset({"live", "playlist", "watch_party", "premiere", "rerun"})
_VIDEO_TYPES = frozenset({"all", "archive", "highlight", "upload"})
_HELIX_JSON = "application/json; charset=utf-8"  # what Helix (and the Twitch CLI) send

_T = TypeVar("_T")


def rfc3339_nano(ns: int | None = None) -> str:
    """A UTC timestamp as Twitch writes it: RFC 3339 with nanoseconds.

    "All timestamps are in RFC3339 format and use nanoseconds instead of milliseconds." The
    docs' examples have 9 digits; Twitch's CLI formats with Go's time.RFC3339Nano, which drops
    trailing zeros, so the fake does too: 1 to 9 digits, or none on a whole second.
    """
    if ns is None:
        ns = time.time_ns()
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def sign(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    """Twitch's ``Twitch-Eventsub-Message-Signature`` for one message.

    "Create an HMAC signature using your secret and a message that is the concatenation of
    the values in the Twitch-Eventsub-Message-Id header, Twitch-Eventsub-Message-Timestamp
    header, and the raw request body (the order is important.)", prefixed "sha256=", hex.
    """
    mac = hmac.new(secret.encode(), message_id.encode() + timestamp.encode() + body, "sha256")
    return "sha256=" + mac.hexdigest()


def _dumps(obj: Any) -> bytes:
    # Compact like Go's json.Marshal, non-ASCII left as UTF-8: a bot that re-serializes the
    # parsed body before checking the signature gets a different byte string.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class FakeUser:
    """A Twitch user and their channel's information."""

    id: str
    login: str
    display_name: str
    title: str = ""
    game_id: str = ""
    game_name: str = ""
    language: str = "en"
    broadcaster_type: str = ""
    description: str = ""
    tags: list[str] = field(default_factory=list)
    created_at: str = "2016-12-14T20:32:28Z"

    @property
    def profile_image_url(self) -> str:
        """The avatar URL Get Users returns."""
        return (
            f"https://static-cdn.jtvnw.net/jtv_user_pictures/{self.login}"
            "-profile_image-300x300.png"
        )

    def user_json(self) -> dict[str, Any]:
        """The user as Get Users returns it (app token: no email)."""
        return {
            "id": self.id,
            "login": self.login,
            "display_name": self.display_name,
            "type": "",
            "broadcaster_type": self.broadcaster_type,
            "description": self.description,
            "profile_image_url": self.profile_image_url,
            "offline_image_url": "",
            "view_count": 0,
            "created_at": self.created_at,
        }

    def channel_json(self) -> dict[str, Any]:
        """The channel as Get Channel Information returns it."""
        return {
            "broadcaster_id": self.id,
            "broadcaster_login": self.login,
            "broadcaster_name": self.display_name,
            "broadcaster_language": self.language,
            "game_id": self.game_id,
            "game_name": self.game_name,
            "title": self.title,
            "delay": 0,
            "tags": list(self.tags),
            "content_classification_labels": [],
            "is_branded_content": False,
        }


@dataclass
class FakeToken:
    """An app access token issued by the token endpoint."""

    token: str
    client_id: str
    expires_at: float  # time.monotonic()
    revoked: bool = False

    @property
    def valid(self) -> bool:
        """Whether Helix still accepts it."""
        return not self.revoked and time.monotonic() < self.expires_at


@dataclass
class FakeSubscription:
    """One EventSub subscription, as the fake holds it (the secret too)."""

    id: str
    type: str
    version: str
    condition: dict[str, Any]
    callback: str
    secret: str
    created_at: str
    status: str = "webhook_callback_verification_pending"
    cost: int = 1
    verified: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def broadcaster_user_id(self) -> str:
        """The condition's broadcaster."""
        return str(self.condition.get("broadcaster_user_id", ""))

    def to_json(self) -> dict[str, Any]:
        """The subscription as Twitch shows it (never with the secret)."""
        return {
            "id": self.id,
            "status": self.status,
            "type": self.type,
            "version": self.version,
            "condition": dict(self.condition),
            "created_at": self.created_at,
            "transport": {"method": "webhook", "callback": self.callback},
            "cost": self.cost,
        }


@dataclass
class Delivery:
    """One POST the fake made to a callback, and how it was answered."""

    subscription_id: str
    callback: str
    message_type: str
    message_id: str
    timestamp: str
    retry: int
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    response_text: str = ""
    response_headers: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0
    timed_out: bool = False
    error: str | None = None

    @property
    def payload(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)


@dataclass
class RecordedRequest:
    """One HTTP request the fake received and (once ``status`` is set) answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    response: Any = None


@dataclass
class _Stream:
    user_id: str
    stream_id: str
    type: str
    started_at: str
    visible_at: float
    hidden_calls: int


@dataclass
class _Fault:
    path: str | None
    status: int
    message: str
    times: int
    reset_in: float = 0.0


class _HelixError(Exception):
    def __init__(self, status: int, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {
            "error": error or _REASONS.get(status, "Error"),
            "status": status,
            "message": message,
        }


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class FakeTwitch:
    """The fake Twitch; see the module docstring for its API."""

    def __init__(
        self,
        *,
        client_id: str = "fakeclientid0123456789abcdefgh",
        client_secret: str = "fake-client-secret-0123456789",
        token_lifetime: float = 5_000_000,
        allow_insecure_callbacks: bool = False,
        strict_challenge: bool = True,
        max_total_cost: int = 10_000,
        subscriptions_page_size: int = 100,
        delivery_timeout: float = 5.0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.allow_insecure_callbacks = allow_insecure_callbacks
        self.strict_challenge = strict_challenge
        self.max_total_cost = max_total_cost
        self.subscriptions_page_size = subscriptions_page_size
        self.delivery_timeout = delivery_timeout
        self.auth_url = ""
        self.api_url = ""
        self.users: dict[str, FakeUser] = {}
        self.games: dict[str, str] = {}
        self.tokens: dict[str, FakeToken] = {}
        self.subscriptions: dict[str, FakeSubscription] = {}
        self.requests: list[RecordedRequest] = []
        self.deliveries: list[Delivery] = []
        self.videos: list[dict[str, Any]] = []

        self._streams: dict[str, _Stream] = {}
        self._routes: dict[str, str] = {}
        self._faults: list[_Fault] = []
        self._user_ids = itertools.count(141981764)
        self._game_ids = itertools.count(509670)
        self._ids = itertools.count(1)
        self._window = (0.0, 0)  # rate-limit window: (opened at, points used)
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port and set ``auth_url`` and ``api_url``."""
        app = web.Application()
        app.router.add_route("*", "/oauth2/token", self._recorded(self._token))
        app.router.add_route("*", "/oauth2/validate", self._recorded(self._validate))
        app.router.add_route("*", "/helix/{path:.*}", self._recorded(self._helix))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.auth_url = f"http://{host}:{port}/oauth2"
        self.api_url = f"http://{host}:{port}/helix"
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        """Stop pending verifications and the server (idempotent)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeTwitch:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- test-facing state -------------------------------------------------------------

    def add_user(
        self,
        login: str,
        *,
        display_name: str | None = None,
        user_id: str | None = None,
        title: str = "",
        game: str | None = None,
        language: str = "en",
        broadcaster_type: str = "",
        description: str = "",
        tags: Iterable[str] = (),
    ) -> FakeUser:
        """Create a user (and their channel); logins are lower case on Twitch."""
        login = login.lower()
        user = FakeUser(
            id=user_id or str(next(self._user_ids)),
            login=login,
            display_name=display_name or login,
            title=title,
            language=language,
            broadcaster_type=broadcaster_type,
            description=description,
            tags=list(tags),
        )
        if game is not None:
            user.game_id, user.game_name = self.add_game(game), game
        self.users[login] = user
        return user

    def add_game(self, name: str, game_id: str | None = None) -> str:
        """The id of a category, creating it if needed."""
        if name not in self.games:
            self.games[name] = game_id or str(next(self._game_ids))
        return self.games[name]

    def user(self, login: str) -> FakeUser:
        """The user with this login (KeyError names the login)."""
        try:
            return self.users[login.lower()]
        except KeyError:
            raise KeyError(f"no such Twitch user in the fake: {login!r}") from None

    def route_callback(self, public_prefix: str, local_prefix: str) -> None:
        """Deliver callbacks starting with ``public_prefix`` to ``local_prefix`` instead."""
        self._routes[public_prefix] = local_prefix

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (Helix answers 401 to it)."""
        for token in self.tokens.values():
            token.expires_at = 0.0

    def revoke_token(self, token: str) -> None:
        """Revoke one token."""
        self.tokens[token].revoked = True

    def rate_limit_next(
        self, times: int = 1, *, path: str | None = None, reset_in: float = 1.0
    ) -> None:
        """Answer the next ``times`` Helix calls (to ``path``, or any) with 429."""
        self._faults.append(_Fault(path, 429, "Too Many Requests", times, reset_in))

    def fail_next(
        self, path: str | None, *, status: int, message: str | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` Helix calls to ``path`` (None: any) with this error."""
        self._faults.append(_Fault(path, status, message or _REASONS.get(status, "Error"), times))

    def timestamp(self, *, seconds_ago: float = 0.0) -> str:
        """A Twitch-style timestamp ``seconds_ago`` in the past (stale ones for tests)."""
        return rfc3339_nano(time.time_ns() - int(seconds_ago * 1e9))

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """The answered requests to one path (relative to the server), in order."""
        return [
            r
            for r in self.requests
            if r.path == path and r.status is not None and method in (None, r.method)
        ]

    def late_deliveries(self, limit: float = 2.0) -> list[Delivery]:
        """Deliveries answered slower than ``limit`` seconds, or not at all."""
        return [d for d in self.deliveries if d.timed_out or d.elapsed > limit]

    async def wait_for_request(
        self,
        path: str,
        predicate: Callable[[RecordedRequest], bool] | None = None,
        timeout: float = 5,
        *,
        start: int = 0,
    ) -> RecordedRequest:
        """The first answered request to ``path`` at index >= ``start`` matching ``predicate``."""

        def find() -> RecordedRequest | None:
            for request in self.requests[start:]:
                if (
                    request.path == path
                    and request.status is not None
                    and (predicate is None or predicate(request))
                ):
                    return request
            return None

        return await self._wait(
            find,
            timeout,
            lambda: (
                f"no matching request to {path}; saw "
                f"{[(r.method, r.path, r.status) for r in self.requests[start:]]}"
            ),
        )

    async def wait_for_subscription(
        self,
        sub_type: str,
        broadcaster_user_id: str,
        *,
        status: str = "enabled",
        timeout: float = 5,
    ) -> FakeSubscription:
        """The first subscription of this type and broadcaster in ``status``, now or later."""

        def seen() -> list[tuple[str, str, str]]:
            return [(s.type, s.broadcaster_user_id, s.status) for s in self.subscriptions.values()]

        def find() -> FakeSubscription | None:
            for sub in self.subscriptions.values():
                if (sub.type, sub.broadcaster_user_id, sub.status) == (
                    sub_type,
                    broadcaster_user_id,
                    status,
                ):
                    return sub
            return None

        return await self._wait(
            find,
            timeout,
            lambda: f"no {status} {sub_type} for {broadcaster_user_id}; have {seen()}",
        )

    async def wait_for_verification(
        self, subscription_id: str, timeout: float = 5
    ) -> FakeSubscription:
        """The subscription once its challenge was answered (enabled or failed)."""
        sub = self.subscriptions[subscription_id]
        async with asyncio.timeout(timeout):
            await sub.verified.wait()
        return sub

    # ---- events ------------------------------------------------------------------------

    async def go_live(
        self,
        login: str,
        *,
        title: str | None = None,
        game: str | None = None,
        type: str = "live",  # the event's own field name
        stream_id: str | None = None,
        helix_delay: float = 0.0,
        helix_delay_calls: int = 0,
        message_id: str | None = None,
    ) -> list[int | None]:
        """Start a stream (Helix state) and send ``stream.online``."""
        if type not in _STREAM_TYPES:
            raise ValueError(f"stream type must be one of {sorted(_STREAM_TYPES)}, not {type!r}")
        user = self.user(login)
        self._set_channel(user, title=title, game=game)
        started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        stream = _Stream(
            user_id=user.id,
            stream_id=stream_id or str(next(self._ids) + 40_000_000_000),
            type=type,
            started_at=started_at,
            visible_at=time.monotonic() + helix_delay,
            hidden_calls=helix_delay_calls,
        )
        self._streams[user.id] = stream
        # stream.online v1 event (EventSub reference, "Stream Online Event").
        event = {
            "id": stream.stream_id,
            "broadcaster_user_id": user.id,
            "broadcaster_user_login": user.login,
            "broadcaster_user_name": user.display_name,
            "type": type,
            "started_at": started_at,
        }
        return await self.notify("stream.online", event, message_id=message_id)

    async def go_offline(self, login: str, *, message_id: str | None = None) -> list[int | None]:
        """End the stream (an archive video remains) and send ``stream.offline``."""
        user = self.user(login)
        stream = self._streams.pop(user.id, None)
        if stream is not None:
            self.videos.append(self._archive(user, stream))
        event = {
            "broadcaster_user_id": user.id,
            "broadcaster_user_login": user.login,
            "broadcaster_user_name": user.display_name,
        }
        return await self.notify("stream.offline", event, message_id=message_id)

    async def update_channel(
        self,
        login: str,
        *,
        title: str | None = None,
        game: str | None = None,
        language: str | None = None,
        message_id: str | None = None,
    ) -> list[int | None]:
        """Change the channel's information and send ``channel.update`` v2 (live or not)."""
        user = self.user(login)
        self._set_channel(user, title=title, game=game)
        if language is not None:
            user.language = language
        # channel.update v2 event (EventSub reference, "Channel Update Event"; the CLI's
        # models.ChannelUpdateEventSubEvent).
        event = {
            "broadcaster_user_id": user.id,
            "broadcaster_user_login": user.login,
            "broadcaster_user_name": user.display_name,
            "title": user.title,
            "language": user.language,
            "category_id": user.game_id,
            "category_name": user.game_name,
            "content_classification_labels": [],
        }
        return await self.notify("channel.update", event, message_id=message_id)

    async def notify(
        self,
        sub_type: str,
        event: dict[str, Any],
        *,
        message_id: str | None = None,
        timestamp: str | datetime | None = None,
        retry: int = 0,
        forge_signature: bool = False,
    ) -> list[int | None]:
        """Send a ``notification`` to every enabled subscription of this type and broadcaster.

        Returns the status each callback answered (None: no answer in time), in creation
        order; an empty list when no enabled subscription matches.
        """
        broadcaster = str(event.get("broadcaster_user_id", ""))
        statuses: list[int | None] = []
        for sub in list(self.subscriptions.values()):
            if sub.type != sub_type or sub.broadcaster_user_id != broadcaster:
                continue
            # "The subscriber receives events only for enabled subscriptions."
            if sub.status != "enabled":
                continue
            body = _dumps({"subscription": sub.to_json(), "event": event})
            delivery = await self._deliver(
                sub,
                "notification",
                body,
                message_id=message_id,
                timestamp=timestamp,
                retry=retry,
                forge_signature=forge_signature,
            )
            statuses.append(delivery.status)
        return statuses

    async def resend(
        self, delivery: Delivery, *, timestamp: str | datetime | None = None
    ) -> int | None:
        """Send a recorded delivery again: same message id and body, retry count + 1."""
        sub = self.subscriptions[delivery.subscription_id]
        again = await self._deliver(
            sub,
            delivery.message_type,
            delivery.body,
            message_id=delivery.message_id,
            timestamp=timestamp,
            retry=delivery.retry + 1,
        )
        return again.status

    async def revoke(self, subscription_id: str, reason: str) -> int | None:
        """Revoke a subscription: its status becomes ``reason`` and a revocation is sent."""
        if reason not in REVOCATION_REASONS:
            raise ValueError(f"reason must be one of {sorted(REVOCATION_REASONS)}, not {reason!r}")
        sub = self.subscriptions[subscription_id]
        sub.status = reason
        self._notify_waiters()
        # "The status field in the body of the request contains the reason why Twitch revoked
        # the subscription"; the body is the subscription alone.
        body = _dumps({"subscription": sub.to_json()})
        delivery = await self._deliver(sub, "revocation", body)
        return delivery.status

    # ---- internals: plumbing -----------------------------------------------------------

    def _notify_waiters(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(
        self, find: Callable[[], _T | None], timeout: float, why: Callable[[], str]
    ) -> _T:
        try:
            async with asyncio.timeout(timeout):
                while (found := find()) is None:
                    await self._changed.wait()
                return found
        except TimeoutError:
            raise TimeoutError(f"after {timeout}s: {why()}") from None

    def _set_channel(self, user: FakeUser, *, title: str | None, game: str | None) -> None:
        if title is not None:
            user.title = title
        if game is not None:
            user.game_id, user.game_name = self.add_game(game), game

    def _archive(self, user: FakeUser, stream: _Stream) -> dict[str, Any]:
        video_id = str(next(self._ids) + 2_000_000_000)
        return {
            "id": video_id,
            "stream_id": stream.stream_id,
            "user_id": user.id,
            "user_login": user.login,
            "user_name": user.display_name,
            "title": user.title,
            "description": "",
            "created_at": stream.started_at,
            "published_at": stream.started_at,
            "url": f"https://www.twitch.tv/videos/{video_id}",
            # Get Videos' placeholders are %{width}x%{height}, unlike Get Streams'.
            "thumbnail_url": "https://static-cdn.jtvnw.net/cf_vods/fake/"
            f"{user.login}/{video_id}/thumb/index-0000000000-%{{width}}x%{{height}}.jpg",
            "viewable": "public",
            "view_count": 0,
            "language": user.language,
            "type": "archive",
            "duration": "1h0m0s",
            "muted_segments": None,
        }

    def _target(self, callback: str) -> str | None:
        for public, local in self._routes.items():
            if callback.startswith(public):
                return local + callback[len(public) :]
        host = urlsplit(callback).hostname
        if host in {"127.0.0.1", "localhost", "::1"}:
            return callback
        return None  # never reach the network

    async def _deliver(
        self,
        sub: FakeSubscription,
        message_type: str,
        body: bytes,
        *,
        message_id: str | None = None,
        timestamp: str | datetime | None = None,
        retry: int = 0,
        forge_signature: bool = False,
    ) -> Delivery:
        message_id = message_id or str(uuid.uuid4())
        if isinstance(timestamp, datetime):
            stamp = rfc3339_nano(int(timestamp.timestamp() * 1_000_000) * 1000)
        else:
            stamp = timestamp or rfc3339_nano()
        secret = sub.secret + "-forged" if forge_signature else sub.secret
        # The headers of "List of request headers", as the CLI's ForwardEvent sets them.
        headers = {
            "Content-Type": "application/json",
            "Twitch-Eventsub-Message-Id": message_id,
            "Twitch-Eventsub-Message-Retry": str(retry),
            "Twitch-Eventsub-Message-Type": message_type,
            "Twitch-Eventsub-Message-Signature": sign(secret, message_id, stamp, body),
            "Twitch-Eventsub-Message-Timestamp": stamp,
            "Twitch-Eventsub-Subscription-Type": sub.type,
            "Twitch-Eventsub-Subscription-Version": sub.version,
        }
        delivery = Delivery(
            subscription_id=sub.id,
            callback=sub.callback,
            message_type=message_type,
            message_id=message_id,
            timestamp=stamp,
            retry=retry,
            headers=headers,
            body=body,
        )
        self.deliveries.append(delivery)
        target = self._target(sub.callback)
        if target is None:
            delivery.error = "unreachable: the fake never leaves 127.0.0.1 (use route_callback)"
            self._notify_waiters()
            return delivery
        assert self._session is not None, "FakeTwitch is not started"
        began = time.monotonic()
        try:
            async with self._session.post(
                target,
                data=body,
                headers=headers,
                # "NOTE: Redirects are not followed." (Create EventSub Subscription)
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.delivery_timeout),
            ) as response:
                raw = await response.read()
                delivery.status = response.status
                delivery.response_text = raw.decode(errors="replace")
                delivery.response_headers = dict(response.headers)
        except TimeoutError:
            delivery.timed_out = True
            delivery.error = f"no answer within {self.delivery_timeout}s"
        except aiohttp.ClientError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        delivery.elapsed = time.monotonic() - began
        self._notify_waiters()
        return delivery

    async def _verify(self, sub: FakeSubscription) -> None:
        challenge = secrets.token_urlsafe(24)
        # The verification body: the challenge and the subscription, pending (docs' example
        # under "Responding to a challenge request").
        body = _dumps({"challenge": challenge, "subscription": sub.to_json()})
        delivery = await self._deliver(sub, "webhook_callback_verification", body)
        ok = self._challenge_answered(delivery, challenge)
        if sub.status == "webhook_callback_verification_pending":
            sub.status = "enabled" if ok else "webhook_callback_verification_failed"
        sub.verified.set()
        self._notify_waiters()

    def _challenge_answered(self, delivery: Delivery, challenge: str) -> bool:
        # "Your response must return a 200 status code, the response body must contain the
        # raw challenge value, and you must set the Content-Length response header to the
        # length of the challenge value." The CLI compares the body byte for byte.
        if delivery.status != 200 or delivery.response_text != challenge:
            return False
        headers = {k.lower(): v for k, v in delivery.response_headers.items()}
        if headers.get("content-length") != str(len(challenge.encode())):
            return False
        if self.strict_challenge:
            # The docs' example answers res.set('Content-Type','text/plain'); the CLI flags
            # anything else as "Invalid content-type header ... Expecting text/plain."
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            return media_type == "text/plain"
        return True

    def _recorded(
        self, handler: Callable[[web.Request, RecordedRequest], Any]
    ) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            query: dict[str, list[str]] = {}
            for key, value in request.query.items():
                query.setdefault(key, []).append(value)
            record = RecordedRequest(
                method=request.method,
                path=request.path,
                query=query,
                headers=dict(request.headers),
            )
            self.requests.append(record)
            raw = await request.read()
            if raw and request.content_type == "application/json":
                try:
                    record.json = json.loads(raw)
                except ValueError:
                    record.json = None
            elif raw and request.content_type == "application/x-www-form-urlencoded":
                record.form = {k: str(v) for k, v in (await request.post()).items()}
            response: web.Response = await handler(request, record)
            record.status = response.status
            if response.body:
                try:
                    record.response = json.loads(bytes(response.body))
                except ValueError:
                    record.response = response.text
            self._notify_waiters()
            return response

        return handle

    # ---- OAuth -------------------------------------------------------------------------

    @staticmethod
    def _oauth_error(status: int, message: str) -> web.Response:
        # id.twitch.tv errors have no "error" key: {"status": 403, "message": "invalid
        # client secret"} (as quoted in Radioh/ha_twitch_helix#3).
        return web.json_response({"status": status, "message": message}, status=status)

    async def _token(self, request: web.Request, record: RecordedRequest) -> web.Response:
        if request.method != "POST":
            return self._oauth_error(404, "Not Found")
        params = {k: v[-1] for k, v in record.query.items()}
        params.update(record.form)
        client_id = params.get("client_id", "")
        if not client_id:
            return self._oauth_error(400, "missing client id")
        if client_id != self.client_id:
            return self._oauth_error(400, "invalid client")
        if not params.get("client_secret"):
            return self._oauth_error(400, "missing client secret")
        if not hmac.compare_digest(params["client_secret"], self.client_secret):
            return self._oauth_error(403, "invalid client secret")
        grant_type = params.get("grant_type", "")
        if not grant_type:
            return self._oauth_error(400, "missing grant type")
        if grant_type != "client_credentials":
            # Not documented verbatim; only client credentials is modelled.
            return self._oauth_error(400, "unsupported grant type")
        token = secrets.token_hex(15)  # 30 characters, like Twitch's tokens
        self.tokens[token] = FakeToken(
            token, client_id, expires_at=time.monotonic() + self.token_lifetime
        )
        # The client credentials grant flow's response: access_token, expires_in,
        # token_type "bearer".
        return web.json_response(
            {
                "access_token": token,
                "expires_in": int(self.token_lifetime),
                "token_type": "bearer",
            }
        )

    async def _validate(self, request: web.Request, record: RecordedRequest) -> web.Response:
        # "Validating requests": GET with "Authorization: OAuth <token>" (Bearer also works).
        if request.method != "GET":
            return self._oauth_error(404, "Not Found")
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = self.tokens.get(value.strip()) if scheme.lower() in {"oauth", "bearer"} else None
        if token is None or not token.valid:
            return self._oauth_error(401, "invalid access token")
        remaining = max(0, int(token.expires_at - time.monotonic()))
        return web.json_response(
            {"client_id": token.client_id, "scopes": [], "expires_in": remaining}
        )

    # ---- Helix -------------------------------------------------------------------------

    def _rate_headers(self, *, exhausted_reset_in: float | None = None) -> dict[str, str]:
        now = time.time()
        opened, used = self._window
        if now - opened >= 60:
            opened, used = now, 0
        used += 1
        self._window = (opened, used)
        if exhausted_reset_in is not None:
            return {
                "Ratelimit-Limit": str(RATE_LIMIT_POINTS),
                "Ratelimit-Remaining": "0",
                "Ratelimit-Reset": str(math.ceil(now + exhausted_reset_in)),
            }
        return {
            "Ratelimit-Limit": str(RATE_LIMIT_POINTS),
            "Ratelimit-Remaining": str(max(0, RATE_LIMIT_POINTS - used)),
            "Ratelimit-Reset": str(math.ceil(opened + 60)),
        }

    @staticmethod
    def _helix_json(body: Any, status: int, headers: dict[str, str]) -> web.Response:
        return web.Response(
            body=_dumps(body),
            status=status,
            headers={**headers, "Content-Type": _HELIX_JSON},
        )

    def _authorize(self, request: web.Request) -> FakeToken:
        authorization = request.headers.get("Authorization", "")
        if not authorization:
            raise _HelixError(401, "OAuth token is missing")
        client_id = request.headers.get("Client-Id", "")
        if not client_id:
            raise _HelixError(401, "Client ID is missing")
        scheme, _, value = authorization.partition(" ")
        token = self.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or not token.valid:
            raise _HelixError(401, "Invalid OAuth token")
        if token.client_id != client_id:
            raise _HelixError(401, "Client ID and OAuth token do not match")
        return token

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.path in (None, path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _helix(self, request: web.Request, record: RecordedRequest) -> web.Response:
        path = "/" + request.match_info["path"]
        headers: dict[str, str] | None = None
        try:
            self._authorize(request)
            fault = self._take_fault(path)
            if fault is not None and fault.status == 429:
                # An exhausted bucket: "Ratelimit-Remaining" 0 and the reset time.
                headers = self._rate_headers(exhausted_reset_in=fault.reset_in)
                raise _HelixError(429, fault.message)
            if fault is not None:
                raise _HelixError(fault.status, fault.message)
            routes = {
                ("GET", "/users"): self._get_users,
                ("GET", "/streams"): self._get_streams,
                ("GET", "/channels"): self._get_channels,
                ("GET", "/videos"): self._get_videos,
                ("POST", "/eventsub/subscriptions"): self._create_subscription,
                ("GET", "/eventsub/subscriptions"): self._get_subscriptions,
                ("DELETE", "/eventsub/subscriptions"): self._delete_subscription,
            }
            handler = routes.get((request.method, path))
            if handler is None:
                raise _HelixError(404, "Not Found")
            status, body = handler(record)
            headers = self._rate_headers()
        except _HelixError as exc:
            if headers is None:
                headers = self._rate_headers()
            status, body = exc.status, exc.body
        if status == 204:
            return web.Response(status=204, headers=headers)
        return self._helix_json(body, status, headers)

    @staticmethod
    def _values(record: RecordedRequest, name: str) -> list[str]:
        return record.query.get(name, [])

    def _get_users(self, record: RecordedRequest) -> tuple[int, Any]:
        ids, logins = self._values(record, "id"), self._values(record, "login")
        if not ids and not logins:
            # App token: "The id or login query parameter is required unless the request
            # uses a user access token."
            raise _HelixError(400, "The id or login query parameter is required")
        if len(ids) + len(logins) > 100:
            raise _HelixError(
                400,
                "The request exceeded the maximum allowed number of id "
                "and/or login query parameters",
            )
        wanted_logins = {login.lower() for login in logins}
        found = [
            user.user_json()
            for user in self.users.values()
            if user.id in ids or user.login in wanted_logins
        ]
        # Unknown logins and ids are simply left out.
        return 200, {"data": found}

    def _visible(self, stream: _Stream) -> bool:
        if stream.type != "live":
            return False
        if stream.hidden_calls > 0:
            stream.hidden_calls -= 1
            return False
        return time.monotonic() >= stream.visible_at

    def _get_streams(self, record: RecordedRequest) -> tuple[int, Any]:
        ids, logins = self._values(record, "user_id"), self._values(record, "user_login")
        if len(ids) > 100 or len(logins) > 100:
            raise _HelixError(
                400, "You may specify a maximum of 100 user_id and 100 user_login values"
            )
        stream_type = (self._values(record, "type") or ["all"])[-1]
        if stream_type not in {"all", "live"}:
            raise _HelixError(400, "The value in the type query parameter is not valid")
        first_raw = (self._values(record, "first") or ["20"])[-1]
        if not first_raw.isdigit() or not 1 <= int(first_raw) <= 100:
            raise _HelixError(400, "The first query parameter must be between 1 and 100")
        wanted_logins = {login.lower() for login in logins}
        data = []
        for user in self.users.values():
            stream = self._streams.get(user.id)
            if stream is None:
                continue
            if (ids or logins) and user.id not in ids and user.login not in wanted_logins:
                continue
            if not self._visible(stream):
                continue
            data.append(
                {
                    "id": stream.stream_id,
                    "user_id": user.id,
                    "user_login": user.login,
                    "user_name": user.display_name,
                    "game_id": user.game_id,
                    "game_name": user.game_name,
                    "type": "live",
                    "title": user.title,
                    "tags": list(user.tags),
                    "viewer_count": 1,
                    "started_at": stream.started_at,
                    "language": user.language,
                    # "Replace the width and height placeholders in the URL
                    # ({width}x{height}) with the size of the image you want".
                    "thumbnail_url": "https://static-cdn.jtvnw.net/previews-ttv/"
                    f"live_user_{user.login}-{{width}}x{{height}}.jpg",
                    "tag_ids": [],
                    "is_mature": False,
                }
            )
        return 200, {"data": data[: int(first_raw)], "pagination": {}}

    def _get_channels(self, record: RecordedRequest) -> tuple[int, Any]:
        ids = self._values(record, "broadcaster_id")
        if not ids:
            raise _HelixError(400, 'Missing required parameter "broadcaster_id"')
        if len(ids) > 100:
            raise _HelixError(
                400, "The number of broadcaster_id query parameters exceeds the maximum allowed"
            )
        # "The API ignores duplicate IDs and IDs that are not found."
        found = [u.channel_json() for u in self.users.values() if u.id in set(ids)]
        return 200, {"data": found}

    def _get_videos(self, record: RecordedRequest) -> tuple[int, Any]:
        given = [name for name in ("id", "user_id", "game_id") if self._values(record, name)]
        if len(given) != 1:
            raise _HelixError(
                400,
                "The id, user_id, and game_id query parameters are "
                "mutually exclusive; you must specify only one of them",
            )
        video_type = (self._values(record, "type") or ["all"])[-1]
        if video_type not in _VIDEO_TYPES:
            raise _HelixError(400, "The value in the type query parameter is not valid")
        name = given[0]
        values = set(self._values(record, name))
        key = {"id": "id", "user_id": "user_id", "game_id": "game_id"}[name]
        found = [
            copy.deepcopy(v)
            for v in reversed(self.videos)  # "time": latest first, the default sort
            if v.get(key) in values and video_type in ("all", v["type"])
        ]
        if name == "id" and not found:
            raise _HelixError(404, "The ID in the id query parameter was not found")
        return 200, {"data": found, "pagination": {}}

    # ---- EventSub subscriptions --------------------------------------------------------

    def _totals(self) -> dict[str, int]:
        # Not documented which statuses count towards total_cost; the fake counts the
        # subscriptions that are alive (enabled or pending).
        return {
            "total": len(self.subscriptions),
            "total_cost": sum(
                s.cost for s in self.subscriptions.values() if s.status in _LIVE_STATUSES
            ),
            "max_total_cost": self.max_total_cost,
        }

    def _check_callback(self, callback: Any) -> str:
        if not isinstance(callback, str) or not callback:
            raise _HelixError(
                400, "The callback field is required if you specify the webhook transport method"
            )
        parts = urlsplit(callback)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if self.allow_insecure_callbacks:
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise _HelixError(400, "The URL in the transport's callback field is not valid")
            return callback
        # "The URL must use the HTTPS protocol and port 443."
        if parts.scheme != "https" or not parts.hostname or port not in (None, 443):
            raise _HelixError(
                400,
                "The URL in the transport's callback field is not valid. "
                "The URL must use the HTTPS protocol and the 443 port number.",
            )
        return callback

    def _create_subscription(self, record: RecordedRequest) -> tuple[int, Any]:
        body = record.json
        if not isinstance(body, dict):
            raise _HelixError(
                400, "The request body must be a JSON object (Content-Type: application/json)"
            )
        sub_type, version = body.get("type"), body.get("version")
        if not isinstance(sub_type, str) or not isinstance(version, str):
            raise _HelixError(400, "The type and version fields are required (strings)")
        if (sub_type, version) not in SUPPORTED_SUBSCRIPTIONS:
            raise _HelixError(
                400, "The combination of values in the version and type fields is not valid"
            )
        condition = body.get("condition")
        if not isinstance(condition, dict) or not condition:
            raise _HelixError(400, "The condition field is required")
        broadcaster = condition.get("broadcaster_user_id")
        if not isinstance(broadcaster, str) or not broadcaster:
            raise _HelixError(400, "The condition object is missing one or more required fields")
        if broadcaster not in {u.id for u in self.users.values()}:
            raise _HelixError(400, "The user specified in the condition object does not exist")
        transport = body.get("transport")
        if not isinstance(transport, dict) or transport.get("method") != "webhook":
            raise _HelixError(400, "The value specified in the method field is not valid")
        callback = self._check_callback(transport.get("callback"))
        secret = transport.get("secret")
        # "The secret must be an ASCII string that's a minimum of 10 characters long and a
        # maximum of 100 characters long."
        if not isinstance(secret, str) or not secret.isascii() or not 10 <= len(secret) <= 100:
            raise _HelixError(400, "The length of the string in the secret field is not valid")
        same = [
            s
            for s in self.subscriptions.values()
            if s.type == sub_type and s.condition == condition and s.status in _LIVE_STATUSES
        ]
        if any(s.callback == callback for s in same):
            # Body as Twitch sends it (quoted in twurple/twurple#214).
            raise _HelixError(409, "subscription already exists")
        if len(same) >= MAX_SAME_TYPE_AND_CONDITION:
            raise _HelixError(
                429,
                "The request exceeds the number of subscriptions that you "
                "may create with the same combination of type and condition "
                "values",
            )
        if self._totals()["total_cost"] + 1 > self.max_total_cost:
            raise _HelixError(429, "The subscription's cost exceeds max_total_cost")
        sub = FakeSubscription(
            id=str(uuid.uuid4()),
            type=sub_type,
            version=version,
            condition=dict(condition),
            callback=callback,
            secret=secret,
            created_at=rfc3339_nano(),
        )
        self.subscriptions[sub.id] = sub
        # Twitch answers 202 at once and sends the challenge afterwards.
        task = asyncio.get_running_loop().create_task(self._verify(sub))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return 202, {"data": [sub.to_json()], **self._totals()}

    def _get_subscriptions(self, record: RecordedRequest) -> tuple[int, Any]:
        filters = [
            name
            for name in ("status", "type", "user_id", "subscription_id")
            if self._values(record, name)
        ]
        # "The filters are mutually exclusive; the request fails if you specify more than one
        # filter."
        if len(filters) > 1:
            raise _HelixError(400, "The request may specify only one filter query parameter")
        subs = list(self.subscriptions.values())  # "ordered by the oldest subscription first"
        if filters:
            name = filters[0]
            value = self._values(record, name)[-1]
            if name == "status":
                if value not in SUBSCRIPTION_STATUSES:
                    raise _HelixError(400, "The value in the status query parameter is not valid")
                subs = [s for s in subs if s.status == value]
            elif name == "type":
                if value not in {t for t, _ in SUPPORTED_SUBSCRIPTIONS}:
                    raise _HelixError(400, "The value in the type query parameter is not valid")
                subs = [s for s in subs if s.type == value]
            elif name == "user_id":
                subs = [s for s in subs if value in s.condition.values()]
            else:
                subs = [s for s in subs if s.id == value]
        start = 0
        after = self._values(record, "after")
        if after:
            try:
                start = int(base64.urlsafe_b64decode(after[-1].encode()).decode())
            except ValueError:
                raise _HelixError(
                    400, "The cursor specified in the after query parameter is not valid"
                ) from None
        page = subs[start : start + self.subscriptions_page_size]
        end = start + len(page)
        pagination = (
            {"cursor": base64.urlsafe_b64encode(str(end).encode()).decode()}
            if end < len(subs)
            else {}
        )
        return 200, {
            "data": [s.to_json() for s in page],
            **self._totals(),
            "pagination": pagination,
        }

    def _delete_subscription(self, record: RecordedRequest) -> tuple[int, Any]:
        ids = self._values(record, "id")
        if not ids:
            raise _HelixError(400, "The id query parameter is required")
        sub = self.subscriptions.pop(ids[-1], None)
        if sub is None:
            raise _HelixError(404, "The subscription was not found")
        self._notify_waiters()
        return 204, None
