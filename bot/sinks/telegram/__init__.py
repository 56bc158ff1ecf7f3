"""Telegram: the platform package (client, message format, config, commands, errors, sink).

`SPEC` is what `bot.registry.PLATFORMS` lists. Importing this package loads no
python-telegram-bot: only `build_sink` does, so `check` and `render` stay light.
"""

from __future__ import annotations

import os
from typing import Any

from bot.sinks.base import PlatformConfig, PlatformSpec, Sink
from bot.sinks.telegram import config
from bot.sinks.telegram.format import FORMAT


def build_sink(platform_config: PlatformConfig, **options: Any) -> Sink:
    """The Telegram sink for a loaded `[telegram]` section (renderer=, commands=, ...)."""
    # python-telegram-bot warns on every rate limit unless told to report its waits as
    # timedeltas (it reads this when it raises RetryAfter), which the sink reads either way.
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    from bot.sinks.telegram.sink import TelegramSink  # noqa: PLC0415 - PTB is heavy

    if not isinstance(platform_config, config.TelegramConfig):
        raise TypeError(f"not a [telegram] config: {type(platform_config).__name__}")
    return TelegramSink(config=platform_config, **options)


SPEC = PlatformSpec(
    name="telegram",
    title="Telegram",
    config_keys=config.CONFIG_KEYS,
    read_config=config.read_config,
    default_config=config.TelegramConfig(),
    target_key=config.TARGET_KEY,
    parse_target=config.parse_target,
    format=FORMAT,
    build_sink=build_sink,
    takes_roles=True,
    public_url_problems=config.public_url_problems,
)
