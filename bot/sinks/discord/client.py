"""The discord.py client as the bot runs it: pointed at its endpoints, paced under
Discord's global limit, and telling the sink when the gateway session is ready."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Awaitable, Callable, Iterable
from types import SimpleNamespace
from typing import Any, Final

import aiohttp
import yarl

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib audioop module (voice support), deprecated since
    # Python 3.11; the warning says nothing about this bot, which has no voice.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    import discord.gateway
    import discord.http

from bot.sinks.ratelimit import WindowLimiter

#: What the invite link asks for. View Channel and Send Messages to post at all (Send
#: Messages in Threads for a thread in `discord_channels`); Embed
#: Links because without it Discord silently drops the embed and only the one-line
#: content arrives. Editing the bot's own messages needs nothing more, and the bot never
#: reads other messages, so no Read Message History. No Mention Everyone either: a role in
#: `mention_roles` is pinged when it is mentionable; an admin who wants to ping a role
#: that is not can grant that permission knowingly (the sink logs the hint).
INVITE_PERMISSIONS: Final = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True, embed_links=True
)
INVITE_SCOPES: Final = ("bot", "applications.commands")

# Interaction callbacks and their follow-ups (the bot uses webhooks for nothing else).
_UNLIMITED_PATH: Final = re.compile(r"/(interactions|webhooks)/")


def allowed_mentions_for(
    roles: Iterable[str | int], *, everyone: bool = False
) -> discord.AllowedMentions:
    """Allowed mentions that ping exactly `roles` (and @everyone only when a route asked
    for it): no users or replies."""
    return discord.AllowedMentions(
        everyone=everyone,
        users=False,
        roles=[discord.Object(int(role)) for role in roles],
        replied_user=False,
    )


class BotClient(discord.Client):
    """discord.Client that tells the sink when it is ready, and when the bot's permissions
    in a server may have changed (channel overwrites, roles, its own member's roles)."""

    def __init__(
        self,
        *,
        on_ready: Callable[[], None],
        identify_hook: Callable[..., Awaitable[None]] | None,
        on_permissions_changed: Callable[[int], None] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._sink_on_ready = on_ready
        self._identify_hook = identify_hook
        self._permissions_changed = on_permissions_changed

    async def on_ready(self) -> None:
        """The gateway session is up: commands can arrive."""
        self._sink_on_ready()

    def _changed(self, guild: discord.Guild | None) -> None:
        if guild is not None and self._permissions_changed is not None:
            self._permissions_changed(guild.id)

    # What the GUILDS intent delivers that can change what the bot may do in a channel.
    # GUILD_MEMBER_UPDATE needs the members intent except for the bot's own member,
    # which Discord always sends.

    async def on_guild_channel_update(
        self, before: discord.abc.GuildChannel, after: discord.abc.GuildChannel
    ) -> None:
        """Overwrites or the type of a channel changed (a text channel made announcement)."""
        del before
        self._changed(after.guild)

    async def on_guild_channel_create(self, channel: discord.abc.GuildChannel) -> None:
        """A channel appeared (an id in bot.toml may exist now)."""
        self._changed(channel.guild)

    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        """A channel was deleted."""
        self._changed(channel.guild)

    async def on_thread_update(self, before: discord.Thread, after: discord.Thread) -> None:
        """A thread was archived, locked or renamed."""
        del before
        self._changed(after.guild)

    async def on_thread_delete(self, thread: discord.Thread) -> None:
        """A thread was deleted."""
        self._changed(thread.guild)

    async def on_guild_role_update(self, before: discord.Role, after: discord.Role) -> None:
        """A role's permissions or mentionable flag changed."""
        del before
        self._changed(after.guild)

    async def on_guild_role_create(self, role: discord.Role) -> None:
        """A role appeared (a mention role in bot.toml may exist now)."""
        self._changed(role.guild)

    async def on_guild_role_delete(self, role: discord.Role) -> None:
        """A role was deleted."""
        self._changed(role.guild)

    async def on_member_update(self, before: discord.Member, after: discord.Member) -> None:
        """The bot's own roles changed (other members' updates do not matter here)."""
        del before
        if self.user is not None and after.id == self.user.id:
            self._changed(after.guild)

    async def on_guild_join(self, guild: discord.Guild) -> None:
        """The bot was invited to a server."""
        self._changed(guild)

    async def on_guild_remove(self, guild: discord.Guild) -> None:
        """The bot was removed from a server."""
        self._changed(guild)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py's (a 5 s pause before a re-IDENTIFY) unless the sink was given one."""
        if self._identify_hook is None:
            await super().before_identify_hook(shard_id, initial=initial)
        else:
            await self._identify_hook(shard_id, initial=initial)


class ShardedBotClient(BotClient, discord.AutoShardedClient):
    """BotClient running some of the bot's gateway shards (`shard_ids` of
    `shard_count`, set before `connect`), in one process of several (bot/sinks/discord/
    shards.py)."""


def paced_requests(limiter: WindowLimiter) -> aiohttp.TraceConfig:
    """An aiohttp trace that holds each REST request of the client until `limiter` has room.

    discord.py has no hook of its own for this, but hands its `http_trace` to aiohttp,
    which awaits `on_request_start` before sending. So every request waits its turn:
    login, command sync, sends, edits, deletes, and discord.py's own retries.
    """

    async def start(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        del session
        url = params.url
        # Not the gateway websocket, and not interaction answers: Discord exempts those
        # from the global limit, and they must arrive within 3 s even during a fan-out.
        if url.scheme not in ("http", "https") or _UNLIMITED_PATH.search(url.path):
            return
        await limiter.acquire()
        context.paced = True

    async def end(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: object
    ) -> None:
        del session, params
        if getattr(context, "paced", False):
            context.paced = False
            limiter.release()

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(start)
    trace.on_request_end.append(end)
    trace.on_request_exception.append(end)
    return trace


class Endpoints:
    """Points discord.py at `api_url` / `gateway_url` and back (process globals)."""

    def __init__(self, api_url: str | None, gateway_url: str | None) -> None:
        self._api, self._gateway = api_url, gateway_url
        self._saved: tuple[str, yarl.URL] | None = None

    def point(self) -> None:
        """Use the configured endpoints (a no-op when none is configured)."""
        if self._api is None and self._gateway is None:
            return
        if self._saved is None:
            self._saved = (
                discord.http.Route.BASE,
                discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            )
        if self._api is not None:
            discord.http.Route.BASE = self._api.rstrip("/")
        if self._gateway is not None:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self._gateway)

    def restore(self) -> None:
        """Put back what discord.py had before `point`."""
        if self._saved is None:
            return
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
        self._saved = None


#: The line `AutoShardedClient.launch_shard` logs, with the traceback, before it tries a
#: shard's connection again after five seconds (discord.py 2.x, discord/shard.py).
_SHARD_RETRY: Final = "Failed to connect for shard_id"
#: A shard's connection failing or being closed under it, not a bug.
_CONNECTION_ERRORS: Final = (
    OSError,  # ConnectionResetError, refused, unreachable, and TimeoutError
    aiohttp.ClientError,
    discord.ConnectionClosed,
    discord.GatewayNotFound,
)


class ShardRetryLine(logging.Filter):
    """discord.py's "Failed to connect for shard_id: N. Retrying..." as one WARNING line
    when the cause was the connection (the network, Discord's gateway closing it, or the
    sink closing an old client while one of its shards was still connecting, as when a
    process takes another's shards): the retry is discord.py's own, and a traceback in
    the log would say there is a bug. Any other cause keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite that one record in place; never drop one."""
        if not (isinstance(record.msg, str) and record.msg.startswith(_SHARD_RETRY)):
            return True
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, _CONNECTION_ERRORS):
            return True
        shard = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "discord: shard %s could not connect (%s: %s); discord.py tries again in 5s"
        record.args = (shard, type(error).__name__, error)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


#: On discord.py's shard logger from when the first sink is made (addFilter adds it once).
SHARD_RETRY_LINE: Final = ShardRetryLine()
