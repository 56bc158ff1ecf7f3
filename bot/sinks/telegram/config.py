"""The `[telegram]` section and Telegram's address grammar (what a `telegram_chats` entry is)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from bot.sinks.base import ConfigTable
from bot.tomltypes import show, type_name

#: The section's keys, in the order README documents them.
CONFIG_KEYS: Final = ("token", "token_env", "api_url", "updates")
#: `updates`: how commands reach the bot. Long polling (getUpdates) needs no public
#: address; a webhook (Telegram posts each update to `[server] public_url`) lets every
#: bot process on a shared database take commands.
UPDATES_CHOICES: Final = ("polling", "webhook")
#: Its key in `[[routes]]`.
TARGET_KEY: Final = "telegram_chats"

_DIGITS = re.compile(r"[0-9]+")
_CHAT_ID = re.compile(r"-?[0-9]+")
_CHAT_USERNAME = re.compile(r"@[A-Za-z0-9_]{5,32}")


@dataclass(frozen=True, slots=True)
class TelegramConfig:
    """The Telegram sink; `disabled_reason` says why it is off and is unused when enabled."""

    token: str | None = field(default=None, repr=False)
    api_url: str | None = None
    updates: str = "polling"
    disabled_reason: str | None = "no [telegram] section"

    @property
    def enabled(self) -> bool:
        """True when a token resolved, so the sink should start."""
        return self.token is not None


def read_config(table: ConfigTable, environ: Mapping[str, str]) -> TelegramConfig:
    """The `[telegram]` section: token or token_env, an optional Bot API server, and how
    updates arrive."""
    token, reason = table.chat_token(environ)
    return TelegramConfig(
        token=token,
        api_url=table.url("api_url", ("http", "https")),
        updates=table.choice("updates", "polling", UPDATES_CHOICES),
        disabled_reason=reason,
    )


#: The ports Telegram posts webhooks to (the Bot API's setWebhook: "Ports currently
#: supported for webhooks: 443, 80, 88, 8443").
WEBHOOK_PORTS: Final = (443, 80, 88, 8443)


def public_url_problems(platform_config: Any, public_url: str | None) -> list[str]:
    """What keeps Telegram from posting updates to `[server] public_url`, by key.

    Telegram posts only to https:// on four ports (setWebhook answers "bad webhook: An
    HTTPS URL must be provided for webhook" otherwise): said here, at `check`, rather
    than by a refused setWebhook once the bot runs.
    """
    if not isinstance(platform_config, TelegramConfig) or platform_config.updates != "webhook":
        return []
    if public_url is None:
        return [
            'telegram.updates: "webhook" needs [server] public_url, the https:// address'
            " Telegram reaches this bot's listener at (a TLS proxy in front of it)"
        ]
    parts = urlsplit(public_url)
    if parts.scheme.lower() != "https":
        return [
            f'server.public_url: Telegram posts updates (telegram.updates = "webhook") only'
            f" to https:// addresses, got {parts.scheme}://; put a TLS proxy in front"
        ]
    try:
        port = parts.port or 443
    except ValueError:
        return ["server.public_url: its port is not a number"]
    if port not in WEBHOOK_PORTS:
        ports = ", ".join(str(p) for p in WEBHOOK_PORTS[:-1]) + f" or {WEBHOOK_PORTS[-1]}"
        return [
            f'server.public_url: Telegram posts updates (telegram.updates = "webhook") only'
            f" to ports {ports}, got {port}"
        ]
    return []


#: The thread id of a forum's General topic.
GENERAL_TOPIC = 1


def parse_target(value: Any, path: str, problems: list[str]) -> str | None:
    """A Telegram chat: a numeric id (int or string) or a public "@username".

    A forum topic is the chat followed by "/<thread id>": "-1001234567890/42".
    """
    if isinstance(value, int) and not isinstance(value, bool) and value != 0:
        return str(value)
    if isinstance(value, str):
        if _CHAT_ID.fullmatch(value) and int(value) != 0:
            return str(int(value))
        if _CHAT_USERNAME.fullmatch(value):
            return value
        chat, slash, thread = value.partition("/")
        if slash and _CHAT_ID.fullmatch(chat) and int(chat) != 0 and _DIGITS.fullmatch(thread):
            if int(thread) == GENERAL_TOPIC:
                # Telegram refuses a send naming General's thread id ("message thread not
                # found"); messages without one land in General.
                problems.append(
                    f"{path}: {show(value)} names the General topic, which takes no thread"
                    f" id: route to the chat itself, {show(str(int(chat)))}"
                )
                return None
            return f"{int(chat)}/{int(thread)}"
    shown = show(value) if isinstance(value, str) else type_name(value)
    if isinstance(value, int) and not isinstance(value, bool):
        shown = "0"
    problems.append(
        f"{path}: expected a chat id like -1001234567890, a public @username"
        f" (5-32 letters, digits or _) or a forum topic like -1001234567890/42, got {shown}"
    )
    return None


def chat_id_of(target: str) -> int | str:
    """A route's chat: a numeric id ("-1001234567890"), a public "@channelname", or the
    chat of a forum topic ("-1001234567890/42")."""
    text = target.strip().partition("/")[0]
    return int(text) if _CHAT_ID.fullmatch(text) else text


def thread_id_of(target: str) -> int | None:
    """The forum topic a target like "-1001234567890/42" names (parse_target checked it)."""
    _chat, slash, thread = target.partition("/")
    return int(thread) if slash else None
