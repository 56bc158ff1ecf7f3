"""The `[discord]` section and Discord's address grammar (what a `discord_channels` entry is)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from bot.errors import PermanentDeliveryError
from bot.sinks.base import ConfigTable
from bot.tomltypes import parse_snowflake, show, type_name

#: The section's keys, in the order README documents them.
CONFIG_KEYS: Final = ("token", "token_env", "api_url", "gateway_url", "guild_ids", "shard_count")
#: `shard_count = "auto"`: as many as Discord recommends (GET /gateway/bot), read at start.
AUTO_SHARDS: Final = "auto"
#: Far beyond any bot (Discord wants a shard per 2,500 servers at most); a bigger number
#: is a typo, and each shard is a gateway connection someone must run.
MAX_SHARDS: Final = 4096
#: Its key in `[[routes]]`.
TARGET_KEY: Final = "discord_channels"

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class DiscordConfig:
    """The Discord sink; `disabled_reason` says why it is off and is unused when enabled."""

    token: str | None = field(default=None, repr=False)
    api_url: str | None = None
    gateway_url: str | None = None
    guild_ids: tuple[int, ...] = ()
    #: None: one unsharded gateway session per process. A number (or AUTO_SHARDS): the
    #: gateway in that many shards, which the bot processes on the database split.
    shard_count: int | str | None = None
    disabled_reason: str | None = "no [discord] section"

    @property
    def enabled(self) -> bool:
        """True when a token resolved, so the sink should start."""
        return self.token is not None


def read_config(table: ConfigTable, environ: Mapping[str, str]) -> DiscordConfig:
    """The `[discord]` section: token or token_env, endpoints, and the servers to sync to."""
    token, reason = table.chat_token(environ)
    guild_ids = _unique(
        parse_snowflake(value, path, table.problems)
        for path, value in table.items("guild_ids") or []
    )
    return DiscordConfig(
        token=token,
        api_url=table.url("api_url", ("http", "https")),
        gateway_url=table.url("gateway_url", ("ws", "wss")),
        guild_ids=guild_ids,
        shard_count=_shard_count(table),
        disabled_reason=reason,
    )


def _shard_count(table: ConfigTable) -> int | str | None:
    """`shard_count`: a number of shards, or "auto"; absent, no sharding."""
    if not table.has("shard_count"):
        return None
    value = table.data["shard_count"]
    if value == AUTO_SHARDS:
        return AUTO_SHARDS
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SHARDS:
        return value
    shown = show(value) if isinstance(value, str) else type_name(value)
    if isinstance(value, int) and not isinstance(value, bool):
        shown = str(value)
    table.problem(
        "shard_count", f'expected a number of shards (1-{MAX_SHARDS}) or "auto", got {shown}'
    )
    return None


def parse_target(value: Any, path: str, problems: list[str]) -> str | None:
    """A `discord_channels` entry: a channel id, as the outbox's target string."""
    channel = parse_snowflake(value, path, problems)
    return None if channel is None else str(channel)


def channel_id(target: str) -> int:
    """The channel a delivery's target names; PermanentDeliveryError if it names none."""
    try:
        number = int(target)
    except ValueError:
        number = 0
    if number <= 0:
        raise PermanentDeliveryError(f"{target!r} is not a Discord channel id")
    return number


def _unique(values: Iterable[_T | None]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(value for value in values if value is not None))
