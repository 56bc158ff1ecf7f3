"""The Telegram sink: notifications and bot commands through python-telegram-bot (v22).

One PTB Application runs inside the bot's event loop (initialize, start_polling, start;
never run_polling). Notifications are a photo with an HTML caption when the card has a
cover that fits, otherwise an HTML text message; both carry one URL button.

Message ids handed back to the outbox say which kind of message a card is, because
Telegram edits the two with different methods: ``"photo:<id>"`` (editMessageCaption)
and ``"text:<id>"`` (editMessageText). A bare ``"<id>"`` is edited as text, then as a
caption if Telegram says it has no text.

Requests that name a chat are paced under Telegram's flood limits by PacedRateLimiter
(rolling windows, bot/sinks/telegram/client.py), each delivery taking its turn before it
is rendered. The commands are bot/sinks/telegram/commands.py.

The bot token sits in every Bot API URL, which httpx logs at INFO and PTB's InvalidToken
repeats, so while the sink runs the "httpx" logger is held at WARNING and a filter on the
libraries' loggers (and the bot's own) redacts the token from anything that still gets
through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final, Literal

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, InvalidToken, TelegramError
from telegram.ext import Application, ApplicationBuilder, ExtBot

from bot import markup
from bot.chat.commands import CATALOGUE, CommandSpec
from bot.commands import Commands
from bot.errors import (
    DeliveryError,
    MessageGone,
    PermanentDeliveryError,
    StoreUnavailable,
    TargetMoved,
    TransientDeliveryError,
)
from bot.events import Event
from bot.render import Renderer
from bot.sinks.base import HoldsRole, ReleasesRole, WebRoute
from bot.sinks.telegram.client import (
    PacedRateLimiter,
    PerChatUpdates,
    TokenRedactor,
    background_reads,
    polling_error,
    shutdown,
)
from bot.sinks.telegram.commands import BotCommands
from bot.sinks.telegram.config import TelegramConfig, chat_id_of, thread_id_of
from bot.sinks.telegram.errors import (
    ALREADY_DELETED,
    delivery_error,
    delivery_errors,
    describe,
    may_have_been_posted,
    permission_refusal,
    photo_unusable,
    photos_refused,
)
from bot.sinks.telegram.errors import edit as edit_call
from bot.sinks.telegram.format import FORMAT, TelegramMessage
from bot.sinks.telegram.preflight import check_targets, moved_problem
from bot.sinks.telegram.webhook import Webhook
from bot.sinks.telegram.webhook import ensure_set as ensure_webhook
from bot.store import Delivery
from bot.targets import SEND, TargetProblem, TargetProblems

log = logging.getLogger(__package__)

#: Loggers (and their children) the token filter is attached to while the sink runs.
_GUARDED_LOGGERS: Final = ("httpx", "httpcore", "telegram", "asyncio", "bot")
#: At stop, a command being answered gets this long to finish before it is cut off.
COMMAND_DRAIN_SECONDS: Final = 5.0

CardKind = Literal["photo", "text"]
# What a Bot API call answers (PTB's JSONDict is dict[str, Any]).
_ApiResult = bool | dict[str, Any] | list[dict[str, Any]]


#: The updates the bot asks for, polled or posted: commands in chats and in channels.
ALLOWED_UPDATES: Final = (Update.MESSAGE, Update.CHANNEL_POST)
#: The role of the process that long-polls Telegram for updates (Store.hold_role).
UPDATES_ROLE: Final = "telegram-updates"
#: How often a process asks whether it should poll (or still should).
ROLE_CHECK_SECONDS: Final = 5.0


class TelegramSink:
    """Posts notifications to Telegram chats and answers the bot's commands there."""

    name = "telegram"
    #: Telegram's limits, after HTML entity parsing (UTF-16 code units).
    #: Its message format: templates, escaping and Telegram's limits (format.py).
    format = FORMAT
    text_max = FORMAT.text_max
    caption_max = FORMAT.caption_max
    #: How long a send (sendMessage, sendPhoto) waits for Telegram's answer. Telegram has
    #: no idempotency key: a send that timed out may well have been posted (a slow
    #: Telegram answers after 5-20 s under load, later when it fetches a photo URL), and
    #: sending it again posts it twice. So only a dead connection should time out: long
    #: enough for a slow answer, short enough that a dead connection is given up within
    #: a minute. (PTB's default, 5 s, posted three identical messages in 6 s.)
    send_read_timeout = 30.0
    #: At shutdown a send in flight is waited for this long: the slowest send's whole
    #: round trip (the read timeout, plus PTB's 5 s connect and 5 s write timeouts and
    #: some slack). A send cut off here may post twice; waiting it out never does.
    drain_timeout = send_read_timeout + 15.0
    keeps_cards = True
    shares_token_limits = True
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
        catalogue: Sequence[CommandSpec] = CATALOGUE,
        poll_timeout: float = 10.0,
        rate_limit_retries: int = 3,
        reconnect_delay: float = 5.0,
        reconnect_max_delay: float = 300.0,
        overall_limit: int | None = None,
        overall_period: float | None = None,
        group_limit: int | None = None,
        group_period: float | None = None,
        problems: TargetProblems | None = None,
        holds_role: HoldsRole | None = None,
        releases_role: ReleasesRole | None = None,
        role_check_interval: float = ROLE_CHECK_SECONDS,
        public_url: str | None = None,
    ) -> None:
        if config.token is None:
            raise ValueError("TelegramSink needs a token; leave the sink out when there is none")
        if config.updates == "webhook" and public_url is None:
            raise ValueError('updates = "webhook" needs the public URL ([server] public_url)')
        if rate_limit_retries < 1:
            # A 429 on a command's answer would lose it; deliveries would only be retried
            # later by the outbox, with the chat held back meanwhile.
            raise ValueError("rate_limit_retries must be at least 1")
        self._token = config.token
        # Where what is found wrong with a target goes (/healthz, /status for admins).
        self._problems = problems if problems is not None else TargetProblems()
        self._api_url = config.api_url.rstrip("/") if config.api_url else None
        self._renderer = renderer
        self._bot_commands = BotCommands(
            commands=commands,
            renderer=renderer,
            catalogue=catalogue,
            on_moved=self._moved,
        )
        # Chats that refused a photo: their cards are sent as text first.
        self._text_only_chats: set[int | str] = set()
        self._poll_timeout = poll_timeout
        self._rate_limiter = PacedRateLimiter(
            overall=(overall_limit or self.overall_limit, overall_period or self.overall_period),
            group=(group_limit or self.group_limit, group_period or self.group_period),
            max_retries=rate_limit_retries,
        )
        # Commands of one chat in order, of different chats at once (client.py).
        self._updates = PerChatUpdates()
        self._reconnect_delay = reconnect_delay
        self._reconnect_max_delay = reconnect_max_delay
        self._state = "created"
        self._app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._guarded: list[logging.Logger] = []
        self._httpx_level: int | None = None
        # Only one process may long-poll a bot token (Telegram answers a second getUpdates
        # with 409 Conflict): with several bot processes on one database, the one holding
        # UPDATES_ROLE polls; the others send, and take over when it is gone.
        self._holds_role = holds_role
        self._releases_role = releases_role
        self._role_check_interval = role_check_interval
        self._role_task: asyncio.Task[None] | None = None
        self._polling = False
        # With updates = "webhook", Telegram posts updates to every process's listener
        # instead, and nobody polls.
        self._webhook = (
            Webhook.for_token(self._token, public_url)
            if config.updates == "webhook" and public_url is not None
            else None
        )
        self._redactor = TokenRedactor(
            self._token, also=self._webhook.secrets if self._webhook is not None else ()
        )

    def __repr__(self) -> str:
        api = self._api_url or "api.telegram.org"
        return f"<TelegramSink state={self._state} api={api}>"

    @property
    def state(self) -> str:
        """created, starting, running, failed (see the log) or stopped."""
        return self._state

    @property
    def web_routes(self) -> tuple[WebRoute, ...]:
        """With updates by webhook, the route Telegram posts them to."""
        if self._webhook is None:
            return ()
        return (self._webhook.route(self._take_update),)

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

    def share_limits(self, processes: int, rank: int = 0) -> None:
        """Take `1/processes` of Telegram's overall limit (per bot token; the lowest
        ranks take the remainder). A group's is not divided (`sent_elsewhere`)."""
        self._rate_limiter.share(processes, rank)

    def chat_window(self, target: str) -> float | None:
        """A group's or channel's limit window (a minute): what the other processes sent
        there within it counts towards the group's limit here too. None for a private
        chat."""
        return self._rate_limiter.group_window(chat_id_of(target))

    def sent_elsewhere(self, target: str, sent: Sequence[float], *, now: float) -> None:
        """What the other processes sent to the target's group lately (see
        PacedRateLimiter.sent_elsewhere)."""
        self._rate_limiter.sent_elsewhere(chat_id_of(target), sent, now=now)

    async def stop(self) -> None:
        """Stop polling and close every connection (idempotent)."""
        for task in (self._reconnect_task, self._role_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._reconnect_task = self._role_task = None
        app, self._app = self._app, None
        if app is not None:
            # No new commands first, then the ones being answered get their grace.
            with contextlib.suppress(TelegramError, RuntimeError):
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()
            await self._updates.drain(COMMAND_DRAIN_SECONDS)
            await shutdown(app)
        if self._polling and self._releases_role is not None:
            # The poll has ended: another process may start its own now rather than
            # when this one's database connection closes.
            with contextlib.suppress(StoreUnavailable):
                await self._releases_role(UPDATES_ROLE)
        self._polling = False
        if self._state != "created":
            self._state = "stopped"
        self._unguard_logs()

    async def _connect(self) -> Literal["running", "retry", "fatal"]:
        """One attempt to bring the application up; cleans up after itself on failure."""
        self._state = "starting"
        self._polling = False
        app = self._build_app()
        self._app = app
        step = "reach the Bot API"
        try:
            await app.initialize()
            step = "start polling"
            await self._bot_commands.set_menu(app)
            if self._webhook is not None:
                # Every process sets the same URL and secret (derived from the token), so
                # a start changes nothing for the others, and a stop leaves the webhook
                # in place for them and for the next start: Telegram keeps what it could
                # not post meanwhile and posts it again (for up to a day).
                step = "set the webhook"
                await ensure_webhook(app.bot, self._webhook, ALLOWED_UPDATES)
            elif await self._may_poll():
                await self._start_polling(app)
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
                describe(exc),
            )
            return await self._give_up(app, "retry")
        except Exception:
            log.exception("telegram: unexpected error while starting")
            return await self._give_up(app, "fatal")
        except BaseException:
            await self._give_up(app, "fatal")
            raise
        self._state = "running"
        if self._webhook is not None:
            log.info(
                "telegram: connected as @%s, taking commands Telegram posts to %s",
                app.bot.username,
                self._webhook.shown_url,
            )
            return "running"
        if self._polling:
            log.info("telegram: connected as @%s, polling for commands", app.bot.username)
        else:
            log.info(
                "telegram: connected as @%s; another bot process on the database polls for"
                " commands, this one sends, and takes over if that one stops",
                app.bot.username,
            )
        if self._holds_role is not None and self._role_task is None:
            self._role_task = asyncio.create_task(self._follow_role(), name="telegram-role")
        return "running"

    async def _start_polling(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        assert app.updater is not None  # the builder's default Updater
        # PTB deletes any webhook first (deleteWebhook), so going back from
        # updates = "webhook" to polling needs nothing more.
        await app.updater.start_polling(
            poll_interval=0.0,
            timeout=timedelta(seconds=self._poll_timeout),
            allowed_updates=list(ALLOWED_UPDATES),
            error_callback=polling_error,
        )
        self._polling = True

    async def _take_update(self, data: dict[str, Any]) -> bool:
        """An update Telegram posted to the webhook, queued to be handled like a polled
        one (chat by chat, in order); False while the sink cannot take it."""
        app = self._app
        if app is None or self._state != "running":
            return False
        await app.update_queue.put(Update.de_json(data, app.bot))
        return True

    async def _may_poll(self) -> bool:
        """Whether this process is the one that polls (always, without other processes)."""
        if self._holds_role is None:
            return True
        try:
            return await self._holds_role(UPDATES_ROLE)
        except StoreUnavailable as exc:
            log.warning("telegram: cannot tell whether to poll (%s); not polling for now", exc)
            return False

    async def _follow_role(self) -> None:
        """Poll while this process holds the role, stop when it loses it, start when it
        gets it: at most one poller per bot token across every process, and a new one
        within `role_check_interval` of the last one's end."""
        while True:
            await asyncio.sleep(self._role_check_interval)
            app = self._app
            if app is None or app.updater is None or self._state != "running":
                continue
            held = await self._may_poll()
            try:
                if held and not self._polling:
                    await self._start_polling(app)
                    log.info("telegram: this process polls for commands now")
                elif not held and self._polling:
                    self._polling = False
                    await app.updater.stop()
                    log.warning("telegram: another bot process polls for commands now")
            except TelegramError as exc:
                log.warning("telegram: could not change polling (%s)", describe(exc))

    async def _give_up(
        self, app: Application[Any, Any, Any, Any, Any, Any], outcome: Literal["retry", "fatal"]
    ) -> Literal["retry", "fatal"]:
        await shutdown(app)
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
            .concurrent_updates(self._updates)
            .job_queue(None)
        )
        if self._webhook is not None:
            # Updates come by the listener's route: no getUpdates, which Telegram would
            # refuse with 409 while the webhook is set.
            builder = builder.updater(None)
        if self._api_url is not None:
            builder = builder.base_url(f"{self._api_url}/bot").base_file_url(
                f"{self._api_url}/file/bot"
            )
        app: Application[Any, Any, Any, Any, Any, Any] = builder.build()
        self._bot_commands.install(app)
        return app

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
            started = time.monotonic()
            try:
                return await self._post_card(bot, delivery, event)
            except TransientDeliveryError as exc:
                raise self._ambiguous(exc, started) from exc.__cause__
            except DeliveryError as exc:
                self._refused(delivery.target, exc)
                raise

    def _ambiguous(self, exc: TransientDeliveryError, started: float) -> TransientDeliveryError:
        """A send that failed while waiting for its answer may have been posted: it is
        tried again no sooner than a full read timeout after it began, the wait a slow
        answer gets, never right away."""
        if exc.__cause__ is None or not may_have_been_posted(exc.__cause__):
            return exc  # Telegram answered, or the request never reached it
        wait = self.send_read_timeout - (time.monotonic() - started)
        if wait <= 0:
            return exc
        return TransientDeliveryError(
            f"{exc} (it may have been posted; not sent again for {wait:.0f}s)",
            retry_after=max(exc.retry_after or 0.0, wait),
        )

    async def _post_card(self, bot: ExtBot[Any], delivery: Delivery, event: Event) -> str:
        message = self._renderer.render(
            FORMAT,
            event,
            templates=delivery.options.get("templates"),
            locale=delivery.options.get("locale"),
        )
        chat_id = chat_id_of(delivery.target)
        thread_id = thread_id_of(delivery.target)
        keyboard = _keyboard(message)
        # A route's `silent` or quiet hours: the message arrives without a sound.
        quietly = delivery.options.get("silent") is True
        if message.photo_url and message.caption and chat_id not in self._text_only_chats:
            try:
                with delivery_errors(delivery.target):
                    sent = await bot.send_photo(
                        chat_id,
                        message.photo_url,
                        caption=message.caption,
                        parse_mode=ParseMode.HTML,
                        reply_markup=keyboard,
                        message_thread_id=thread_id,
                        disable_notification=quietly,
                        read_timeout=self.send_read_timeout,
                    )
                return f"photo:{sent.message_id}"
            except PermanentDeliveryError as exc:
                cause = exc.__cause__
                if isinstance(cause, BadRequest) and photos_refused(cause):
                    # Media restricted for members: every card there goes out as text
                    # from now on (until a restart, which tries a photo once more).
                    self._text_only_chats.add(chat_id)
                    log.warning(
                        "telegram %s: the chat does not let the bot send photos; its cards"
                        " go out as text (allow media for the bot, or make it an admin)",
                        delivery.target,
                    )
                elif not isinstance(cause, BadRequest) or not photo_unusable(cause):
                    raise
                log.warning(
                    "telegram %s: Telegram could not use the cover %s (%s); sending text",
                    delivery.target,
                    message.photo_url,
                    exc,
                )
        with delivery_errors(delivery.target):
            sent = await bot.send_message(
                chat_id,
                message.text,
                parse_mode=ParseMode.HTML,
                reply_markup=keyboard,
                link_preview_options=_preview(message),
                message_thread_id=thread_id,
                disable_notification=quietly,
                read_timeout=self.send_read_timeout,
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
            try:
                await self._edit_card(bot, delivery, kind, number, event)
            except DeliveryError as exc:
                self._refused(delivery.target, exc)
                raise

    async def _edit_card(
        self,
        bot: ExtBot[Any],
        delivery: Delivery,
        kind: CardKind | None,
        number: int,
        event: Event,
    ) -> None:
        message = self._renderer.render(
            FORMAT,
            event,
            templates=delivery.options.get("templates"),
            locale=delivery.options.get("locale"),
        )
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
            await edit_call(edit_caption, delivery.target)
        elif kind == "text":
            await edit_call(edit_text, delivery.target)
        else:
            try:
                await edit_call(edit_text, delivery.target)
            except MessageGone as exc:
                if "no text in the message" not in str(exc).lower():
                    raise
                await edit_call(edit_caption, delivery.target)

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
            if ALREADY_DELETED in exc.message.lower():
                log.debug("telegram %s: card %s was already gone", delivery.target, message_id)
                return
            error = delivery_error(exc, delivery.target)
            self._refused(delivery.target, error)
            raise error from exc
        except TelegramError as exc:
            error = delivery_error(exc, delivery.target)
            self._refused(delivery.target, error)
            raise error from exc

    def _refused(self, target: str, exc: DeliveryError) -> None:
        """What a failed send says about the target: a group that became a supergroup
        (shown once, for admins), or a refusal a change of the bot's rights explains (the
        preflight looks at the chat again)."""
        if isinstance(exc, TargetMoved):
            self._moved(exc.old, exc.new)
        elif isinstance(exc, PermanentDeliveryError) and permission_refusal(exc.__cause__):
            self._problems.request_recheck(self.name, target)

    def _moved(self, old: str, new: str) -> None:
        """Telegram said (a send's error or the group's service message) that the group
        `old` is the supergroup `new` now: one warning, and a note for its admins."""
        self._problems.report(moved_problem(old, new, origin=SEND))

    async def preflight(
        self,
        targets: Sequence[str],
        *,
        mention_roles: Mapping[str, Collection[int]] | None = None,
        thread_targets: Collection[str] | None = None,
    ) -> list[TargetProblem] | None:
        """Check each target with Telegram's read calls (bot/sinks/telegram/preflight.py):
        the chat exists, the bot is in it and may post there (an administrator allowed to
        post, in a channel); a group that became a supergroup is reported as moved. None
        while the sink is not connected or Telegram cannot be asked. (Telegram has no
        roles: `mention_roles` is not used.)"""
        del mention_roles, thread_targets
        app = self._app
        if self._state != "running" or app is None:
            return None
        with background_reads():
            return await check_targets(app.bot, targets)


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


def _keyboard(message: TelegramMessage) -> InlineKeyboardMarkup | None:
    if not (message.button_text and message.button_url):
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(message.button_text, url=message.button_url)]]
    )


def _preview(message: TelegramMessage) -> LinkPreviewOptions | None:
    return LinkPreviewOptions(is_disabled=True) if message.disable_preview else None
