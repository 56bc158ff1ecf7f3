"""The Telegram sink: notifications and bot commands through python-telegram-bot (v22).

One PTB Application runs inside the bot's event loop (initialize, start_polling, start;
never run_polling). Notifications are a photo with an HTML caption when the card has a
cover that fits, otherwise an HTML text message; both carry one URL button.

Message ids handed back to the outbox say which kind of message a card is, because
Telegram edits the two with different methods: ``"photo:<id>"`` (editMessageCaption)
and ``"text:<id>"`` (editMessageText). A bare ``"<id>"`` is edited as text, then as a
caption if Telegram says it has no text.

Requests that name a chat are paced under Telegram's flood limits by PacedRateLimiter
(rolling windows, bot/sinks/ratelimit.py), each delivery taking its turn before it is
rendered.

The bot token sits in every Bot API URL, which httpx logs at INFO and PTB's InvalidToken
repeats, so while the sink runs the "httpx" logger is held at WARNING and a filter on the
libraries' loggers (and the bot's own) redacts the token from anything that still gets
through.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Final, Literal

from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Update,
)
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseRateLimiter,
    CommandHandler,
    ContextTypes,
    ExtBot,
    filters,
)
from telegram.warnings import PTBDeprecationWarning

from bot import markup
from bot.commands import (
    CHANGING_COMMANDS,
    COMMAND_HELP,
    Chat,
    CommandError,
    Commands,
    StatusReport,
    split_mute_arguments,
)
from bot.config import TelegramConfig
from bot.durations import format_duration
from bot.errors import (
    DeliveryError,
    MessageGone,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from bot.events import Event
from bot.logs import RecordRewriter
from bot.render import TELEGRAM_CAPTION_MAX, TELEGRAM_TEXT_MAX, Renderer, TelegramMessage
from bot.sinks.ratelimit import WindowLimiter
from bot.store import Delivery

log = logging.getLogger(__name__)

#: Loggers (and their children) the token filter is attached to while the sink runs.
_GUARDED_LOGGERS: Final = ("httpx", "httpcore", "telegram", "asyncio", "bot")
_REDACTED: Final = "***"
_NUMERIC_CHAT: Final = re.compile(r"-?\d+")

#: Usage shown in /help, after the command name.
_USAGE: Final = {
    "mute": "[streamer] [duration]",
    "unmute": "[streamer]",
    "subscribe": "pattern",
    "unsubscribe": "pattern",
}
_START_HELP: Final = "what this bot does, this chat's id and how to subscribe"

_REFUSAL: Final = "Sorry, only this chat's admins can change its notifications."
_APOLOGY: Final = "Sorry, something went wrong answering that. It has been logged."

# Telegram could not use the photo (or its caption): send the card as text instead.
# Descriptions from the Bot API; PTB capitalises them, so these are matched lower-cased.
_UNUSABLE_PHOTO: Final = (
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
_ALREADY_DELETED: Final = "message to delete not found"
# Past this many groups' limiters, the idle ones are dropped (an idle one limits nothing).
_GROUP_LIMITERS_KEPT: Final = 512

CardKind = Literal["photo", "text"]
# What a Bot API call answers (PTB's JSONDict is dict[str, Any]).
_ApiResult = bool | dict[str, Any] | list[dict[str, Any]]


class TelegramSink:
    """Posts notifications to Telegram chats and answers the bot's commands there."""

    name = "telegram"
    #: Telegram's limits, after HTML entity parsing (UTF-16 code units).
    text_max = TELEGRAM_TEXT_MAX
    caption_max = TELEGRAM_CAPTION_MAX
    #: Telegram downloads a photo URL before it answers sendPhoto, which can take a while;
    #: a timeout there is ambiguous (the photo may still be posted), so be patient.
    photo_read_timeout = 20.0
    #: At shutdown a send in flight is waited for this long: the slowest send's whole
    #: round trip (photo read timeout, plus PTB's 5 s connect and 5 s write timeouts and
    #: some slack). Telegram has no idempotency key, so a send cut off here may post
    #: twice; waiting it out never does.
    drain_timeout = photo_read_timeout + 15.0
    keeps_cards = True
    #: Telegram's flood limits (Bots FAQ): about 30 messages a second overall, 20 a minute
    #: in one group or channel. Every request naming a chat waits its turn: at most
    #: `overall_limit` in any `overall_period` seconds, and for a group or channel also
    #: `group_limit` in any `group_period`. The constructor's
    #: arguments of the same names override these.
    overall_limit = 30
    overall_period = 1.0
    group_limit = 20
    group_period = 60.0

    def __init__(
        self,
        *,
        config: TelegramConfig,
        renderer: Renderer,
        commands: Commands,
        poll_timeout: float = 10.0,
        rate_limit_retries: int = 3,
        reconnect_delay: float = 5.0,
        reconnect_max_delay: float = 300.0,
        overall_limit: int | None = None,
        overall_period: float | None = None,
        group_limit: int | None = None,
        group_period: float | None = None,
    ) -> None:
        if config.token is None:
            raise ValueError("TelegramSink needs a token; leave the sink out when there is none")
        if rate_limit_retries < 1:
            # A 429 on a command's answer would lose it; deliveries would only be retried
            # later by the outbox, with the chat held back meanwhile.
            raise ValueError("rate_limit_retries must be at least 1")
        self._token = config.token
        self._api_url = config.api_url.rstrip("/") if config.api_url else None
        self._renderer = renderer
        self._commands = commands
        self._poll_timeout = poll_timeout
        self._rate_limiter = PacedRateLimiter(
            overall=(overall_limit or self.overall_limit, overall_period or self.overall_period),
            group=(group_limit or self.group_limit, group_period or self.group_period),
            max_retries=rate_limit_retries,
        )
        self._reconnect_delay = reconnect_delay
        self._reconnect_max_delay = reconnect_max_delay
        self._state = "created"
        self._app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._redactor = TokenRedactor(self._token)
        self._guarded: list[logging.Logger] = []
        self._httpx_level: int | None = None

    def __repr__(self) -> str:
        api = self._api_url or "api.telegram.org"
        return f"<TelegramSink state={self._state} api={api}>"

    @property
    def state(self) -> str:
        """created, starting, running, failed (see the log) or stopped."""
        return self._state

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, set the command menu and start polling; raises only on cancellation.

        A rejected token leaves the sink "failed". An unreachable Bot API also shows as
        "failed" while the sink keeps retrying in the background, so a network hiccup at
        boot does not silence Telegram until the next restart.
        """
        if self._state in ("starting", "running") or self._reconnect_task is not None:
            return
        self._guard_logs()
        if await self._connect() == "retry":
            self._reconnect_task = asyncio.create_task(
                self._keep_connecting(), name="telegram-connect"
            )

    async def stop(self) -> None:
        """Stop polling and close every connection (idempotent)."""
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        app, self._app = self._app, None
        if app is not None:
            await _shutdown(app)
        if self._state != "created":
            self._state = "stopped"
        self._unguard_logs()

    async def _connect(self) -> Literal["running", "retry", "fatal"]:
        """One attempt to bring the application up; cleans up after itself on failure."""
        self._state = "starting"
        app = self._build_app()
        self._app = app
        step = "reach the Bot API"
        try:
            await app.initialize()
            step = "start polling"
            await self._set_commands(app)
            assert app.updater is not None  # the builder's default Updater
            await app.updater.start_polling(
                poll_interval=0.0,
                timeout=timedelta(seconds=self._poll_timeout),
                allowed_updates=[Update.MESSAGE, Update.CHANNEL_POST],
                error_callback=_polling_error,
            )
            await app.start()
        except InvalidToken:
            # InvalidToken's message contains the token: never log the exception itself.
            log.error(
                "telegram: the Bot API server rejected the bot token; check [telegram] token "
                "(or token_env). Telegram notifications are off until the bot restarts."
            )
            return await self._give_up(app, "fatal")
        except TelegramError as exc:
            log.error(
                "telegram: could not %s at %s (%s); will keep trying",
                step,
                self._api_label(),
                _describe(exc),
            )
            return await self._give_up(app, "retry")
        except Exception:
            log.exception("telegram: unexpected error while starting")
            return await self._give_up(app, "fatal")
        except BaseException:
            await self._give_up(app, "fatal")
            raise
        self._state = "running"
        log.info("telegram: connected as @%s, polling for commands", app.bot.username)
        return "running"

    async def _give_up(
        self, app: Application[Any, Any, Any, Any, Any, Any], outcome: Literal["retry", "fatal"]
    ) -> Literal["retry", "fatal"]:
        await _shutdown(app)
        if self._app is app:
            self._app = None
        self._state = "failed"
        return outcome

    async def _keep_connecting(self) -> None:
        delay = self._reconnect_delay
        while True:
            await asyncio.sleep(delay)
            if await self._connect() != "retry":
                return
            delay = min(delay * 2, self._reconnect_max_delay)

    def _build_app(self) -> Application[Any, Any, Any, Any, Any, Any]:
        builder = (
            ApplicationBuilder()
            .token(self._token)
            .rate_limiter(self._rate_limiter)
            .job_queue(None)
        )
        if self._api_url is not None:
            builder = builder.base_url(f"{self._api_url}/bot").base_file_url(
                f"{self._api_url}/file/bot"
            )
        app: Application[Any, Any, Any, Any, Any, Any] = builder.build()
        # New messages and channel posts; not edits (an edited "/mute" must not run twice).
        where = filters.UpdateType.MESSAGE | filters.UpdateType.CHANNEL_POST
        app.add_handler(CommandHandler(["start", "help"], self._on_help, filters=where))
        for command, _description in COMMAND_HELP:
            if command == "help":
                continue
            app.add_handler(CommandHandler(command, self._command(command), filters=where))
        app.add_error_handler(self._on_error)
        return app

    async def _set_commands(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Fill the command menu in Telegram clients; a failure here is not fatal."""
        commands = [BotCommand("start", _START_HELP)]
        commands += [BotCommand(name, text) for name, text in COMMAND_HELP]
        try:
            await app.bot.set_my_commands(commands)
        except TelegramError as exc:
            log.warning("telegram: could not set the command menu: %s", _describe(exc))

    def _api_label(self) -> str:
        return self._api_url or "https://api.telegram.org"

    # -- keeping the token out of logs --------------------------------------------------

    def _guard_logs(self) -> None:
        if self._guarded:
            return
        httpx_logger = logging.getLogger("httpx")
        if httpx_logger.level < logging.WARNING:
            # httpx logs each request URL, token included, at INFO.
            self._httpx_level = httpx_logger.level
            httpx_logger.setLevel(logging.WARNING)
        for name in _GUARDED_LOGGERS:
            logging.getLogger(name)
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger) and any(
                name == root or name.startswith(root + ".") for root in _GUARDED_LOGGERS
            ):
                logger.addFilter(self._redactor)
                self._guarded.append(logger)

    def _unguard_logs(self) -> None:
        for logger in self._guarded:
            logger.removeFilter(self._redactor)
        self._guarded.clear()
        if self._httpx_level is not None:
            logging.getLogger("httpx").setLevel(self._httpx_level)
            self._httpx_level = None

    # -- notifications ------------------------------------------------------------------

    def _running_app(self) -> Application[Any, Any, Any, Any, Any, Any]:
        if self._state != "running" or self._app is None:
            raise TransientDeliveryError(f"telegram is not connected (sink {self._state})")
        return self._app

    async def deliver(self, delivery: Delivery, event: Event) -> str:
        """Post the event's card; returns "photo:<id>" or "text:<id>" for later edits."""
        bot = self._running_app().bot
        # The chat's turn comes before rendering: the outbox starts every chat's delivery
        # at once, and the first sends should not wait for all the others to be rendered.
        async with self._rate_limiter.reserve(chat_id_of(delivery.target)):
            return await self._post_card(bot, delivery, event)

    async def _post_card(self, bot: ExtBot[Any], delivery: Delivery, event: Event) -> str:
        message = self._renderer.render_telegram(event)
        chat_id = chat_id_of(delivery.target)
        thread_id = _thread_id(delivery)
        keyboard = _keyboard(message)
        if message.photo_url and message.caption:
            try:
                with _delivery_errors():
                    sent = await bot.send_photo(
                        chat_id,
                        message.photo_url,
                        caption=message.caption,
                        parse_mode=ParseMode.HTML,
                        reply_markup=keyboard,
                        message_thread_id=thread_id,
                        read_timeout=self.photo_read_timeout,
                    )
                return f"photo:{sent.message_id}"
            except PermanentDeliveryError as exc:
                if not isinstance(exc.__cause__, BadRequest) or not _photo_unusable(exc.__cause__):
                    raise
                log.warning(
                    "telegram %s: Telegram could not use the cover %s (%s); sending text",
                    delivery.target,
                    message.photo_url,
                    exc,
                )
        with _delivery_errors():
            sent = await bot.send_message(
                chat_id,
                message.text,
                parse_mode=ParseMode.HTML,
                reply_markup=keyboard,
                link_preview_options=_preview(message),
                message_thread_id=thread_id,
            )
        return f"text:{sent.message_id}"

    async def edit(self, delivery: Delivery, message_id: str, event: Event) -> None:
        """Re-render the card for `event` and edit it in place, keeping its button.

        "message is not modified" counts as done; a deleted or uneditable message raises
        MessageGone so the outbox posts a new card.
        """
        bot = self._running_app().bot
        kind, number = parse_message_id(message_id)
        async with self._rate_limiter.reserve(chat_id_of(delivery.target)):
            await self._edit_card(bot, delivery, kind, number, event)

    async def _edit_card(
        self,
        bot: ExtBot[Any],
        delivery: Delivery,
        kind: CardKind | None,
        number: int,
        event: Event,
    ) -> None:
        message = self._renderer.render_telegram(event)
        chat_id = chat_id_of(delivery.target)
        # Telegram removes the keyboard from an edit that does not repeat it.
        keyboard = _keyboard(message)

        async def edit_caption() -> None:
            caption = message.caption or markup.truncate_telegram(message.text, self.caption_max)
            await bot.edit_message_caption(
                chat_id=chat_id,
                message_id=number,
                caption=caption,
                parse_mode=ParseMode.HTML,
                reply_markup=keyboard,
            )

        async def edit_text() -> None:
            await bot.edit_message_text(
                message.text,
                chat_id=chat_id,
                message_id=number,
                parse_mode=ParseMode.HTML,
                reply_markup=keyboard,
                link_preview_options=_preview(message),
            )

        if kind == "photo":
            await _edit(edit_caption)
        elif kind == "text":
            await _edit(edit_text)
        else:
            try:
                await _edit(edit_text)
            except MessageGone as exc:
                if "no text in the message" not in str(exc).lower():
                    raise
                await _edit(edit_caption)

    async def delete(self, delivery: Delivery, message_id: str) -> None:
        """Delete the card `message_id`; one already gone counts as deleted.

        "message can't be deleted" (in a group after 48 hours, or without the right) is a
        PermanentDeliveryError, never MessageGone: the card is still there to be edited.
        """
        bot = self._running_app().bot
        try:
            _kind, number = parse_message_id(message_id)
        except MessageGone as exc:
            raise PermanentDeliveryError(str(exc)) from None
        # A forum topic's message is deleted by its chat id alone.
        chat_id = chat_id_of(delivery.target)
        try:
            async with self._rate_limiter.reserve(chat_id):
                await bot.delete_message(chat_id, number)
        except BadRequest as exc:
            if _ALREADY_DELETED in exc.message.lower():
                log.debug("telegram %s: card %s was already gone", delivery.target, message_id)
                return
            raise delivery_error(exc) from exc
        except TelegramError as exc:
            raise delivery_error(exc) from exc

    # -- commands -----------------------------------------------------------------------

    def _command(
        self, name: str
    ) -> Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]:
        async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            await self._run_command(name, update, context)

        return handle

    async def _on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._run_command("help", update, context)

    async def _run_command(
        self, name: str, update: Update, context: ContextTypes.DEFAULT_TYPE
    ) -> None:
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None:
            return
        here = Chat("telegram", str(chat.id))
        # A streamer key copied out of /status carries the word joiner that keeps its "@"
        # from being a mention; it is not part of the key.
        args = [arg.replace(markup.WORD_JOINER, "") for arg in context.args or ()]
        try:
            if name in CHANGING_COMMANDS and not await _is_admin(update, context):
                reply = html.escape(_REFUSAL)
            else:
                reply = await self._answer(name, here, args, update, context)
        except CommandError as exc:
            reply = markup.escape_telegram(str(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("telegram: /%s in chat %s failed", name, chat.id)
            reply = html.escape(_APOLOGY)
        try:
            await message.reply_text(
                markup.truncate_telegram(reply, self.text_max),
                parse_mode=ParseMode.HTML,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                # In groups PTB quotes the command; answer even if it was deleted meanwhile.
                allow_sending_without_reply=True,
            )
        except TelegramError as exc:
            log.warning(
                "telegram: could not answer /%s in chat %s: %s", name, chat.id, _describe(exc)
            )

    async def _answer(
        self,
        name: str,
        here: Chat,
        args: list[str],
        update: Update,
        context: ContextTypes.DEFAULT_TYPE,
    ) -> str:
        """The HTML reply to one command; CommandError for a mistake in its arguments."""
        commands = self._commands
        by = _requester(update)
        if name == "help":
            return help_text(here.target)
        if name == "status":
            report = await commands.status(here)
            show_failures = report.failed_deliveries > 0 and await _is_admin(update, context)
            return status_text(report, show_failures=show_failures)
        if name == "mutes":
            _no_arguments(name, args)
            return mutes_text(await commands.status(here))
        if name == "mute":
            streamer, duration = split_mute_arguments(args)
            return markup.escape_telegram(await commands.mute(here, streamer, duration, by=by))
        if name == "unmute":
            if len(args) > 1:
                raise CommandError("Use: /unmute [streamer], like: /unmute twitch/quinn")
            return markup.escape_telegram(await commands.unmute(here, args[0] if args else None))
        if name in ("subscribe", "unsubscribe"):
            if len(args) != 1:
                raise CommandError(
                    f"Use: /{name} pattern, like: /{name} twitch/quinn or /{name} twitch/*"
                )
            if name == "subscribe":
                return markup.escape_telegram(await commands.subscribe(here, args[0], by=by))
            return markup.escape_telegram(await commands.unsubscribe(here, args[0]))
        raise AssertionError(f"no handler for /{name}")  # pragma: no cover

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Errors PTB caught outside our handlers' own try blocks."""
        error = context.error
        if error is None:
            return
        log.error("telegram: error while handling an update: %s", _describe(error), exc_info=error)


# -- logging ------------------------------------------------------------------------------


class TokenRedactor(RecordRewriter):
    """Replaces the token's secret part in a record's message and traceback with ***."""

    def __init__(self, token: str) -> None:
        super().__init__()
        # The part before ":" is the bot's public user id; the rest is the secret.
        self._secret = token.split(":", 1)[-1] or token

    def redact(self, text: str) -> str:
        """`text` without the secret."""
        return text.replace(self._secret, _REDACTED)

    def rewrite(self, text: str) -> str:
        """The message (or traceback) without the secret."""
        return self.redact(text)


def _polling_error(exc: TelegramError) -> None:
    """The updater retries getUpdates itself; say what failed without a traceback."""
    log.warning("telegram: polling for updates failed, retrying: %s", _describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidToken):
        return "InvalidToken: the token was rejected"
    return f"{type(exc).__name__}: {exc}"


# -- sending helpers ----------------------------------------------------------------------


class PacedRateLimiter(BaseRateLimiter[int]):
    """PTB's rate limiter, on rolling windows (WindowLimiter) rather than leaky buckets.

    As with PTB's AIORateLimiter, a request that names a chat counts towards the overall
    limit, one to a group or channel (a negative id or an @name) also towards that chat's
    group limit, and getUpdates is never held back. Unlike it, no window ever holds more
    than the limit (AIORateLimiter lets 30 through and then 30 a second more, so a fan-out
    ran into Telegram's 429s), and a 429 holds back only the request that got it: it waits
    retry_after and tries again, at most `max_retries` times, while other chats carry on.
    """

    def __init__(
        self, *, overall: tuple[int, float], group: tuple[int, float], max_retries: int
    ) -> None:
        self._overall = WindowLimiter(*overall)
        self._group_rate = group
        self._groups: dict[int | str, WindowLimiter] = {}
        self._max_retries = max_retries

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    async def process_request(  # noqa: PLR0917 - PTB's signature, called positionally
        self,
        callback: Callable[..., Coroutine[Any, Any, _ApiResult]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> _ApiResult:
        """Wait for the chat's group turn, then the overall one, and make the request."""
        del endpoint
        retries = rate_limit_args or self._max_retries
        chat_id = data.get("chat_id")
        group = self._group_limiter(chat_id)
        attempt = 0
        while True:
            try:
                # The group first: its wait can be long, and an overall slot taken before
                # it would sit unused meanwhile.
                async with (
                    group.slot() if group else contextlib.nullcontext(),
                    self._overall.slot() if chat_id is not None else contextlib.nullcontext(),
                ):
                    return await callback(*args, **kwargs)
            except RetryAfter as exc:
                if attempt >= retries:
                    raise
                attempt += 1
                wait = retry_after_seconds(exc)
                log.info("telegram: rate limited by Telegram, retrying in %.1fs", wait)
                await asyncio.sleep(wait)

    @contextlib.asynccontextmanager
    async def reserve(self, chat_id: int | str) -> AsyncIterator[None]:
        """Take the chat's turn now for the first request made inside the block.

        See WindowLimiter.reserve: the sink waits before rendering, not after.
        """
        group = self._group_limiter(chat_id)
        async with (
            group.reserve() if group else contextlib.nullcontext(),
            self._overall.reserve(),
        ):
            yield

    def _group_limiter(self, chat_id: object) -> WindowLimiter | None:
        """The limiter of a group or channel chat (as AIORateLimiter tells them), or None."""
        key = chat_id
        with contextlib.suppress(TypeError, ValueError):
            key = int(chat_id)  # type: ignore[call-overload]
        if not (isinstance(key, int) and key < 0) and not isinstance(key, str):
            return None
        limiter = self._groups.get(key)
        if limiter is None:
            if len(self._groups) >= _GROUP_LIMITERS_KEPT:
                for idle in [k for k, v in self._groups.items() if v.idle]:
                    del self._groups[idle]
            limiter = self._groups[key] = WindowLimiter(*self._group_rate)
        return limiter


def chat_id_of(target: str) -> int | str:
    """A route's chat: a numeric id ("-1001234567890"), a public "@channelname", or the
    chat of a forum topic ("-1001234567890/42")."""
    text = target.strip().partition("/")[0]
    return int(text) if _NUMERIC_CHAT.fullmatch(text) else text


def parse_message_id(message_id: str) -> tuple[CardKind | None, int]:
    """("photo", 12) for "photo:12", ("text", 7) for "text:7", (None, 7) for "7"."""
    kind, _, number = message_id.rpartition(":")
    if kind not in ("photo", "text", "") or not number.isdigit():
        raise MessageGone(f"not a Telegram card id: {message_id!r}")
    if kind == "photo":
        return "photo", int(number)
    if kind == "text":
        return "text", int(number)
    return None, int(number)


def _thread_id(delivery: Delivery) -> int | None:
    """The forum topic a target like "-1001234567890/42" names (config checked the form)."""
    _chat, slash, thread = delivery.target.partition("/")
    return int(thread) if slash else None


def _keyboard(message: TelegramMessage) -> InlineKeyboardMarkup | None:
    if not (message.button_text and message.button_url):
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(message.button_text, url=message.button_url)]]
    )


def _preview(message: TelegramMessage) -> LinkPreviewOptions | None:
    return LinkPreviewOptions(is_disabled=True) if message.disable_preview else None


def _photo_unusable(exc: BadRequest) -> bool:
    text = exc.message.lower()
    return any(part in text for part in _UNUSABLE_PHOTO)


def retry_after_seconds(exc: RetryAfter) -> float:
    """RetryAfter.retry_after in seconds, whether PTB gives an int or a timedelta."""
    with warnings.catch_warnings():
        # Without PTB_TIMEDELTA=true the int form warns that it is deprecated.
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def delivery_error(exc: TelegramError) -> DeliveryError:
    """The outbox's view of a PTB error: retry later, or give up on this delivery."""
    if isinstance(exc, RetryAfter):
        seconds = retry_after_seconds(exc)
        return TransientDeliveryError(
            f"rate limited by Telegram, retry after {seconds:g}s", retry_after=seconds
        )
    if isinstance(exc, ChatMigrated):
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
def _delivery_errors() -> Iterator[None]:
    """Turn PTB exceptions into DeliveryErrors (the PTB one stays as __cause__)."""
    try:
        yield
    except TelegramError as exc:
        raise delivery_error(exc) from exc


async def _edit(action: Callable[[], Awaitable[None]]) -> None:
    """Run one edit call: not-modified is success, a vanished message is MessageGone."""
    try:
        await action()
    except BadRequest as exc:
        text = exc.message.lower()
        if _NOT_MODIFIED in text:
            return
        if any(part in text for part in _GONE):
            raise MessageGone(exc.message) from exc
        raise delivery_error(exc) from exc
    except TelegramError as exc:
        raise delivery_error(exc) from exc


async def _shutdown(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Stop whatever of `app` is running, in reverse order, and close its HTTP clients."""
    steps: list[Callable[[], Awaitable[None]]] = []
    if app.updater is not None and app.updater.running:
        steps.append(app.updater.stop)
    if app.running:
        steps.append(app.stop)
    # Application.shutdown skips a bot whose getMe failed, leaving its clients open.
    steps += [app.shutdown, app.bot.shutdown]
    for step in steps:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("telegram: error while shutting down: %s", _describe(exc))


# -- command helpers ----------------------------------------------------------------------


async def _is_admin(update: Update, context: ContextTypes.DEFAULT_TYPE) -> bool:
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


def _requester(update: Update) -> str | None:
    """Who issued a command, for the store's created_by column."""
    user = update.effective_user
    if user is not None:
        return f"telegram:{user.id}"
    message = update.effective_message
    if message is not None and message.sender_chat is not None:
        return f"telegram:{message.sender_chat.id}"
    return None


def _no_arguments(name: str, args: list[str]) -> None:
    if args:
        raise CommandError(f"/{name} takes no arguments.")


def help_text(chat_id: str) -> str:
    """The /start and /help answer: what the bot does, this chat's id, the commands."""
    lines = [
        "<b>Stream notifications</b>",
        "I post here when streamers go live, change their title or category, and end.",
        "",
        f"This chat's id: <code>{html.escape(chat_id)}</code>",
        "To get notifications here, add that id to <code>telegram_chats</code> of a route in "
        "the bot's config, or use <code>/subscribe twitch/someone</code> (a pattern like "
        "<code>twitch/*</code> works too).",
        "",
        "<b>Commands</b>",
    ]
    for name, description in COMMAND_HELP:
        usage = _USAGE.get(name)
        shown = f"/{name} {usage}" if usage else f"/{name}"
        lines.append(f"{html.escape(shown)} — {html.escape(description)}")
    lines += [
        "",
        "Durations look like 30m, 2h or 1d. In groups and channels only admins can mute, "
        "unmute, subscribe or unsubscribe.",
    ]
    return "\n".join(lines)


def status_text(report: StatusReport, *, show_failures: bool) -> str:
    """The /status answer: who is live (linked), their title, category and uptime; mutes."""
    lines: list[str] = []
    if report.live:
        lines.append("<b>Live now</b>")
        for entry in report.live:
            # Names, titles and categories are stream text, keys and mutes partly too.
            name = markup.escape_telegram(entry.name)
            url = markup.safe_url(entry.url)
            link = f'<a href="{html.escape(url)}">{name}</a>' if url else f"<b>{name}</b>"
            lines.append(f"🔴 {link} <code>{markup.escape_telegram(entry.key)}</code>")
            if entry.title:
                lines.append(f"<i>{markup.escape_telegram(entry.title)}</i>")
            details = []
            if entry.categories:
                details.append("🎮 " + markup.escape_telegram(", ".join(entry.categories)))
            if entry.uptime is not None:
                details.append("⏱ up " + html.escape(format_duration(entry.uptime)))
            if details:
                lines.append(" · ".join(details))
    else:
        where = " among the streams routed here" if report.scoped else ""
        lines.append(f"Nobody is live right now{where}.")
    lines += ["", mutes_text(report)]
    if show_failures:
        count = report.failed_deliveries
        lines += [
            "",
            f"⚠️ {count} notification{'s' * (count != 1)} to this chat failed for good. "
            "Check that the bot may still post here; the bot's log has the details.",
        ]
    return "\n".join(lines)


def mutes_text(report: StatusReport) -> str:
    """The mutes in force here, one per line."""
    if not report.mutes:
        return "Nothing is muted here."
    lines = ["<b>Muted here</b>"]
    lines += [f"• {markup.escape_telegram(mute.describe(report.now))}" for mute in report.mutes]
    return "\n".join(lines)
