"""REST look-ups of the channels the gateway's cache does not hold (sharding, issue 20).

A process's discord.py cache holds only the servers of the shards it runs (none at all
for a process that only sends), yet any process sends any delivery. What the sink reads
from the cache before a send, that a forum takes posts and not messages, and that
without Embed Links a card must go out as text, is then asked over REST instead:

- Get Channel, ``GET /channels/{id}``: the channel's type, name, parent and overwrites;
- Get Guild, ``GET /guilds/{id}``: the server's roles (the @everyone role has the
  server's id) and its owner;
- Get Guild Member, ``GET /guilds/{id}/members/{bot id}``: the bot's roles and timeout.

With those in discord.py's own objects, `channel.permissions_for(guild.me)` (what
preflight.bot_permissions calls) is the computation it does for a cached channel, which
follows Discord's ("Permission Overwrites", developers/topics/permissions.mdx:
"compute_base_permissions": the owner has all, else @everyone's permissions OR the
member's roles', ADMINISTRATOR meaning all; then "compute_overwrites": the @everyone
overwrite, the member's roles' overwrites together, the member's own). So an uncached
channel is treated as a cached one would be, and the rest of the sink does not know.

What is found is kept `ttl` seconds (at most `max_entries` channels and as many servers),
so a fan-out asks once per channel and once per server, not once per send; concurrent
look-ups of one channel or server wait for the first one's answer. No gateway event tells
this process when another shard's server changes, so the time bound is what keeps it
fresh, and the sink forgets a channel (and its server) as soon as Discord refuses a send
there for a reason about the channel (403, 404, 50013, 50008). A refusal of the look-up
itself is never kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib audioop module (voice support), deprecated since
    # Python 3.11; the warning says nothing about this bot, which has no voice.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord

from bot.sinks.discord.errors import NETWORK_ERRORS

log = logging.getLogger(__package__)

#: A few minutes: a fan-out (600 targets at 50 requests a second shared by a few
#: processes) is over well within it, and a permission changed in a server this process
#: gets no events from is seen this long after at worst.
DEFAULT_TTL: Final = 300.0
DEFAULT_MAX_ENTRIES: Final = 4096
#: Each look-up's bound. discord.py retries a 500 itself for about 25 s; a delivery
#: should rather go back to the outbox (or out without the permission check) sooner.
DEFAULT_TIMEOUT: Final = 10.0

Channel = discord.abc.GuildChannel | discord.Thread | discord.abc.PrivateChannel
#: What a look-up of the bot's server and member may fail with; the channel is then
#: used without permissions, as before there were look-ups.
_GUILD_ERRORS: Final = (discord.HTTPException, discord.RateLimited, *NETWORK_ERRORS)

_T = TypeVar("_T")


@dataclass(slots=True)
class _Entry(Generic[_T]):
    value: _T
    expires: float


class ChannelLookup:
    """Channels from the gateway's cache, else from REST, kept a while (module docstring).

    One per discord.py client: the objects it keeps belong to the client that fetched
    them (`clear` when the sink replaces the client).
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0 or max_entries < 1 or timeout <= 0:
            raise ValueError("a lookup needs ttl >= 0, max_entries >= 1 and timeout > 0")
        self._ttl = ttl
        self._max = max_entries
        self._timeout = timeout
        self._clock = clock
        self._channels: OrderedDict[int, _Entry[Channel]] = OrderedDict()
        self._guilds: OrderedDict[int, _Entry[discord.Guild]] = OrderedDict()
        # One lock per channel or server being looked up; gone once nobody waits on it.
        self._locks: weakref.WeakValueDictionary[tuple[str, int], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def __repr__(self) -> str:
        return f"<ChannelLookup {len(self._channels)} channels, {len(self._guilds)} servers>"

    async def channel(self, client: discord.Client, channel_id: int) -> Channel:
        """The channel as the gateway's cache holds it, else as Get Channel describes it,
        in its server with its roles and the bot's member when those could be asked.

        Raises what `Client.fetch_channel` raises (NotFound, Forbidden, InvalidData, any
        HTTPException, RateLimited, network errors) and TimeoutError; a failed look-up of
        the server or member is not raised: the channel then has none (permissions unknown).
        """
        cached = client.get_channel(channel_id)
        if cached is not None:
            return cached
        async with self._lock("channel", channel_id):
            entry = self._fresh(self._channels, channel_id)
            if entry is not None:
                return entry.value
            async with asyncio.timeout(self._timeout):
                channel = await client.fetch_channel(channel_id)
            if not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
                return channel  # a DM: no server, no overwrites
            guild = await self._guild(client, channel.guild.id)
            if guild is None:
                return channel  # asked again next time
            if channel.guild is not guild.value:
                # fetch_channel puts a channel of a server the cache lacks in a placeholder
                # (no roles, no members): move it into the one looked up, where a thread
                # finds it as its parent.
                channel.guild = guild.value
                if isinstance(channel, discord.abc.GuildChannel):
                    guild.value._add_channel(channel)
            # A thread has no overwrites of its own: its parent's apply.
            if (
                isinstance(channel, discord.Thread)
                and channel.parent is None
                and not await self._parent(client, channel.parent_id)
            ):
                return channel
            kept: _Entry[Channel] = _Entry(channel, min(self._clock() + self._ttl, guild.expires))
            self._keep(self._channels, channel_id, kept)
            return channel

    def forget(self, channel_id: int) -> None:
        """Drop what was found about a channel and its server: Discord refused something
        there that says one of them changed."""
        entry = self._channels.pop(channel_id, None)
        guild_id = _guild_id(entry.value) if entry is not None else None
        if guild_id is not None:
            self.forget_guild(guild_id)

    def forget_guild(self, guild_id: int) -> None:
        """Drop a server and every channel found in it."""
        self._guilds.pop(guild_id, None)
        for channel_id, entry in list(self._channels.items()):
            if _guild_id(entry.value) == guild_id:
                del self._channels[channel_id]

    def clear(self) -> None:
        """Forget everything (a new client: these objects were the old one's)."""
        self._channels.clear()
        self._guilds.clear()

    async def _guild(self, client: discord.Client, guild_id: int) -> _Entry[discord.Guild] | None:
        """The server with its roles and the bot's member, from the cache or REST; None
        when Discord cannot tell now (said at debug level: the send goes on without)."""
        cached = client.get_guild(guild_id)
        if cached is not None:
            return _Entry(cached, float("inf"))  # the gateway keeps it up to date
        user = client.user
        if user is None:
            return None
        async with self._lock("guild", guild_id):
            entry = self._fresh(self._guilds, guild_id)
            if entry is not None:
                return entry
            try:
                async with asyncio.timeout(self._timeout):
                    # Its counts are not needed: with_counts=False.
                    guild = await client.fetch_guild(guild_id, with_counts=False)
                    member = await guild.fetch_member(user.id)
            except _GUILD_ERRORS as exc:
                log.debug(
                    "discord: cannot look up server %d and the bot's roles there (%s: %s);"
                    " its channel's permissions are unknown for now",
                    guild_id,
                    type(exc).__name__,
                    exc,
                )
                return None
            # Guild.me is the cached member of the bot's user id: the one just fetched.
            guild._add_member(member)
            entry = _Entry(guild, self._clock() + self._ttl)
            self._keep(self._guilds, guild_id, entry)
            return entry

    async def _parent(self, client: discord.Client, parent_id: int) -> bool:
        """Look up a thread's parent channel (into the same server object); False when
        Discord would not say."""
        try:
            await self.channel(client, parent_id)
        except (discord.ClientException, *_GUILD_ERRORS) as exc:
            log.debug("discord: cannot look up channel %d (%s)", parent_id, exc)
            return False
        return True

    def _lock(self, kind: str, key: int) -> asyncio.Lock:
        lock = self._locks.get((kind, key))
        if lock is None:
            lock = asyncio.Lock()
            self._locks[kind, key] = lock
        return lock

    def _fresh(self, table: OrderedDict[int, _Entry[_T]], key: int) -> _Entry[_T] | None:
        entry = table.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del table[key]
            return None
        return entry

    def _keep(self, table: OrderedDict[int, _Entry[_T]], key: int, entry: _Entry[_T]) -> None:
        table[key] = entry
        table.move_to_end(key)
        while len(table) > self._max:
            table.popitem(last=False)  # the oldest look-up


def _guild_id(channel: Channel) -> int | None:
    guild = getattr(channel, "guild", None)
    return guild.id if isinstance(guild, discord.Guild) else None
