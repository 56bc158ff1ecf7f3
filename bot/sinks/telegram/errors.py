"""Telegram's error mapping: every python-telegram-bot failure as the bot's DeliveryError.

A delivery error says whether a retry may help (TransientDeliveryError) or not
(PermanentDeliveryError); an edit of a message that is gone is MessageGone; a group that
became a supergroup (ChatMigrated, when the target is known) is TargetMoved, so the
outbox follows it. Bot API descriptions are matched lower-cased (PTB capitalises them).
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Final

import httpx
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.warnings import PTBDeprecationWarning

from bot.errors import (
    DeliveryError,
    MessageGone,
    PermanentDeliveryError,
    TargetMoved,
    TransientDeliveryError,
)

# Telegram could not use the photo (or its caption): send the card as text instead.
# Descriptions from the Bot API; PTB capitalises them, so these are matched lower-cased.
UNUSABLE_PHOTO: Final = (
    "message caption is too long",
    "wrong file identifier/http url specified",
    "failed to get http url content",
    "wrong type of the web page content",
    "wrong remote file identifier",
    "photo_invalid_dimensions",
    "image_process_failed",
    "file must be non-empty",
    "webpage_curl_failed",
    "webpage_media_empty",
)
_GONE: Final = (
    "message to edit not found",
    "message can't be edited",
    "message_id_invalid",
    "there is no text in the message to edit",
    "there is no caption in the message to edit",
)
_NOT_MODIFIED: Final = "message is not modified"
# deleteMessage for a message that is not there (any more): the delete is done.
ALREADY_DELETED: Final = "message to delete not found"


def photos_refused(exc: BadRequest) -> bool:
    """The chat does not let the bot send photos (media restricted for members)."""
    return "not enough rights to send photos" in exc.message.lower()


def photo_unusable(exc: BadRequest) -> bool:
    text = exc.message.lower()
    return any(part in text for part in UNUSABLE_PHOTO)


# Refusals a change of the bot's membership or rights in the chat explains (and may fix).
_PERMISSION_REFUSALS: Final = (
    "chat not found",
    "not enough rights",
    "need administrator rights",
    "have no rights to send",
    "chat_write_forbidden",
    "chat_send_plain_forbidden",
    "chat_send_photos_forbidden",
)


def permission_refusal(exc: BaseException | None) -> bool:
    """A refusal that says the bot may not post there (Forbidden: not a member, kicked,
    blocked; not enough rights; chat not found): worth checking the target again."""
    if isinstance(exc, Forbidden):
        return True
    return isinstance(exc, BadRequest) and any(
        part in exc.message.lower() for part in _PERMISSION_REFUSALS
    )


def moved(target: str, exc: ChatMigrated) -> TargetMoved:
    """The group of `target` became the supergroup `exc.new_chat_id`. The move is the
    chat's: a topic ("old/7") follows its chat (Store.move_target)."""
    return TargetMoved(target.partition("/")[0], str(exc.new_chat_id))


def retry_after_seconds(exc: RetryAfter) -> float:
    """RetryAfter.retry_after in seconds, whether PTB gives an int or a timedelta."""
    with warnings.catch_warnings():
        # Without PTB_TIMEDELTA=true the int form warns that it is deprecated.
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def delivery_error(exc: TelegramError, target: str | None = None) -> DeliveryError:
    """The outbox's view of a PTB error: retry later, give up on this delivery, or (for
    a delivery to `target`) follow its chat to the new id."""
    if isinstance(exc, RetryAfter):
        seconds = retry_after_seconds(exc)
        return TransientDeliveryError(
            f"rate limited by Telegram, retry after {seconds:g}s", retry_after=seconds
        )
    if isinstance(exc, ChatMigrated):
        if target is not None:
            return moved(target, exc)
        return PermanentDeliveryError(
            f"the group became a supergroup with id {exc.new_chat_id}; route to that id"
        )
    if isinstance(exc, Forbidden):  # blocked, kicked, not a member, no rights in a channel
        return PermanentDeliveryError(exc.message)
    if isinstance(exc, BadRequest):  # chat not found, not enough rights, bad HTML...
        return PermanentDeliveryError(exc.message)
    if isinstance(exc, InvalidToken):
        return TransientDeliveryError("Telegram rejected the bot token")
    if isinstance(exc, NetworkError):  # timeouts, connection errors, 5xx
        return TransientDeliveryError(f"{type(exc).__name__}: {exc.message}")
    return TransientDeliveryError(f"{type(exc).__name__}: {exc.message}")


@contextmanager
def delivery_errors(target: str | None = None) -> Iterator[None]:
    """Turn PTB exceptions into DeliveryErrors (the PTB one stays as __cause__)."""
    try:
        yield
    except TelegramError as exc:
        raise delivery_error(exc, target) from exc


async def edit(action: Callable[[], Awaitable[None]], target: str | None = None) -> None:
    """Run one edit call: not-modified is success, a vanished message is MessageGone."""
    try:
        await action()
    except BadRequest as exc:
        text = exc.message.lower()
        if _NOT_MODIFIED in text:
            return
        if any(part in text for part in _GONE):
            raise MessageGone(exc.message) from exc
        raise delivery_error(exc, target) from exc
    except TelegramError as exc:
        raise delivery_error(exc, target) from exc


def describe(exc: BaseException) -> str:
    """An error for a log line: its type and message, never InvalidToken's (the token)."""
    if isinstance(exc, InvalidToken):
        return "InvalidToken: the token was rejected"
    return f"{type(exc).__name__}: {exc}"


# Failures after the request reached Telegram, before its answer came back: the message
# may have been posted. (A connection that never opened, or a request never fully
# written, posted nothing; an HTTP answer, even a 5xx, says what happened.)
_IN_FLIGHT_FAILURES: Final = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def may_have_been_posted(exc: BaseException) -> bool:
    """Whether a failed send may still have been carried out by Telegram: it timed out
    or lost its connection while waiting for the answer (PTB keeps httpx's error as the
    cause of its TimedOut or NetworkError)."""
    return isinstance(exc, NetworkError) and isinstance(exc.__cause__, _IN_FLIGHT_FAILURES)
