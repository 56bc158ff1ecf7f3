"""Telegram's preflight: can the bot post to each configured chat? Checked with read calls.

For each target ("chat" or "chat/thread"): getChat (does the chat exist, can the bot see
it, what kind is it), for a basic group getChatAdministrators (Telegram answers a group
that became a supergroup with its new id there, and only for such requests: reads of the
old group still work), and getChatMember of the bot itself (its status and rights; for a
plain member the chat's default permissions from getChat). Each problem found is one
TargetProblem whose detail says what to change, in plain text.

Requests go through the sink's rate limiter like any other, so a preflight of many chats
is paced under Telegram's limits. A platform problem is a finding, never an exception;
when Telegram cannot be asked now (a network error, a rate limit that outlasts the
limiter's retries), the whole preflight answers None: not checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from telegram import ChatFullInfo, ChatMember, ChatMemberAdministrator, ChatMemberRestricted
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import BadRequest, ChatMigrated, Forbidden, TelegramError
from telegram.ext import ExtBot

from bot.sinks.telegram.config import chat_id_of
from bot.targets import PREFLIGHT, Origin, TargetProblem

SINK: Final = "telegram"

# The kinds of problem (TargetProblem.kind) this preflight reports.
NOT_FOUND: Final = "not_found"
NOT_MEMBER: Final = "not_member"
CANNOT_SEND: Final = "cannot_send"
NO_PHOTOS: Final = "no_photos"
NOT_ADMIN: Final = "not_admin"
MOVED: Final = "moved"
UNREADABLE: Final = "unreadable"


class NotChecked(Exception):
    """Telegram could not be asked now (network, rate limit): the preflight is not done."""


def moved_problem(old: str, new: str, *, origin: Origin = PREFLIGHT) -> TargetProblem:
    """A group that became a supergroup: shown for the chat it is now, where its admins
    ask /status. Not blocking: notifications already follow it there."""
    return TargetProblem(
        sink=SINK,
        target=new,
        kind=MOVED,
        detail=(
            f"This chat was the group {old} until Telegram upgraded it to a supergroup"
            f" (id {new}); notifications follow it here. Where bot.toml names {old} in"
            f" telegram_chats, replace it with {new}."
        ),
        blocking=False,
        origin=origin,
    )


async def check_targets(bot: ExtBot[Any], targets: Sequence[str]) -> list[TargetProblem] | None:
    """The problems of every target, in order; None when Telegram cannot be asked now."""
    found: list[TargetProblem] = []
    try:
        for target in dict.fromkeys(targets):
            found += await _check(bot, target)
    except NotChecked:
        return None
    return found


async def _check(bot: ExtBot[Any], target: str, *, followed: bool = False) -> list[TargetProblem]:
    """The problems of one target; `followed` when it is where a group moved to."""
    chat_id = chat_id_of(target)
    try:
        chat = await _ask(bot.get_chat(chat_id))
    except ChatMigrated as exc:
        return await _moved(bot, target, exc.new_chat_id, followed=followed)
    except Forbidden as exc:
        return [_forbidden(target, exc)]
    except BadRequest as exc:
        return [_bad_request(target, exc)]
    if chat.type == ChatType.GROUP:
        # Only a write or a member-list request shows that a group was upgraded.
        try:
            await _ask(bot.get_chat_administrators(chat_id))
        except ChatMigrated as exc:
            return await _moved(bot, target, exc.new_chat_id, followed=followed)
        except (Forbidden, BadRequest):
            pass  # getChatMember below says what the bot may do there
    try:
        member = await _ask(bot.get_chat_member(chat_id, bot.id))
    except ChatMigrated as exc:
        return await _moved(bot, target, exc.new_chat_id, followed=followed)
    except Forbidden as exc:
        return [_forbidden(target, exc)]
    except BadRequest as exc:
        return [_bad_request(target, exc)]
    return _rights(target, chat, member)


async def _moved(
    bot: ExtBot[Any], target: str, new_chat_id: int, *, followed: bool
) -> list[TargetProblem]:
    """The group became a supergroup: say so, and check the supergroup (where its
    notifications go now) instead; once, as a supergroup never moves again."""
    chat, slash, thread = target.partition("/")
    new = str(new_chat_id)
    problems = [moved_problem(chat, new)]
    if not followed:
        problems += await _check(bot, new + slash + thread, followed=True)
    return problems


async def _ask(call: Any) -> Any:
    """Await one Bot API read; what says nothing about the chat becomes NotChecked."""
    try:
        return await call
    except (ChatMigrated, Forbidden, BadRequest):
        raise
    except TelegramError as exc:  # network, timeout, rate limit, the token
        raise NotChecked(str(exc)) from exc


def _problem(target: str, kind: str, detail: str, *, blocking: bool = True) -> TargetProblem:
    return TargetProblem(sink=SINK, target=target, kind=kind, detail=detail, blocking=blocking)


def _forbidden(target: str, exc: Forbidden) -> TargetProblem:
    text = exc.message.lower()
    if "kicked" in text:
        detail = (
            "The bot was removed from this chat and is banned there: unban it, then add it again."
        )
    elif "channel" in text:
        detail = (
            "The bot is not in this channel: add it as an administrator allowed to post messages."
        )
    else:
        detail = "The bot is not a member of this chat: add it to the chat again."
    return _problem(target, NOT_MEMBER, detail)


def _bad_request(target: str, exc: BadRequest) -> TargetProblem:
    if "chat not found" in exc.message.lower():
        return _problem(
            target,
            NOT_FOUND,
            f"Telegram knows no chat {chat_id_of(target)} that the bot can see: check the"
            " id in telegram_chats (send /help@<botname> in the chat to learn it) and that"
            " the bot was added there; a private chat needs its user to start the bot"
            " first.",
        )
    return _problem(target, UNREADABLE, f"Telegram refused to describe this chat: {exc.message}")


def _rights(target: str, chat: ChatFullInfo, member: ChatMember) -> list[TargetProblem]:
    """What the bot's standing in `chat` lets it do, as problems."""
    status = member.status
    if chat.type == ChatType.PRIVATE:
        return []
    if status == ChatMemberStatus.BANNED:
        return [
            _problem(
                target,
                NOT_MEMBER,
                "The bot was removed from this chat and is banned there: unban it, then add"
                " it again.",
            )
        ]
    if status == ChatMemberStatus.LEFT or (
        isinstance(member, ChatMemberRestricted) and not member.is_member
    ):
        return [_problem(target, NOT_MEMBER, "The bot is not a member of this chat: add it.")]
    if chat.type == ChatType.CHANNEL:
        if status == ChatMemberStatus.OWNER:
            return []
        if isinstance(member, ChatMemberAdministrator) and member.can_post_messages:
            return []
        return [
            _problem(
                target,
                NOT_ADMIN,
                "In a channel the bot must be an administrator allowed to post messages:"
                " promote it and turn on 'Post messages'.",
            )
        ]
    if status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR):
        return []
    # A restricted bot has its own permissions; a plain member the chat's defaults.
    rights: Any = member if isinstance(member, ChatMemberRestricted) else chat.permissions
    if rights is None:
        return []
    if rights.can_send_messages is False:
        return [
            _problem(
                target,
                CANNOT_SEND,
                "The bot may not send messages here: let members send messages, lift the"
                " bot's restriction, or make it an administrator.",
            )
        ]
    if rights.can_send_photos is False:
        return [
            _problem(
                target,
                NO_PHOTOS,
                "The bot may not send photos here, so its cards go out as text without the"
                " stream's cover: allow photos for members (or the bot), or make it an"
                " administrator.",
                blocking=False,
            )
        ]
    return []
