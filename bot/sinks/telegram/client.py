"""python-telegram-bot as the bot runs it: paced under Telegram's flood limits, closed
step by step, and with the token kept out of every log line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
)
from contextvars import ContextVar
from typing import Any, Final

from telegram import Update
from telegram.error import RetryAfter, TelegramError
from telegram.ext import Application, BaseRateLimiter, BaseUpdateProcessor

from bot.logs import RecordRewriter
from bot.sinks.base import CLOCK_ALLOWANCE
from bot.sinks.ratelimit import WindowLimiter
from bot.sinks.telegram.errors import describe, retry_after_seconds

log = logging.getLogger(__package__)

_REDACTED: Final = "***"
# Past this many groups' limiters, the idle ones are dropped (an idle one limits nothing).
_GROUP_LIMITERS_KEPT: Final = 512
# What a Bot API call answers (PTB's JSONDict is dict[str, Any]).
_ApiResult = bool | dict[str, Any] | list[dict[str, Any]]


class TokenRedactor(RecordRewriter):
    """Replaces the token's secret part in a record's message and traceback with ***, and
    any other secret it is given (the webhook's path and secret_token, which PTB logs
    with setWebhook's parameters at DEBUG)."""

    def __init__(self, token: str, also: Iterable[str] = ()) -> None:
        super().__init__()
        # The part before ":" is the bot's public user id; the rest is the secret.
        self._secrets = (token.split(":", 1)[-1] or token, *also)

    def redact(self, text: str) -> str:
        """`text` without the secrets."""
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return text

    def rewrite(self, text: str) -> str:
        """The message (or traceback) without the secrets."""
        return self.redact(text)


def polling_error(exc: TelegramError) -> None:
    """The updater retries getUpdates itself; say what failed without a traceback."""
    log.warning("telegram: polling for updates failed, retrying: %s", describe(exc))


# True while a command is answered: its requests (the admin check, the reply) are for
# someone waiting, and go ahead of the chat's queued notifications. A context variable
# because the requests are made deep inside python-telegram-bot, in the handler's task.
_replying: ContextVar[bool] = ContextVar("telegram_replying", default=False)


@contextlib.contextmanager
def replying() -> Iterator[None]:
    """Requests made inside go ahead of queued notifications: someone waits for them."""
    token = _replying.set(True)
    try:
        yield
    finally:
        _replying.reset(token)


# True while a call's 429 should reach its caller at once (`no_resends`).
_no_resends: ContextVar[bool] = ContextVar("telegram_no_resends", default=False)


@contextlib.contextmanager
def no_resends() -> Iterator[None]:
    """A request made inside that gets a 429 raises RetryAfter instead of being sent
    again after the wait: for a caller that should look again before it resends.
    (PTB drops a ``rate_limit_args=0``, so a per-call zero cannot say this.)"""
    token = _no_resends.set(True)
    try:
        yield
    finally:
        _no_resends.reset(token)


# True while the preflight reads chats: nobody waits for those requests.
_reading: ContextVar[bool] = ContextVar("telegram_reading", default=False)


@contextlib.contextmanager
def background_reads() -> Iterator[None]:
    """Requests made inside (getChat, getChatMember: reads, no messages) go after every
    other one and leave half the overall window free, and count towards no group's
    message limit: a preflight of a hundred chats at start delays no notification."""
    token = _reading.set(True)
    try:
        yield
    finally:
        _reading.reset(token)


class PacedRateLimiter(BaseRateLimiter[int]):
    """PTB's rate limiter, on rolling windows (WindowLimiter) rather than leaky buckets.

    As with PTB's AIORateLimiter, a request that names a chat counts towards the overall
    limit, one to a group or channel (a negative id or an @name) also towards that chat's
    group limit, and getUpdates is never held back. Unlike it, no window ever holds more
    than the limit (AIORateLimiter lets 30 through and then 30 a second more, so a fan-out
    ran into Telegram's 429s), and a 429 holds back only the request that got it: it waits
    retry_after and tries again, at most `max_retries` times, while other chats carry on.
    A request made inside `replying()` (a command's answer) is served before the
    notifications waiting for the same windows.
    """

    def __init__(
        self, *, overall: tuple[int, float], group: tuple[int, float], max_retries: int
    ) -> None:
        self._overall = WindowLimiter(*overall)
        self._group_rate = group
        self._groups: dict[int | str, WindowLimiter] = {}
        self._max_retries = max_retries

    def share(self, processes: int, rank: int = 0) -> None:
        """Take `1/processes` of Telegram's overall limit, which counts the bot token's
        messages from every process. A group's 20 a minute is not divided: one process
        at a time sends to a group (the store's claims), and it learns what the others
        sent there lately before it does (`sent_elsewhere`)."""
        self._overall.share(processes, rank)

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
        retries = 0 if _no_resends.get() else rate_limit_args or self._max_retries
        urgent = _replying.get()
        reading = _reading.get() and not urgent
        chat_id = data.get("chat_id")
        # The group limit is 20 messages a minute: reads send none.
        group = None if reading else self._group_limiter(chat_id)
        attempt = 0
        while True:
            try:
                # The group first: its wait can be long, and an overall slot taken before
                # it would sit unused meanwhile.
                async with (
                    group.slot(urgent=urgent) if group else contextlib.nullcontext(),
                    self._overall.slot(urgent=urgent, background=reading)
                    if chat_id is not None
                    else contextlib.nullcontext(),
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

    def group_window(self, chat_id: object) -> float | None:
        """The group limit's window for a group or channel chat; None for a private one
        (no limit of its own: the overall one's second is waited out on join)."""
        return self._group_rate[1] if _group_key(chat_id) is not None else None

    def sent_elsewhere(self, chat_id: object, sent: Sequence[float], *, now: float) -> None:
        """What the other bot processes (and this one's earlier runs) sent to a group
        lately, from the database, each recorded at a time in `sent`: each holds a slot
        of the group's limiter until it leaves Telegram's window, as this process's own
        messages do. One process at a time sends to a group, so the limiter then counts
        all of the group's messages of the last minute, whoever sent them."""
        group = self._group_limiter(chat_id)
        if group is None:
            return
        # Recorded after Telegram answered, when it had counted them: at + period is
        # late enough, by this clock; the allowance is for the other machines' clocks.
        group.hold_elsewhere(at + group.period + CLOCK_ALLOWANCE - now for at in sent)

    def _group_limiter(self, chat_id: object) -> WindowLimiter | None:
        """The limiter of a group or channel chat (as AIORateLimiter tells them), or None."""
        key = _group_key(chat_id)
        if key is None:
            return None
        limiter = self._groups.get(key)
        if limiter is None:
            if len(self._groups) >= _GROUP_LIMITERS_KEPT:
                for idle in [k for k, v in self._groups.items() if v.idle]:
                    del self._groups[idle]
            limiter = self._groups[key] = WindowLimiter(*self._group_rate)
        return limiter


def _group_key(chat_id: object) -> int | str | None:
    """A group or channel's key, as AIORateLimiter tells them (a negative id, which PTB
    may pass as text, or an @name); None for a private chat or no chat at all."""
    key = chat_id
    with contextlib.suppress(TypeError, ValueError):
        key = int(chat_id)  # type: ignore[call-overload]
    if isinstance(key, int) and key < 0:
        return key
    return key if isinstance(key, str) else None


class PerChatUpdates(BaseUpdateProcessor):
    """Updates of one chat one after another, of different chats at the same time.

    PTB handles updates strictly one at a time unless told otherwise, so a reply waiting
    out one busy group's flood limit (20 messages a minute) held up every other chat's
    commands: about 20 commands a minute in one group delayed another chat's answers by
    15 s. Within a chat the order stays: answers come in the order they were asked.
    """

    def __init__(self, max_concurrent_updates: int = 256) -> None:
        super().__init__(max_concurrent_updates)
        self._chats: dict[object, tuple[asyncio.Lock, int]] = {}
        self._handling: set[asyncio.Task[Any]] = set()

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Run `coroutine` once the updates of the same chat before it are done."""
        chat = update.effective_chat if isinstance(update, Update) else None
        key = chat.id if chat is not None else None
        lock, users = self._chats.get(key, (asyncio.Lock(), 0))
        self._chats[key] = (lock, users + 1)
        task = asyncio.current_task()
        if task is not None:
            self._handling.add(task)
        try:
            async with lock:
                await coroutine
        finally:
            if task is not None:
                self._handling.discard(task)
            lock, users = self._chats[key]
            if users == 1:
                del self._chats[key]  # nobody else waits: a quiet chat costs nothing
            else:
                self._chats[key] = (lock, users - 1)

    async def drain(self, grace: float) -> None:
        """At stop: let the commands being answered finish for up to `grace` s, then cut
        off the rest (an answer still waiting for its chat's flood window, say; PTB's stop
        would wait for it however long that takes)."""
        pending = set(self._handling)
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            log.info("telegram: %d command answer(s) cut off by the shutdown", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""


async def shutdown(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
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
            log.warning("telegram: error while shutting down: %s", describe(exc))
