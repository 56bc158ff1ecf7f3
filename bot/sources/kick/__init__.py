"""Kick: webhooks signed with Kick's key pair, the subscriptions and a poll kept by the bot.

`source.KickSource` verifies and parses, `webhooks` holds the protocol, `follow.Follower`
keeps the public key, the event subscriptions and the polling backstop, `api` talks to
Kick's public API. This module declares the source (`SPEC`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from bot.sources.kick import webhooks
from bot.sources.kick.follow import SLUG
from bot.sources.kick.source import (
    API_URL,
    AUTH_URL,
    CHANNELS,
    CLIENT_ID,
    CLIENT_SECRET,
    POLL_INTERVAL,
    PUBLIC_KEY,
    RECONCILE_INTERVAL,
    KickSource,
)
from bot.sources.spec import Credential, OptionTable, SourceSpec

__all__ = ["SPEC", "KickSource"]

#: Where init points `client_secret_env`: the secret is Kick's, pasted by the user.
CLIENT_SECRET_ENV: Final = "KICK_CLIENT_SECRET"


def _check(values: Mapping[str, object], table: OptionTable) -> None:
    """Each key by Kick's own rules."""
    if not values.get(CLIENT_ID.key):
        table.problem(
            CLIENT_ID.key,
            "is required: the Client ID of your app at kick.com/settings/developer",
        )
    channels = values.get(CHANNELS.key)
    for index, slug in enumerate(channels if isinstance(channels, tuple) else ()):
        if not SLUG.fullmatch(str(slug).lower()):
            table.problem(
                f"{CHANNELS.key}[{index}]",
                f"{str(slug)[:40]!r} is not a Kick channel (as in kick.com/<channel>)",
            )
    if isinstance(channels, tuple) and not channels:
        table.warn(
            CHANNELS.key,
            "follows no channel: only the Kick channels chats /subscribe to are followed",
        )
    pem = values.get(PUBLIC_KEY.key)
    if isinstance(pem, str) and pem:
        try:
            webhooks.load_public_key(pem)
        except webhooks.KeyProblem as exc:
            table.problem(PUBLIC_KEY.key, str(exc))


_BROADCASTER: Final = {
    "is_anonymous": False,
    "user_id": 123456789,
    "username": "Aurora",
    "is_verified": True,
    "profile_picture": "https://files.kick.com/images/user/123456789/profile_image.webp",
    "channel_slug": "aurora",
    "identity": None,
}

SPEC: Final = SourceSpec(
    kind=KickSource.kind,
    title="Kick",
    build=KickSource,
    credential=Credential.PROVIDER_KEY,
    event_types=webhooks.KIND_BY_TYPE,
    config_note=(
        "set client_id and channels, and put your app's Client Secret in\n"
        f"{CLIENT_SECRET_ENV}; the bot makes the event subscriptions itself"
    ),
    setup=(
        "Kick: create an app at https://kick.com/settings/developer. Copy its Client ID\n"
        'into client_id of the "{name}" source in {config}, and its Client Secret into\n'
        f"the environment as {CLIENT_SECRET_ENV}. Switch Enable Webhooks on and paste\n"
        "  {webhook_url}\n"
        "as its Webhook URL (one per app). List the channels to follow in channels; the\n"
        "bot subscribes to their stream events by itself."
    ),
    samples={
        webhooks.STATUS_UPDATED: {
            "broadcaster": _BROADCASTER,
            "is_live": True,
            "title": "Late-night speedruns",
            "started_at": "2026-11-16T11:00:00+11:00",
            "ended_at": None,
        },
        webhooks.METADATA_UPDATED: {
            "broadcaster": _BROADCASTER,
            "metadata": {
                "title": "Late-night speedruns, day 2",
                "language": "en",
                "has_mature_content": False,
                "category": {
                    "id": 123,
                    "name": "Celeste",
                    "thumbnail": "https://files.kick.com/images/subcategories/123/banner.webp",
                },
            },
        },
    },
    options=(
        CLIENT_ID,
        CLIENT_SECRET,
        CHANNELS,
        PUBLIC_KEY,
        POLL_INTERVAL,
        RECONCILE_INTERVAL,
        API_URL,
        AUTH_URL,
    ),
    check=_check,
    channel_shape=(SLUG.pattern, "the channel's slug, as in kick.com/<channel>"),
    init_values={
        "client_id": "your-kick-client-id",
        "client_secret_env": CLIENT_SECRET_ENV,
        "channels": ["your_channel"],
    },
    init_questions={"client_id": "Kick app's Client ID (kick.com/settings/developer)"},
)
