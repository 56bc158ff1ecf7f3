"""Telegram's updates by webhook (`[telegram] updates = "webhook"`): where Telegram is
told to post them, and the checks on what arrives there.

Every bot process on a shared database serves the route, so commands reach whichever
process the load balancer picks, and none of them long-polls (Telegram answers
getUpdates with 409 while a webhook is set).

The route's path and Telegram's `secret_token` are derived from the bot token, so every
process computes the same ones from bot.toml alone, nothing is stored, and a new token
(the usual answer to a leaked one) moves both. The path keeps strangers from finding the
route; the header (X-Telegram-Bot-Api-Secret-Token, "the request will contain a header
... with the secret token as content", setWebhook in the Bot API) proves the request is
Telegram's, and is compared in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from telegram.error import RetryAfter
from telegram.ext import ExtBot

from bot.errors import AuthError, NotReady, PayloadError, SchemaError
from bot.sinks.base import WebRoute
from bot.sinks.telegram.client import no_resends
from bot.sinks.telegram.errors import retry_after_seconds
from bot.sources.base import WebhookRequest

#: The header Telegram sends the secret_token in.
SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"
#: Where the route lives on the listener; the rest of its path is secret.
PATH_PREFIX: Final = "/telegram/"
SHOWN_PATH: Final = PATH_PREFIX + "***"
#: setWebhook attempts at a start before it counts as failed (and is retried later).
SET_ATTEMPTS: Final = 3

log = logging.getLogger(__package__)


def _derived(token: str, purpose: bytes) -> str:
    label = b"streambot telegram webhook " + purpose
    return hmac.new(token.encode(), label, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where Telegram posts this bot's updates, and the secret it sends with them."""

    #: `[server] public_url`, no trailing slash.
    public_url: str
    path: str = field(repr=False)
    #: 64 hex digits: within setWebhook's 1-256 characters of A-Z, a-z, 0-9, _ and -.
    secret_token: str = field(repr=False)

    @classmethod
    def for_token(cls, token: str, public_url: str) -> Webhook:
        """The webhook every process with this bot token and public URL agrees on."""
        return cls(
            public_url=public_url.rstrip("/"),
            path=PATH_PREFIX + _derived(token, b"path")[:32],
            secret_token=_derived(token, b"secret_token"),
        )

    @property
    def url(self) -> str:
        """The URL to give setWebhook (secret: its path is)."""
        return self.public_url + self.path

    @property
    def secrets(self) -> tuple[str, str]:
        """What logs must never show: the path's secret part and the secret_token."""
        return self.path.removeprefix(PATH_PREFIX), self.secret_token

    @property
    def shown_url(self) -> str:
        """The URL as logs show it."""
        return self.public_url + SHOWN_PATH

    def route(self, deliver: Callable[[dict[str, Any]], Awaitable[bool]]) -> WebRoute:
        """The listener's route: checks each request, then hands its update to `deliver`,
        which answers False while it cannot take updates (not connected yet)."""

        async def receive(request: WebhookRequest) -> None:
            update = self.checked(request)
            if not await deliver(update):
                # Telegram keeps the update and posts it again: nothing is lost.
                raise NotReady("telegram is not connected yet; retry later")

        return WebRoute(path=self.path, shown=SHOWN_PATH, name="telegram", receive=receive)

    def checked(self, request: WebhookRequest) -> dict[str, Any]:
        """The update in a request that carries the secret; refusals say what is wrong."""
        given = request.header(SECRET_HEADER)
        if given is None:
            raise AuthError(reason=f"no {SECRET_HEADER} header")
        if not hmac.compare_digest(given.encode(), self.secret_token.encode()):
            raise AuthError(
                reason=f"the {SECRET_HEADER} header is not this bot's (another bot's webhook?)"
            )
        try:
            update = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PayloadError(f"the body is not JSON: {exc}") from None
        if not isinstance(update, dict):
            raise SchemaError("update", "expected a JSON object (a Telegram Update)")
        update_id = update.get("update_id")
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            raise SchemaError("update_id", "expected an integer")
        return update


async def ensure_set(bot: ExtBot[Any], webhook: Webhook, allowed_updates: Sequence[str]) -> None:
    """Have Telegram post this bot's updates to `webhook`, unless it already does.

    Every process sets the same webhook at its start. Telegram takes one setWebhook a
    second per bot and answers others with 429 (telegram-bot-api's Client.cpp,
    "Too Many Requests: retry after 1"), so processes starting together, or one
    restarting while the others run, would be refused. getWebhookInfo first: when the
    URL and the update types are already this bot's, nothing is set (the secret_token
    cannot be read back, but it is derived from the same token as the URL's path, so
    the same URL means the same secret). After a 429 the next look usually finds the
    webhook another process has just set.
    """
    wanted = set(allowed_updates)
    for attempt in range(1, SET_ATTEMPTS + 1):
        info = await bot.get_webhook_info()
        if info.url == webhook.url and set(info.allowed_updates or ()) == wanted:
            log.debug("telegram: the webhook is already set")
            return
        try:
            # Not the rate limiter's blind resends: each would count as another
            # setWebhook within the second, and keep the processes refusing each
            # other. Wait here, then look again.
            with no_resends():
                await bot.set_webhook(
                    url=webhook.url,
                    secret_token=webhook.secret_token,
                    allowed_updates=list(allowed_updates),
                )
        except RetryAfter as exc:
            if attempt == SET_ATTEMPTS:
                raise
            await asyncio.sleep(retry_after_seconds(exc))
        else:
            return
