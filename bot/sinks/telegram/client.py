"""python-telegram-bot as the bot runs it: paced under Telegram's flood limits, closed
step by step, and with the token kept out of every log line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Final

from telegram.error import RetryAfter, TelegramError
from telegram.ext import Application, BaseRateLimiter

from bot.logs import RecordRewriter
from bot.sinks.ratelimit import WindowLimiter
from bot.sinks.telegram.errors import describe, retry_after_seconds

log = logging.getLogger(__package__)

_REDACTED: Final = "***"
# Past this many groups' limiters, the idle ones are dropped (an idle one limits nothing).
_GROUP_LIMITERS_KEPT: Final = 512
# What a Bot API call answers (PTB's JSONDict is dict[str, Any]).
_ApiResult = bool | dict[str, Any] | list[dict[str, Any]]


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


def polling_error(exc: TelegramError) -> None:
    """The updater retries getUpdates itself; say what failed without a traceback."""
    log.warning("telegram: polling for updates failed, retrying: %s", describe(exc))


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
