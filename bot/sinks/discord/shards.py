"""Which of the bot's gateway shards this process runs (`[discord] shard_count`, issue 20).

Discord sends each server's events to one shard, `(guild_id >> 22) % shard_count`, and
requires sharding past 2,500 servers ("Sharding", Discord's gateway documentation). With
several bot processes on one database each shard is run by one of them: a process
claims shard 3 of 8 by holding the role `discord-shard-3-of-8` (Store.hold_role: an
advisory lock in PostgreSQL, which the database lets go of the moment its holder dies),
up to its share, `ceil(count / processes)`.

A process holding fewer than its share takes free shards, lowest first; one holding more
(a process joined) gives the highest extra ones up, for the others to take. A shard
whose process died is free at once; a survivor takes it at its next look, or, when every
survivor is at its share, once the dead process is no longer counted (the lease). With
SQLite there is one process, and it runs every shard.

Sending needs no shard: every process posts to every channel over REST. A process with no
shard to run (there are more processes than shards) sends and is healthy.
"""

from __future__ import annotations

import logging
import math
from typing import Final

from bot.errors import StoreUnavailable
from bot.sinks.base import HoldsRole, ReleasesRole

log = logging.getLogger(__package__)
#: How often a process looks at which shards it should run.
SHARD_CHECK_SECONDS: Final = 5.0


def shard_role(shard: int, count: int) -> str:
    """The role a process holds while it runs `shard` of `count`. The count is part of
    it: processes that disagree on the count must not take one another's shards for
    their own."""
    return f"discord-shard-{shard}-of-{count}"


class ShardClaims:
    """The shards of `count` this process holds, and its looks at which to run."""

    def __init__(self, count: int, *, holds_role: HoldsRole, releases_role: ReleasesRole) -> None:
        if count < 1:
            raise ValueError("a bot has at least one shard")
        self.count = count
        self._holds_role = holds_role
        self._releases_role = releases_role
        #: Every shard whose role this process holds: those to run, and any extra ones
        #: kept only until the session running them is closed (`release_extras`).
        self.held: frozenset[int] = frozenset()
        self.wanted: frozenset[int] = frozenset()

    def share(self, processes: int) -> int:
        """How many shards one of `processes` runs at most."""
        return math.ceil(self.count / max(processes, 1))

    async def review(self, processes: int) -> frozenset[int]:
        """The shards to run now, with `processes` bot processes on the database: those
        still held up to this process's share, lowest first, and free ones up to it.

        Shards beyond the share stay held until `release_extras`, called once nothing
        runs them here any more: another process taking one while this one still runs
        it would mean two sessions answering its commands. When the database cannot be
        asked, none (a role held on a broken connection may be another's already).
        """
        share = self.share(processes)
        try:
            kept = [shard for shard in sorted(self.held) if await self._holds(shard)]
            wanted = set(kept[:share])
            for shard in range(self.count):
                if len(wanted) >= share:
                    break
                if shard not in self.held and await self._holds(shard):
                    kept.append(shard)
                    wanted.add(shard)
        except StoreUnavailable as exc:
            if self.wanted:
                log.warning("discord: cannot tell which shards to run (%s); none for now", exc)
            self.wanted = frozenset()
            return self.wanted
        self.held = frozenset(kept)
        self.wanted = frozenset(wanted)
        return self.wanted

    async def release_extras(self) -> None:
        """Give up the shards held beyond those wanted (nothing here runs them now)."""
        await self._release(self.held - self.wanted)

    async def release_all(self) -> None:
        """At stop, once the sessions are closed: give every shard up, so other processes
        take them at once instead of when this one's database connection closes."""
        await self._release(self.held)

    async def _release(self, shards: frozenset[int]) -> None:
        for shard in sorted(shards):
            try:
                await self._releases_role(shard_role(shard, self.count))
            except StoreUnavailable:
                return  # the connection is gone, and its locks with it
            self.held -= {shard}

    async def _holds(self, shard: int) -> bool:
        return await self._holds_role(shard_role(shard, self.count))


def describe(shards: frozenset[int], count: int) -> str:
    """ "shards 0, 1 of 4" for the log."""
    if not shards:
        return f"none of the {count} shards"
    listed = ", ".join(str(shard) for shard in sorted(shards))
    return f"shard{'s' if len(shards) > 1 else ''} {listed} of {count}"
