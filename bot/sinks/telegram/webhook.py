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

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from bot.errors import AuthError, NotReady, PayloadError, SchemaError
from bot.sinks.base import WebRoute
from bot.sources.base import WebhookRequest

#: The header Telegram sends the secret_token in.
SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"
#: Where the route lives on the listener; the rest of its path is secret.
PATH_PREFIX: Final = "/telegram/"
SHOWN_PATH: Final = PATH_PREFIX + "***"


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
