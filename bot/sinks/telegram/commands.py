"""The command catalogue as Telegram bot commands, behind one permission gate and one
error handler.

Every command of `bot.chat.commands.CATALOGUE` gets a PTB CommandHandler and a line in
the command menu (setMyCommands); its positional words are bound to its parameters by the
catalogue. One that changes state needs a chat admin in groups and channels (anyone in a
private chat). Answers are Telegram HTML replies to the command.

A group upgraded to a supergroup posts a service message in both chats (the group's
carries `migrate_to_chat_id`, the supergroup's `migrate_from_chat_id`); either one moves
the chat's subscriptions, mutes and cards to the new id (Commands.target_moved, once,
whichever of them or a send's error comes first).
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

from telegram import BotCommand, LinkPreviewOptions, Update
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import TelegramError
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from bot import markup
from bot.chat.commands import CATALOGUE, CommandSpec, Invocation, Reply
from bot.commands import Chat, CommandError, Commands
from bot.errors import StoreUnavailable
from bot.render import Renderer
from bot.sinks.telegram.client import replying
from bot.sinks.telegram.errors import describe
from bot.sinks.telegram.format import FORMAT

log = logging.getLogger(__package__)

REFUSAL: Final = "Sorry, only this chat's admins can change its notifications."
APOLOGY: Final = "Sorry, something went wrong answering that. It has been logged."

_Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


class BotCommands:
    """Registers the catalogue's commands on a PTB application and answers them."""

    def __init__(
        self,
        *,
        commands: Commands,
        renderer: Renderer,
        catalogue: Sequence[CommandSpec] = CATALOGUE,
        on_moved: Callable[[str, str], None] | None = None,
    ) -> None:
        self._commands = commands
        self._renderer = renderer
        self._catalogue = tuple(catalogue)
        # Told (old chat id, new chat id) after a group's upgrade was followed.
        self._on_moved = on_moved

    def install(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """One handler per command, for new messages and channel posts."""
        # Not edits: an edited "/mute" must not run twice.
        where = filters.UpdateType.MESSAGE | filters.UpdateType.CHANNEL_POST
        for spec in self._catalogue:
            app.add_handler(CommandHandler(spec.name, self._handler(spec), filters=where))
        app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, self.migrated))
        app.add_error_handler(_on_error)

    async def set_menu(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Fill the command menu in Telegram clients; a failure here is not fatal."""
        menu = [BotCommand(spec.name, spec.help) for spec in self._catalogue]
        try:
            await app.bot.set_my_commands(menu)
        except TelegramError as exc:
            log.warning("telegram: could not set the command menu: %s", describe(exc))

    def _handler(self, spec: CommandSpec) -> _Handler:
        async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            # Someone waits for this answer: its requests go ahead of the chat's queued
            # card edits (the flood limit is per chat, and notifications can fill it).
            with replying():
                await self.answer(spec, update, context)

        return handle

    async def answer(
        self, spec: CommandSpec, update: Update, context: ContextTypes.DEFAULT_TYPE
    ) -> None:
        """The permission gate and the error handler around one command, then the reply."""
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None:
            return
        here = Chat("telegram", str(chat.id))
        # A streamer key copied out of /status carries the word joiner that keeps its "@"
        # from being a mention; it is not part of the key.
        words = [arg.replace(markup.WORD_JOINER, "") for arg in context.args or ()]

        async def admin() -> bool:
            return await is_admin(update, context)

        try:
            if spec.changes_state and not await admin():
                reply = html.escape(REFUSAL)
            else:
                call = Invocation(
                    chat=here,
                    args=spec.bind_words(words),
                    by=requester(update),
                    is_admin=admin,
                    catalogue=self._catalogue,
                )
                reply = self.render(await spec.handler(self._commands, call))
        except CommandError as exc:
            reply = markup.escape_telegram(str(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("telegram: /%s in chat %s failed", spec.name, chat.id)
            reply = html.escape(APOLOGY)
        try:
            await message.reply_text(
                markup.truncate_telegram(reply, FORMAT.text_max),
                parse_mode=ParseMode.HTML,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                # In groups PTB quotes the command; answer even if it was deleted meanwhile.
                allow_sending_without_reply=True,
            )
        except TelegramError as exc:
            log.warning(
                "telegram: could not answer /%s in chat %s: %s", spec.name, chat.id, describe(exc)
            )

    async def migrated(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A group became a supergroup: follow it (once; the second service message, or
        a send's error, finds it done)."""
        del context
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None:
            return
        if message.migrate_to_chat_id is not None:
            old, new = chat.id, message.migrate_to_chat_id
        elif message.migrate_from_chat_id is not None:
            old, new = message.migrate_from_chat_id, chat.id
        else:
            return
        try:
            await self._commands.target_moved("telegram", str(old), str(new))
        except StoreUnavailable as exc:
            # The next send to the old id is refused with the new one: it moves then.
            log.warning(
                "telegram: group %s became supergroup %s, but the database refused the"
                " move (%s); the next delivery there makes it",
                old,
                new,
                exc,
            )
            return
        if self._on_moved is not None:
            self._on_moved(str(old), str(new))

    def render(self, reply: Reply) -> str:
        """A handler's reply as Telegram HTML: its text escaped, or its template rendered."""
        if reply.template is None:
            return markup.escape_telegram(reply.text)
        return self._renderer.render_reply(FORMAT, reply.template, reply.view, locale=reply.locale)


async def is_admin(update: Update, context: ContextTypes.DEFAULT_TYPE) -> bool:
    """Whether the sender may change this chat's notifications.

    Anyone in their own private chat; in groups and channels the chat's creator and
    administrators, checked with getChatMember. A message sent as the chat itself (an
    anonymous group admin, or a channel post) can only come from an admin.
    """
    chat = update.effective_chat
    message = update.effective_message
    if chat is None or message is None:
        return False
    if chat.type == ChatType.PRIVATE:
        return True
    if message.sender_chat is not None:
        return message.sender_chat.id == chat.id
    user = update.effective_user
    if user is None:
        return False
    member = await context.bot.get_chat_member(chat.id, user.id)
    return member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)


def requester(update: Update) -> str | None:
    """Who issued a command, for the store's created_by column."""
    user = update.effective_user
    if user is not None:
        return f"telegram:{user.id}"
    message = update.effective_message
    if message is not None and message.sender_chat is not None:
        return f"telegram:{message.sender_chat.id}"
    return None


async def _on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Errors PTB caught outside the commands' own error handler."""
    del update
    error = context.error
    if error is None:
        return
    log.error("telegram: error while handling an update: %s", describe(error), exc_info=error)
