"""Twitch, natively: EventSub webhooks, with the subscriptions made and kept by the bot.

`source.TwitchSource` verifies and parses the webhooks, `eventsub` holds the protocol,
`follow.Follower` keeps the subscriptions and asks Helix for what `stream.online` lacks,
`helix` talks to Twitch's API. This module declares the source (`SPEC`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from bot.sources.spec import Credential, OptionTable, SourceSpec
from bot.sources.twitch import eventsub
from bot.sources.twitch.follow import LOGIN
from bot.sources.twitch.source import (
    API_URL,
    AUTH_URL,
    CALLBACK_URL,
    CHANNELS,
    CLIENT_ID,
    CLIENT_SECRET,
    RECONCILE_INTERVAL,
    TYPES,
    TwitchSource,
)

__all__ = ["SPEC", "TwitchSource"]

#: Where init points `client_secret_env`: the secret is Twitch's, pasted by the user.
CLIENT_SECRET_ENV: Final = "TWITCH_CLIENT_SECRET"


def _check(values: Mapping[str, object], table: OptionTable) -> None:
    """The keys that only make sense together, and Twitch's own rules for each."""
    if not values.get(CLIENT_ID.key):
        table.problem(
            CLIENT_ID.key,
            "is required: the Client ID of your application at dev.twitch.tv/console",
        )
    callback = values.get(CALLBACK_URL.key)
    if not callback and not table.has(CALLBACK_URL.key):
        table.problem(
            CALLBACK_URL.key,
            "is required: the public https:// URL Twitch posts to, which reaches"
            " /webhook/<name> of this bot",
        )
    elif isinstance(callback, str) and callback:
        parts = urlsplit(callback)
        port = parts.port if parts.port is not None else 443
        if parts.scheme.lower() != "https" or port != 443:
            table.warn(
                CALLBACK_URL.key,
                "Twitch delivers only to https:// on port 443: put a TLS proxy in front of"
                " the bot and give its public https:// URL here",
            )
    channels = values.get(CHANNELS.key)
    for index, login in enumerate(channels if isinstance(channels, tuple) else ()):
        if not LOGIN.fullmatch(str(login).lower()):
            table.problem(
                f"{CHANNELS.key}[{index}]",
                f"{str(login)[:40]!r} is not a Twitch login (letters, digits and _, as in"
                " twitch.tv/<login>)",
            )
    if isinstance(channels, tuple) and not channels:
        table.warn(
            CHANNELS.key,
            "follows no channel: only the Twitch logins chats /subscribe to are followed",
        )
    types = values.get(TYPES.key)
    for index, kind in enumerate(types if isinstance(types, tuple) else ()):
        if kind not in eventsub.STREAM_TYPES:
            table.problem(
                f"{TYPES.key}[{index}]",
                f"{str(kind)[:40]!r} is not a stream type; Twitch's are"
                f" {', '.join(eventsub.STREAM_TYPES)}",
            )


def _secret_rule(secret: str) -> str | None:
    # Create EventSub Subscription: "The secret must be an ASCII string that's a minimum
    # of 10 characters long and a maximum of 100 characters long."
    if secret.isascii() and 10 <= len(secret) <= 100:
        return None
    return "must be 10 to 100 ASCII characters (Twitch's rule for an EventSub secret)"


def _sample(sub_type: str, version: str, event: dict[str, object]) -> dict[str, object]:
    """A notification body as Twitch sends it (the docs' examples, trimmed)."""
    return {
        "subscription": {
            "id": "f1c2a387-161a-49f9-a165-0f21d7a4e1c4",
            "type": sub_type,
            "version": version,
            "status": "enabled",
            "cost": 1,
            "condition": {"broadcaster_user_id": "1337"},
            "transport": {"method": "webhook", "callback": "https://example.com/webhook/twitch"},
            "created_at": "2026-11-16T10:11:12.634234626Z",
        },
        "event": event,
    }


_BROADCASTER: Final = {
    "broadcaster_user_id": "1337",
    "broadcaster_user_login": "quinn",
    "broadcaster_user_name": "Quinn",
}

SPEC: Final = SourceSpec(
    kind=TwitchSource.kind,
    title="Twitch",
    build=TwitchSource,
    credential=Credential.HMAC_BY_API,
    event_types=eventsub.KIND_BY_TYPE,
    config_note=(
        "set client_id and channels, and put your app's Client Secret in\n"
        f"{CLIENT_SECRET_ENV}; the bot makes the EventSub subscriptions itself"
    ),
    setup=(
        "Twitch: register an application at https://dev.twitch.tv/console/apps (any\n"
        "OAuth Redirect URL, e.g. http://localhost; category Application Integration).\n"
        'Copy its Client ID into client_id of the "{name}" source in {config}, and its\n'
        f"Client Secret into the environment as {CLIENT_SECRET_ENV}. List the logins to\n"
        "follow in channels. The bot subscribes at Twitch by itself; Twitch posts to\n"
        "  {webhook_url}\n"
        "which must be public HTTPS on port 443 (a TLS proxy in front of the bot)."
    ),
    samples={
        "stream.online": _sample(
            "stream.online",
            "1",
            {
                "id": "9001",
                **_BROADCASTER,
                "type": "live",
                "started_at": "2026-11-16T10:11:12.123Z",
            },
        ),
        "stream.offline": _sample("stream.offline", "1", dict(_BROADCASTER)),
        "channel.update": _sample(
            "channel.update",
            "2",
            {
                **_BROADCASTER,
                "title": "Any% speedrun, day 3",
                "language": "en",
                "category_id": "504461",
                "category_name": "Celeste",
                "content_classification_labels": [],
            },
        ),
    },
    options=(
        CLIENT_ID,
        CLIENT_SECRET,
        CALLBACK_URL,
        CHANNELS,
        TYPES,
        API_URL,
        AUTH_URL,
        RECONCILE_INTERVAL,
    ),
    check=_check,
    secret_rule=_secret_rule,
    channel_shape=(
        LOGIN.pattern,
        "the channel's login (lower case, as in twitch.tv/<login>), not its display name",
    ),
    init_values={
        "client_id": "your-twitch-client-id",
        "client_secret_env": CLIENT_SECRET_ENV,
        "callback_url": "{webhook_url}",
        "channels": ["your_login"],
    },
    init_questions={
        "client_id": "Twitch application's Client ID (dev.twitch.tv/console/apps)",
    },
)
