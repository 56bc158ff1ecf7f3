"""Discord's error mapping: every discord.py or network failure as the bot's DeliveryError.

A delivery error says whether a retry may help (TransientDeliveryError) or not
(PermanentDeliveryError); an edit of a message that is gone is MessageGone.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator
from typing import Final

import aiohttp

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib audioop module (voice support), deprecated since
    # Python 3.11; the warning says nothing about this bot, which has no voice.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord

from bot.errors import (
    DeliveryError,
    MessageGone,
    PermanentDeliveryError,
    TransientDeliveryError,
)

#: Failures of the connection itself (not answers from Discord): worth retrying.
NETWORK_ERRORS: Final = (OSError, aiohttp.ClientError, TimeoutError)

#: JSON error codes that mean something about the target channel, which a preflight should
#: look at again: Unknown Channel, Missing Access, Missing Permissions, non-text channel.
UNKNOWN_CHANNEL: Final = 10003
MISSING_ACCESS: Final = 50001
NON_TEXT_CHANNEL: Final = 50008
MISSING_PERMISSIONS: Final = 50013
TARGET_ERRORS: Final = frozenset(
    {UNKNOWN_CHANNEL, MISSING_ACCESS, NON_TEXT_CHANNEL, MISSING_PERMISSIONS}
)


@contextlib.asynccontextmanager
async def platform_call(where: str, seconds: float) -> AsyncIterator[None]:
    """One REST call: bounded by `seconds`, its failures raised as the bot's DeliveryErrors."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except Exception as exc:
        mapped = delivery_error(exc, where)
        if mapped is None:
            raise
        raise mapped from exc


def delivery_error(exc: BaseException, where: str) -> DeliveryError | None:
    """The DeliveryError a discord.py or network failure means, or None for anything else.

    Rate limits, 5xx, timeouts and network trouble are worth retrying; Missing Access,
    Missing Permissions, Unknown Channel, a non-text channel (50008) and refused payloads
    are not. An edit whose
    message was deleted (10008) or is not the bot's (50005) is MessageGone.
    """
    if isinstance(exc, discord.RateLimited):
        return TransientDeliveryError(
            f"{where}: rate limited for {exc.retry_after:.1f}s", retry_after=exc.retry_after
        )
    if isinstance(exc, discord.HTTPException):
        text = f"{where}: {exc}"
        if exc.status >= 500 or exc.status in (408, 429):
            return TransientDeliveryError(text)
        if exc.code in (10008, 50005):
            return MessageGone(text)
        if exc.code == NON_TEXT_CHANNEL:
            return PermanentDeliveryError(
                f"{text} (a category, forum or media channel takes no messages: route to a "
                "text or announcement channel, or a thread)"
            )
        return PermanentDeliveryError(text)
    if isinstance(exc, NETWORK_ERRORS):
        detail = str(exc) or "no details"
        return TransientDeliveryError(f"{where}: {type(exc).__name__}: {detail}")
    return None
