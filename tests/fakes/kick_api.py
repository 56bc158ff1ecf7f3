"""A protocol-level fake of Kick's public API (OAuth, channels, livestreams, event
subscriptions, signed webhooks), served on 127.0.0.1.

The bot talks to it as it talks to Kick, with ``auth_url`` and ``api_url`` pointed here::

    async with FakeKick() as fake:
        aurora = fake.add_channel("aurora", username="Aurora")
        fake.set_webhook_url(f"http://127.0.0.1:{bot_port}/webhook/kick")
        # config: client_id=fake.client_id, client_secret=fake.client_secret,
        #         auth_url=fake.auth_url, api_url=fake.api_url
        await fake.wait_for_subscription("livestream.status.updated", aurora.user_id)
        assert await fake.go_live("aurora", title="Speedrun", category="Celeste") == [200]

Sources, all in KickEngineering/KickDevDocs (quoted in comments by path):
``getting-started/generating-tokens-oauth2-flow.md`` (the token endpoint),
``events/introduction.md`` (one webhook URL per app, set in its settings),
``events/webhook-security.md`` (the six headers, the RSA signature, unsubscribing after a
day of failures), ``events/event-types.md`` (event names, versions and payloads),
``changelog.md``. The API pages (``apis/*.md``, ``events/subscribe-to-events.md``) only embed
Kick's OpenAPI document (api.kick.com/swagger/doc.yaml), which the mirror does not hold: the
request and answer fields below follow the shapes the brief and the bot's client name, and
every rule not found in the docs is marked "not documented" and leans strict.

API (everything a test needs; the rest is private):

- ``FakeKick(*, client_id=..., client_secret=..., webhook_url=None, token_lifetime=3600,
  delivery_timeout=5.0, event_offset=timedelta(hours=11))``; ``await start()``, ``await
  close()`` or ``async with``. ``auth_url`` is ``http://127.0.0.1:PORT/oauth``, ``api_url``
  ``http://127.0.0.1:PORT/public/v1``. ``app_id`` is the app's id in subscriptions.
  ``event_offset`` is the UTC offset event payloads write their times in: the docs'
  examples use ``+11:00`` (``"started_at": "2025-01-01T11:00:00+11:00"``), so a client
  must not assume ``Z``; ``/livestreams`` writes UTC.
- Webhooks: ``set_webhook_url(url)``; ``disable_webhooks()`` drops every subscription
  (changelog 19/12/2025: "Disabling webhooks for your app will now automatically
  unsubscribe it from all webhook events"), ``enable_webhooks()``. Deliveries reach only
  loopback URLs (a test stands in for the tunnel the docs ask for: "Localhost URLs ...
  won't work"); any other URL is recorded as unreachable.
- Keys: ``public_key_pem`` (RSA 2048, made at construction), ``rotate_key()`` (a new pair;
  old signatures stop verifying). ``sign(message_id, timestamp, body)`` signs as Kick does.
- Channels: ``add_channel(slug, *, user_id=None, username=None, title="", category=None,
  language="en", mature=False) -> FakeChannel``; ``channel(slug)``; ``channels`` (slug ->
  FakeChannel). ``add_category(name, category_id=None) -> FakeCategory``; categories named
  anywhere are added on the fly.
- Tokens: ``tokens`` (str -> FakeToken), ``expire_tokens()`` (every token issued so far
  answers 401).
- Events, each returning the HTTP status of each delivery (one per subscription of that
  event, version and broadcaster; ``None`` when it got no answer in ``delivery_timeout``):
  ``await go_live(slug, *, title=None, category=None, started_at=None,
  listed_started_at=None, listing_delay_polls=0, deliver=True)``
  (``livestream.status.updated``, ``is_live`` true; ``listed_started_at`` is the start the
  API lists, as the docs do not say it agrees with the webhook's to the second; the stream
  is hidden from the first ``listing_delay_polls`` ``/livestreams`` calls that
  ask about it; ``deliver=False`` is a lost delivery), ``await go_offline(slug, *,
  listing_delay_polls=0, deliver=True)`` (``is_live`` false; the ended stream stays listed
  for that many calls), ``await update_metadata(slug, *, title=None, category=None,
  language=None, mature=None, deliver=True)`` (``livestream.metadata.updated``, live or
  not), ``await send(event_type, payload, *, broadcaster_user_id=None, message_id=None,
  timestamp=None, forge=False, version=1)`` for anything (``payload`` a dict or raw bytes;
  ``forge=True`` signs with another key; ``timestamp`` a string or datetime, e.g.
  ``fake.timestamp(seconds_ago=90_000)``), ``await resend(delivery) -> int | None`` (the
  same headers, id, timestamp and body again, as a retry from Kick looks).
- ``deliveries``: every POST to the webhook, as ``Delivery`` (subscription id, event type
  and version, message id, timestamp, url, headers, raw body, status, response text and
  headers, elapsed, ``timed_out``, ``error``, ``resent``; ``payload`` parses the body).
- Subscriptions: ``subscriptions`` (id -> FakeSubscription); ``await
  wait_for_subscription(event, user_id, timeout=5)``.
- ``requests``: every request to the fake, as ``RecordedRequest(method, path, query,
  headers, json, form, status, response)``; ``requests_to(path, method=None)`` (path
  relative to the server, e.g. ``"/public/v1/livestreams"``); ``await
  wait_for_request(path, method=None, count=1, timeout=5)`` (the ``count``-th such one).
- Faults (``path`` relative to ``api_url``, e.g. ``"/livestreams"``; None: any API path):
  ``rate_limit_next(n=1, *, retry_after=1.0, path=None)`` answers 429 with ``Retry-After``
  (whole seconds, RFC 9110; Kick documents no rate limits or headers, so no
  ``Ratelimit-*``); ``fail_next(path, status, n=1, *, message=None)``.

Served (anything else 404, a known path with another method 405), errors as ``{"data":
{}, "message": M}`` (not documented beyond ``message``):

- ``POST /oauth/token`` with a form body only, as documented (``Content-Type:
  application/x-www-form-urlencoded``, "Body": client_id, client_secret, grant_type):
  ``{"access_token", "token_type": "Bearer", "expires_in"}``; a missing field, another
  grant or another body answers the documented 400 ``{"error": "Invalid request"}``; a
  wrong client id or secret 401 ``{"error": "invalid_client", ...}`` (not documented: RFC
  6749's). Any other ``Authorization`` than ``Bearer <live token>`` answers 401 ``{"data":
  {}, "message": "Unauthorized"}``.
- ``GET /public/v1/public-key`` (no token), and with ``Authorization: Bearer <app token>``:
  ``GET /channels`` (``slug`` or ``broadcaster_user_id``, not both, 50 at most, exact
  matches, unknown ones left out), ``GET /livestreams`` (``broadcaster_user_id`` 50 at
  most, ``limit``), ``GET /events/subscriptions`` (``broadcaster_user_id`` filter),
  ``POST /events/subscriptions`` (integer ``broadcaster_user_id`` and ``version``, ``method``
  "webhook"; 400 for a malformed body or an unknown broadcaster; an unknown event or
  version is an item with ``error`` and no ``subscription_id``, the others are made; a
  duplicate answers the existing id), ``DELETE /events/subscriptions?id=...`` (204,
  unknown ids ignored).

Not modelled: user tokens, scopes and the authorization-code flow; other endpoints
(``/public/v2/livestreams``, categories, users, chat...); Kick's retries of failed
deliveries (the docs describe none, only that "If an app's webhook continually fails to
process an event for over a day, Kick automatically unsubscribes the app from that event":
send retries with ``resend``, drop subscriptions by deleting them or with
``disable_webhooks``); rate limits other than injected ones.
"""

from __future__ import annotations

import asyncio
import base64
import http
import itertools
import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "EVENTS",
    "Delivery",
    "FakeCategory",
    "FakeChannel",
    "FakeKick",
    "FakeStream",
    "FakeSubscription",
    "FakeToken",
    "RecordedRequest",
    "rfc3339",
    "ulid",
]

# events/event-types.md, "Events": every name, each at version 1 only.
EVENTS = frozenset(
    {
        ("chat.message.sent", 1),
        ("channel.followed", 1),
        ("channel.subscription.renewal", 1),
        ("channel.subscription.gifts", 1),
        ("channel.subscription.new", 1),
        ("channel.reward.redemption.updated", 1),
        ("livestream.status.updated", 1),
        ("livestream.metadata.updated", 1),
        ("moderation.banned", 1),
        ("kicks.gifted", 1),
    }
)
STATUS_UPDATED = "livestream.status.updated"
METADATA_UPDATED = "livestream.metadata.updated"
#: "up to 50" ids or slugs per call (apis/channels.md, as the bot's client cites it).
MAX_IDS = 50
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Go's zero time: what a Go API writes for a time it has not got (not documented).
_ZERO_TIME = "0001-01-01T00:00:00Z"

_T = TypeVar("_T")


def ulid(ms: int | None = None) -> str:
    """A ULID (48-bit millisecond time, 80 random bits) in Crockford base32, 26 chars.

    webhook-security.md types ``Kick-Event-Message-Id`` and ``Kick-Event-Subscription-Id``
    as ULID.
    """
    ms = time.time_ns() // 1_000_000 if ms is None else ms
    value = (ms << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def rfc3339(moment: datetime) -> str:
    """A time to the second in RFC 3339, ``Z`` for UTC and its offset otherwise."""
    text = moment.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _dumps(obj: Any) -> bytes:
    # Compact like Go's json.Marshal, non-ASCII as UTF-8: a receiver that re-serializes the
    # parsed body before checking the signature gets other bytes.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class FakeCategory:
    """A Kick category."""

    id: int
    name: str

    def to_json(self) -> dict[str, Any]:
        """``{"id", "name", "thumbnail"}`` as events and the API write it."""
        return {
            "id": self.id,
            "name": self.name,
            "thumbnail": f"https://files.kick.com/images/subcategories/{self.id}/banner.webp",
        }


_NO_CATEGORY: dict[str, Any] = {"id": 0, "name": "", "thumbnail": ""}  # not documented


@dataclass
class FakeStream:
    """A channel's stream: live, or ended and still listed for ``linger_polls`` calls."""

    started_at: datetime
    hidden_polls: int = 0
    #: The start time the API lists, when it differs from the webhook's.
    listed_started_at: datetime | None = None
    is_live: bool = True
    ended_at: datetime | None = None
    linger_polls: int = 0
    viewer_count: int = 1

    @property
    def listed_start(self) -> datetime:
        """The start time ``/livestreams`` and ``/channels`` write."""
        return self.listed_started_at or self.started_at


@dataclass
class FakeChannel:
    """A Kick user and their channel (slug, ids, title, category) and stream."""

    slug: str
    user_id: int
    channel_id: int
    username: str
    title: str = ""
    category: FakeCategory | None = None
    language: str = "en"
    mature: bool = False
    description: str = ""
    is_verified: bool = False
    stream: FakeStream | None = None

    @property
    def profile_picture(self) -> str:
        """The avatar URL."""
        return (
            f"https://files.kick.com/images/user/{self.user_id}/profile_image/conversion/fake.webp"
        )

    @property
    def live(self) -> bool:
        """Whether the channel is live now."""
        return self.stream is not None and self.stream.is_live

    def _category(self) -> dict[str, Any]:
        return self.category.to_json() if self.category else dict(_NO_CATEGORY)

    def broadcaster_json(self) -> dict[str, Any]:
        """The ``broadcaster`` object of events (event-types.md)."""
        return {
            "is_anonymous": False,
            "user_id": self.user_id,
            "username": self.username,
            "is_verified": self.is_verified,
            "profile_picture": self.profile_picture,
            "channel_slug": self.slug,
            "identity": None,  # "no identity for broadcasters at the moment"
        }

    def channel_json(self) -> dict[str, Any]:
        """The channel as ``GET /channels`` answers it."""
        stream = self.stream if self.live else None
        return {
            "banner_picture": f"https://files.kick.com/images/channel/{self.channel_id}/banner.webp",
            "broadcaster_user_id": self.user_id,
            "category": self._category(),
            "channel_description": self.description,
            "slug": self.slug,
            "stream": {
                "is_live": stream is not None,
                "is_mature": self.mature,
                "key": "",  # the stream key is the owner's only (not documented)
                "language": self.language,
                "start_time": rfc3339(stream.listed_start) if stream else _ZERO_TIME,
                "thumbnail": self._thumbnail() if stream else "",
                "url": "",
                "viewer_count": stream.viewer_count if stream else 0,
            },
            "stream_title": self.title,
        }

    def livestream_json(self) -> dict[str, Any]:
        """The stream as ``GET /livestreams`` answers it."""
        assert self.stream is not None
        return {
            "broadcaster_user_id": self.user_id,
            "category": self._category(),
            "channel_id": self.channel_id,
            "custom_tags": [],
            "has_mature_content": self.mature,
            "language": self.language,
            "profile_picture": self.profile_picture,
            "slug": self.slug,
            "started_at": rfc3339(self.stream.listed_start),
            "stream_title": self.title,
            "thumbnail": self._thumbnail(),
            "viewer_count": self.stream.viewer_count,
        }

    def _thumbnail(self) -> str:
        return f"https://images.kick.com/video_thumbnails/{self.slug}/fake/480.webp"


@dataclass
class FakeToken:
    """An app access token."""

    token: str
    expires_at: float  # time.monotonic()

    @property
    def valid(self) -> bool:
        """Whether the API still takes it."""
        return time.monotonic() < self.expires_at


@dataclass
class FakeSubscription:
    """One event subscription of the app."""

    id: str
    app_id: str
    broadcaster_user_id: int
    event: str
    version: int
    created_at: str

    def to_json(self) -> dict[str, Any]:
        """As ``GET /events/subscriptions`` lists it."""
        return {
            "app_id": self.app_id,
            "broadcaster_user_id": self.broadcaster_user_id,
            "created_at": self.created_at,
            "event": self.event,
            "id": self.id,
            "method": "webhook",
            "updated_at": self.created_at,
            "version": self.version,
        }


@dataclass
class Delivery:
    """One POST the fake made to the app's webhook, and how it was answered."""

    subscription_id: str
    event_type: str
    version: int
    message_id: str
    timestamp: str
    url: str | None
    headers: dict[str, str]
    body: bytes
    resent: bool = False
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
    json_error: bool = False
    form: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    response: Any = None


@dataclass
class _Fault:
    path: str | None
    status: int
    message: str
    times: int
    retry_after: float = 0.0


class _KickError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeKick:
    """The fake Kick; see the module docstring for its API."""

    def __init__(
        self,
        *,
        client_id: str = "01FAKEKICKCLIENTID0123456",
        client_secret: str = "fake-kick-client-secret-0123456789abcdef",
        webhook_url: str | None = None,
        token_lifetime: float = 3600,
        delivery_timeout: float = 5.0,
        event_offset: timedelta = timedelta(hours=11),
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.webhook_url = webhook_url
        self.webhooks_enabled = True
        self.token_lifetime = token_lifetime
        self.delivery_timeout = delivery_timeout
        self.event_offset = timezone(event_offset)
        self.app_id = ulid()
        self.auth_url = ""
        self.api_url = ""
        self.channels: dict[str, FakeChannel] = {}
        self.categories: dict[str, FakeCategory] = {}
        self.tokens: dict[str, FakeToken] = {}
        self.subscriptions: dict[str, FakeSubscription] = {}
        self.requests: list[RecordedRequest] = []
        self.deliveries: list[Delivery] = []

        self._key = _new_key()
        self._forger: rsa.RSAPrivateKey | None = None
        self._faults: list[_Fault] = []
        self._user_ids = itertools.count(123456789)
        self._channel_ids = itertools.count(4_000_001)
        self._category_ids = itertools.count(101)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port and set ``auth_url`` and ``api_url``."""
        app = web.Application()
        app.router.add_route("*", "/oauth/token", self._recorded(self._token))
        app.router.add_route("*", "/public/v1/{path:.*}", self._recorded(self._api))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.auth_url = f"http://{host}:{port}/oauth"
        self.api_url = f"http://{host}:{port}/public/v1"
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        """Stop the client session and the server (idempotent)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeKick:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- test-facing state -------------------------------------------------------------

    @property
    def public_key_pem(self) -> str:
        """The current public key, PEM ("-----BEGIN PUBLIC KEY-----", as the docs show)."""
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def rotate_key(self) -> None:
        """A new key pair: what was signed before no longer verifies with the new key."""
        self._key = _new_key()

    def sign(self, message_id: str, timestamp: str, body: bytes, *, forge: bool = False) -> str:
        """``Kick-Event-Signature``: base64 of RSA PKCS#1 v1.5 SHA-256 over
        ``"{message_id}.{timestamp}.{body}"`` (webhook-security.md, "Signature Creation";
        its Go example checks with ``rsa.VerifyPKCS1v15(publicKey, crypto.SHA256, ...)``)."""
        if forge and self._forger is None:
            self._forger = _new_key()
        key = self._forger if forge and self._forger is not None else self._key
        signed = f"{message_id}.{timestamp}.".encode() + body
        return base64.b64encode(key.sign(signed, padding.PKCS1v15(), hashes.SHA256())).decode()

    def add_category(self, name: str, category_id: int | None = None) -> FakeCategory:
        """The category of this name, made if needed."""
        if name not in self.categories:
            self.categories[name] = FakeCategory(category_id or next(self._category_ids), name)
        return self.categories[name]

    def add_channel(
        self,
        slug: str,
        *,
        user_id: int | None = None,
        username: str | None = None,
        title: str = "",
        category: str | None = None,
        language: str = "en",
        mature: bool = False,
    ) -> FakeChannel:
        """A user and their channel; slugs are lower case on Kick (as in kick.com/<slug>)."""
        if slug != slug.lower() or not slug:
            raise ValueError(f"Kick slugs are lower case: {slug!r}")
        channel = FakeChannel(
            slug=slug,
            user_id=user_id if user_id is not None else next(self._user_ids),
            channel_id=next(self._channel_ids),
            username=username or slug,
            title=title,
            category=self.add_category(category) if category else None,
            language=language,
            mature=mature,
        )
        self.channels[slug] = channel
        return channel

    def channel(self, slug: str) -> FakeChannel:
        """The channel with this slug (KeyError names it)."""
        try:
            return self.channels[slug]
        except KeyError:
            raise KeyError(f"no such Kick channel in the fake: {slug!r}") from None

    def set_webhook_url(self, url: str | None) -> None:
        """The app's one webhook URL ("Webhook URL" in the app's settings, introduction.md)."""
        self.webhook_url = url

    def disable_webhooks(self) -> None:
        """Switch "Enable Webhooks" off: every subscription goes (changelog 19/12/2025)."""
        self.webhooks_enabled = False
        self.subscriptions.clear()
        self._notify_waiters()

    def enable_webhooks(self) -> None:
        """Switch "Enable Webhooks" on again (the app must subscribe again)."""
        self.webhooks_enabled = True

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (the API answers 401 to it)."""
        for token in self.tokens.values():
            token.expires_at = 0.0

    def rate_limit_next(
        self, n: int = 1, *, retry_after: float = 1.0, path: str | None = None
    ) -> None:
        """Answer the next ``n`` API calls (to ``path``, or any) 429 with ``Retry-After``."""
        self._faults.append(_Fault(path, 429, "Too Many Requests", n, retry_after))

    def fail_next(
        self, path: str | None, status: int, n: int = 1, *, message: str | None = None
    ) -> None:
        """Answer the next ``n`` API calls to ``path`` (None: any) with this status."""
        self._faults.append(_Fault(path, status, message or http.HTTPStatus(status).phrase, n))

    def timestamp(self, *, seconds_ago: float = 0.0) -> str:
        """A ``Kick-Event-Message-Timestamp`` ``seconds_ago`` in the past."""
        return rfc3339(_now() - timedelta(seconds=seconds_ago))

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """The answered requests to one path (relative to the server), in order."""
        return [
            r
            for r in self.requests
            if r.path == path and r.status is not None and method in (None, r.method)
        ]

    async def wait_for_request(
        self, path: str, method: str | None = None, count: int = 1, timeout: float = 5
    ) -> RecordedRequest:
        """The ``count``-th answered request to ``path`` (and ``method``), now or later."""

        def find() -> RecordedRequest | None:
            found = self.requests_to(path, method)
            return found[count - 1] if len(found) >= count else None

        return await self._wait(
            find,
            timeout,
            lambda: (
                f"fewer than {count} {method or ''} {path}; saw "
                f"{[(r.method, r.path, r.status) for r in self.requests]}"
            ),
        )

    async def wait_for_subscription(
        self, event: str, user_id: int | str, timeout: float = 5
    ) -> FakeSubscription:
        """The first subscription to ``event`` for this broadcaster, now or later."""

        def find() -> FakeSubscription | None:
            for sub in self.subscriptions.values():
                if sub.event == event and str(sub.broadcaster_user_id) == str(user_id):
                    return sub
            return None

        return await self._wait(
            find,
            timeout,
            lambda: (
                f"no {event} for {user_id}; have "
                f"{[(s.event, s.broadcaster_user_id) for s in self.subscriptions.values()]}"
            ),
        )

    # ---- events ------------------------------------------------------------------------

    async def go_live(
        self,
        slug: str,
        *,
        title: str | None = None,
        category: str | None = None,
        started_at: datetime | None = None,
        listed_started_at: datetime | None = None,
        listing_delay_polls: int = 0,
        deliver: bool = True,
    ) -> list[int | None]:
        """Start a stream and send ``livestream.status.updated`` with ``is_live`` true
        (``listed_started_at``: the API's start time, when it is to differ)."""
        channel = self.channel(slug)
        if channel.live:
            raise ValueError(f"{slug} is live already (send or resend a duplicate instead)")
        self._set(channel, title=title, category=category)
        started = (started_at or _now()).astimezone(UTC).replace(microsecond=0)
        listed = (
            listed_started_at.astimezone(UTC).replace(microsecond=0) if listed_started_at else None
        )
        channel.stream = FakeStream(
            started_at=started, hidden_polls=listing_delay_polls, listed_started_at=listed
        )
        if not deliver:
            return []
        # event-types.md, "Livestream Status Updated", "Stream started".
        payload = {
            "broadcaster": channel.broadcaster_json(),
            "is_live": True,
            "title": channel.title,
            "started_at": rfc3339(started.astimezone(self.event_offset)),
            "ended_at": None,
        }
        return await self.send(STATUS_UPDATED, payload)

    async def go_offline(
        self, slug: str, *, listing_delay_polls: int = 0, deliver: bool = True
    ) -> list[int | None]:
        """End the stream and send ``livestream.status.updated`` with ``is_live`` false."""
        channel = self.channel(slug)
        stream = channel.stream
        if stream is None or not stream.is_live:
            raise ValueError(f"{slug} is not live")
        stream.is_live, stream.ended_at = False, _now()
        stream.linger_polls = listing_delay_polls
        if not listing_delay_polls:
            channel.stream = None
        if not deliver:
            return []
        # event-types.md, "Stream ended": the stream's started_at and its ended_at.
        payload = {
            "broadcaster": channel.broadcaster_json(),
            "is_live": False,
            "title": channel.title,
            "started_at": rfc3339(stream.started_at.astimezone(self.event_offset)),
            "ended_at": rfc3339(stream.ended_at.astimezone(self.event_offset)),
        }
        return await self.send(STATUS_UPDATED, payload)

    async def update_metadata(
        self,
        slug: str,
        *,
        title: str | None = None,
        category: str | None = None,
        language: str | None = None,
        mature: bool | None = None,
        deliver: bool = True,
    ) -> list[int | None]:
        """Change the channel and send ``livestream.metadata.updated`` (live or not)."""
        channel = self.channel(slug)
        self._set(channel, title=title, category=category)
        if language is not None:
            channel.language = language
        if mature is not None:
            channel.mature = mature
        if not deliver:
            return []
        # event-types.md, "Livestream Metadata Updated".
        payload = {
            "broadcaster": channel.broadcaster_json(),
            "metadata": {
                "title": channel.title,
                "language": channel.language,
                "has_mature_content": channel.mature,
                "category": channel._category(),
            },
        }
        return await self.send(METADATA_UPDATED, payload)

    async def send(
        self,
        event_type: str,
        payload: dict[str, Any] | bytes,
        *,
        broadcaster_user_id: int | None = None,
        message_id: str | None = None,
        timestamp: str | datetime | None = None,
        forge: bool = False,
        version: int = 1,
    ) -> list[int | None]:
        """Deliver ``payload`` once per subscription to this event, version and broadcaster
        (the broadcaster is ``payload["broadcaster"]["user_id"]`` unless given)."""
        if broadcaster_user_id is None:
            if not isinstance(payload, dict):
                raise TypeError("raw bytes need broadcaster_user_id=")
            broadcaster_user_id = int(payload["broadcaster"]["user_id"])
        body = payload if isinstance(payload, bytes) else _dumps(payload)
        if isinstance(timestamp, datetime):
            timestamp = rfc3339(timestamp)
        statuses: list[int | None] = []
        for sub in list(self.subscriptions.values()):
            if (sub.event, sub.version, sub.broadcaster_user_id) != (
                event_type,
                version,
                broadcaster_user_id,
            ):
                continue
            mid, stamp = message_id or ulid(), timestamp or self.timestamp()
            # webhook-security.md, "Headers", in its order.
            headers = {
                "Content-Type": "application/json",
                "Kick-Event-Message-Id": mid,
                "Kick-Event-Subscription-Id": sub.id,
                "Kick-Event-Signature": self.sign(mid, stamp, body, forge=forge),
                "Kick-Event-Message-Timestamp": stamp,
                "Kick-Event-Type": event_type,
                "Kick-Event-Version": str(version),
            }
            delivery = Delivery(sub.id, event_type, version, mid, stamp, None, headers, body)
            statuses.append((await self._deliver(delivery)).status)
        return statuses

    async def resend(self, delivery: Delivery) -> int | None:
        """Send a recorded delivery again, byte for byte (id, timestamp, signature, body)."""
        again = Delivery(
            delivery.subscription_id,
            delivery.event_type,
            delivery.version,
            delivery.message_id,
            delivery.timestamp,
            None,
            dict(delivery.headers),
            delivery.body,
            resent=True,
        )
        return (await self._deliver(again)).status

    # ---- internals: plumbing -----------------------------------------------------------

    def _set(self, channel: FakeChannel, *, title: str | None, category: str | None) -> None:
        if title is not None:
            channel.title = title
        if category is not None:
            channel.category = self.add_category(category)

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

    async def _deliver(self, delivery: Delivery) -> Delivery:
        delivery.url = self.webhook_url
        self.deliveries.append(delivery)
        url = self.webhook_url
        if url is None:
            delivery.error = "the app has no webhook URL (set_webhook_url)"
        elif urlsplit(url).hostname not in {"127.0.0.1", "localhost", "::1"}:
            delivery.error = "unreachable: the fake delivers to loopback URLs only"
        if delivery.error is not None or url is None:
            self._notify_waiters()
            return delivery
        assert self._session is not None, "FakeKick is not started"
        began = time.monotonic()
        try:
            async with self._session.post(
                url,
                data=delivery.body,
                headers=delivery.headers,
                allow_redirects=False,  # not documented; redirects are not followed
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
            if request.content_type == "application/json":
                try:
                    record.json = json.loads(raw)
                except ValueError:
                    record.json_error = True
            elif raw and request.content_type == "application/x-www-form-urlencoded":
                record.form = {k: str(v) for k, v in (await request.post()).items()}
            response: web.Response = await handler(request, record)
            record.status = response.status
            if response.text:
                try:
                    record.response = json.loads(response.text)
                except ValueError:
                    record.response = response.text
            self._notify_waiters()
            return response

        return handle

    # ---- OAuth -------------------------------------------------------------------------

    async def _token(self, request: web.Request, record: RecordedRequest) -> web.Response:
        if request.method != "POST":
            return web.json_response({"error": "Method Not Allowed"}, status=405)
        # "App Access Token Endpoint": Content-Type application/x-www-form-urlencoded
        # (required) and the three fields in the body; the documented 400 is {"error":
        # "Invalid request"}. Query parameters are not documented, so they are not read.
        invalid = web.json_response({"error": "Invalid request"}, status=400)
        if request.content_type != "application/x-www-form-urlencoded":
            return invalid
        form = record.form
        if form.get("grant_type") != "client_credentials":
            return invalid  # only client credentials is modelled
        if not form.get("client_id") or not form.get("client_secret"):
            return invalid
        if not (
            secrets.compare_digest(form["client_id"], self.client_id)
            and secrets.compare_digest(form["client_secret"], self.client_secret)
        ):
            # Not documented: RFC 6749 5.2's 401 invalid_client.
            return web.json_response(
                {"error": "invalid_client", "error_description": "client authentication failed"},
                status=401,
            )
        token = secrets.token_urlsafe(32)
        self.tokens[token] = FakeToken(token, time.monotonic() + self.token_lifetime)
        # The docs' example answer has access_token, token_type, expires_in (its values are
        # blank placeholders; expires_in is written as seconds, an integer, per RFC 6749).
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": int(self.token_lifetime)}
        )

    # ---- the public API ----------------------------------------------------------------

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.path in (None, path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _authorize(self, request: web.Request) -> None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = self.tokens.get(value) if scheme == "Bearer" else None
        if token is None or not token.valid:
            raise _KickError(401, "Unauthorized")

    async def _api(self, request: web.Request, record: RecordedRequest) -> web.Response:
        path = "/" + request.match_info["path"]
        routes: dict[tuple[str, str], Callable[[RecordedRequest], tuple[int, Any]]] = {
            ("GET", "/public-key"): self._public_key,
            ("GET", "/channels"): self._get_channels,
            ("GET", "/livestreams"): self._get_livestreams,
            ("GET", "/events/subscriptions"): self._get_subscriptions,
            ("POST", "/events/subscriptions"): self._create_subscriptions,
            ("DELETE", "/events/subscriptions"): self._delete_subscriptions,
        }
        try:
            # The public key needs no token (it is what anyone verifies with).
            if path != "/public-key":
                self._authorize(request)
            fault = self._take_fault(path)
            if fault is not None and fault.status == 429:
                after = str(math.ceil(fault.retry_after))
                raise _KickError(429, fault.message, {"Retry-After": after})
            if fault is not None:
                raise _KickError(fault.status, fault.message)
            handler = routes.get((request.method, path))
            if handler is None:
                known = any(p == path for _m, p in routes)
                raise _KickError(
                    405 if known else 404, http.HTTPStatus(405 if known else 404).phrase
                )
            status, body = handler(record)
        except _KickError as exc:
            return web.json_response(
                {"data": {}, "message": exc.message}, status=exc.status, headers=exc.headers
            )
        if status == 204:
            return web.Response(status=204)
        return web.json_response({"data": body, "message": "OK"}, status=status)

    def _public_key(self, record: RecordedRequest) -> tuple[int, Any]:
        return 200, {"public_key": self.public_key_pem}

    @staticmethod
    def _ints(record: RecordedRequest, name: str) -> list[int]:
        values = record.query.get(name, [])
        if len(values) > MAX_IDS:
            raise _KickError(400, f"{name}: at most {MAX_IDS} values")
        if not all(v.isascii() and v.isdigit() for v in values):
            raise _KickError(400, f"{name} must be integers")
        return [int(v) for v in values]

    def _get_channels(self, record: RecordedRequest) -> tuple[int, Any]:
        slugs = record.query.get("slug", [])
        ids = self._ints(record, "broadcaster_user_id")
        if len(slugs) > MAX_IDS:
            raise _KickError(400, f"slug: at most {MAX_IDS} values")
        if slugs and ids:
            # Not documented: one kind of filter per call.
            raise _KickError(400, "use slug or broadcaster_user_id, not both")
        if not slugs and not ids:
            # An app token has no channel of its own (not documented).
            raise _KickError(400, "slug or broadcaster_user_id is required")
        # Unknown slugs and ids are left out; matched exactly (not documented).
        found = [
            c.channel_json() for c in self.channels.values() if c.slug in slugs or c.user_id in ids
        ]
        return 200, found

    def _listed(self, channel: FakeChannel) -> bool:
        stream = channel.stream
        if stream is None:
            return False
        if stream.is_live:
            if stream.hidden_polls > 0:
                stream.hidden_polls -= 1
                return False
            return True
        if stream.linger_polls > 0:
            stream.linger_polls -= 1
            return True
        channel.stream = None  # ended and no longer listed
        return False

    def _get_livestreams(self, record: RecordedRequest) -> tuple[int, Any]:
        ids = self._ints(record, "broadcaster_user_id")
        limit_raw = (record.query.get("limit") or ["25"])[-1]
        # Not documented here (the OpenAPI is not mirrored): limit 1..100, default 25.
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 100:
            raise _KickError(400, "limit must be between 1 and 100")
        found = [
            c.livestream_json()
            for c in list(self.channels.values())
            if (not ids or c.user_id in ids) and self._listed(c)
        ]
        return 200, found[: int(limit_raw)]

    def _get_subscriptions(self, record: RecordedRequest) -> tuple[int, Any]:
        ids = self._ints(record, "broadcaster_user_id")
        return 200, [
            s.to_json()
            for s in self.subscriptions.values()
            if not ids or s.broadcaster_user_id in ids
        ]

    def _create_subscriptions(self, record: RecordedRequest) -> tuple[int, Any]:
        body = record.json
        if record.json_error or not isinstance(body, dict):
            raise _KickError(
                400, "the body must be a JSON object (Content-Type: application/json)"
            )
        broadcaster = body.get("broadcaster_user_id")
        # An integer, as Kick's examples send it; a string is refused (not documented, as
        # a Go API unmarshalling into an int would). Required with an app token
        # (introduction.md: "given you supply the user ID of that channel").
        if not isinstance(broadcaster, int) or isinstance(broadcaster, bool):
            raise _KickError(400, "broadcaster_user_id is required (an integer)")
        if body.get("method") != "webhook":
            raise _KickError(400, 'method must be "webhook"')
        events = body.get("events")
        if not isinstance(events, list) or not events:
            raise _KickError(400, "events is required (a non-empty list)")
        for item in events:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("name"), str)
                or not isinstance(item.get("version"), int)
                or isinstance(item.get("version"), bool)
            ):
                raise _KickError(400, "each event needs a name (string) and version (integer)")
        if broadcaster not in {c.user_id for c in self.channels.values()}:
            raise _KickError(400, "broadcaster not found")
        if not self.webhooks_enabled:
            raise _KickError(400, "webhooks are not enabled for this app")  # not documented
        results = []
        for item in events:
            name, version = item["name"], item["version"]
            result: dict[str, Any] = {"name": name, "version": version}
            if (name, version) not in EVENTS:
                # Not documented: a per-item error; the others are still made.
                known = any(n == name for n, _v in EVENTS)
                result["error"] = "unsupported event version" if known else "unknown event"
                results.append(result)
                continue
            same = [
                s
                for s in self.subscriptions.values()
                if (s.broadcaster_user_id, s.event, s.version) == (broadcaster, name, version)
            ]
            if same:
                # Not documented: a duplicate gets the existing subscription's id.
                result["subscription_id"] = same[0].id
            else:
                sub = FakeSubscription(
                    id=ulid(),
                    app_id=self.app_id,
                    broadcaster_user_id=broadcaster,
                    event=name,
                    version=version,
                    created_at=rfc3339(_now()),
                )
                self.subscriptions[sub.id] = sub
                result["subscription_id"] = sub.id
            results.append(result)
        return 200, results

    def _delete_subscriptions(self, record: RecordedRequest) -> tuple[int, Any]:
        ids = record.query.get("id", [])
        if not ids:
            raise _KickError(400, "id is required")
        if len(ids) > MAX_IDS:
            raise _KickError(400, f"id: at most {MAX_IDS} values")  # not documented
        # Not documented: unknown ids are ignored (the bot's client accepts a 404 too).
        for sub_id in ids:
            self.subscriptions.pop(sub_id, None)
        return 204, None
