"""Discord: the platform package (client, message format, config, commands, errors, sink).

`SPEC` is what `bot.registry.PLATFORMS` lists. Importing this package loads no
discord.py: only `build_sink` does, so `check` and `render` stay light.
"""

from __future__ import annotations

from typing import Any

from bot.sinks.base import PlatformConfig, PlatformSpec, Sink
from bot.sinks.discord import config
from bot.sinks.discord.format import FORMAT


def build_sink(platform_config: PlatformConfig, **options: Any) -> Sink:
    """The Discord sink for a loaded `[discord]` section (renderer=, commands=, ...)."""
    from bot.sinks.discord.sink import DiscordSink  # noqa: PLC0415 - discord.py is heavy

    if not isinstance(platform_config, config.DiscordConfig):
        raise TypeError(f"not a [discord] config: {type(platform_config).__name__}")
    return DiscordSink(config=platform_config, **options)


SPEC = PlatformSpec(
    name="discord",
    title="Discord",
    config_keys=config.CONFIG_KEYS,
    read_config=config.read_config,
    default_config=config.DiscordConfig(),
    target_key=config.TARGET_KEY,
    parse_target=config.parse_target,
    format=FORMAT,
    build_sink=build_sink,
    takes_roles=True,
    takes_turns=True,
)
