"""Gateway IDENTIFYs in turn across the bot's processes (issue 20).

Discord limits how fast a bot token starts gateway sessions, whichever process or machine
they come from: "Clients are limited by maximum concurrency when Identifying; if they
exceed this limit, the gateway will respond with an Opcode 9 Invalid Session"
(developers/events/gateway.mdx, "Identifying"). `max_concurrency` is "the number of
identify requests allowed per 5 seconds", one per bucket, `rate_limit_key = shard_id %
max_concurrency` ("Max Concurrency"). discord.py paces only its own client's shards (a
5 s sleep before every IDENTIFY but the first), so processes starting together, or a
survivor taking a dead process's shards while another reconnects, would IDENTIFY at once:
each refusal costs a reconnect, and one of the 1000 session starts a day.

So before each IDENTIFY the shard takes its bucket's turn in the database the processes
share (`Store.take_turn`, on the database's clock): when the bucket's last IDENTIFY was
5.5 s ago or more, at once; else it waits until then and asks again. Nothing is booked
ahead, so a process killed or resharded while waiting leaves no turn behind that the
others would wait out. A restarted process waits out its previous run's turn too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from bot.errors import StoreUnavailable
from bot.sinks.base import TakesTurn

log = logging.getLogger(__package__)

#: Discord's window per bucket ("identify requests allowed per 5 seconds"), and half a
#: second more: a turn is booked before the IDENTIFY is sent, and one process's IDENTIFY
#: may take longer to reach Discord than the next process's.
IDENTIFY_SPACING: Final = 5.5
#: How long asking for a turn may take before the database counts as unavailable.
BOOKING_TIMEOUT: Final = 10.0
#: The longest a shard waits for its turns (others keep taking them first) before it
#: identifies anyway: an Invalid Session then costs a reconnect, not a shard never run.
MAX_WAIT: Final = 120.0


def turn_name(bucket: int) -> str:
    """The turn (Store.take_turn) of one IDENTIFY bucket."""
    return f"discord-identify-{bucket}"


class IdentifyTurns:
    """discord.py's ``before_identify_hook``, waiting for the shard's turn to IDENTIFY
    among every process on the database."""

    def __init__(
        self,
        takes_turn: TakesTurn,
        *,
        spacing: float = IDENTIFY_SPACING,
        timeout: float = BOOKING_TIMEOUT,
    ) -> None:
        self._takes_turn = takes_turn
        self._spacing = spacing
        self._timeout = timeout
        #: GET /gateway/bot's session_start_limit.max_concurrency when the sink asked
        #: (shard_count = "auto"); else 1, one bucket, which is never too fast.
        self.max_concurrency = 1

    def __repr__(self) -> str:
        return f"<IdentifyTurns every {self._spacing:g}s, {self.max_concurrency} bucket(s)>"

    async def __call__(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Wait until this shard may IDENTIFY. `initial` (discord.py's first IDENTIFY of
        the client, which it does not delay) changes nothing: another process may just
        have identified."""
        del initial
        bucket = (shard_id or 0) % max(self.max_concurrency, 1)
        deadline = asyncio.get_running_loop().time() + MAX_WAIT
        waited = 0.0
        while (wait := await self._ask(bucket, shard_id)) > 0:
            if asyncio.get_running_loop().time() + wait > deadline:
                log.warning(
                    "discord: shard %s waited %.0fs for its turn to identify; identifying",
                    _shown(shard_id),
                    waited,
                )
                return
            if not waited:
                log.info(
                    "discord: shard %s waits for its turn to identify (another of the bot's"
                    " processes identified less than %gs ago)",
                    _shown(shard_id),
                    self._spacing,
                )
            await asyncio.sleep(wait)
            waited += wait

    async def _ask(self, bucket: int, shard_id: int | None) -> float:
        """The seconds until the bucket's turn, 0 once taken. When the database cannot
        be asked, 0 after waiting the spacing: this process keeps to it on its own, as
        discord.py would."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._takes_turn(turn_name(bucket), self._spacing)
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning(
                "discord: cannot take shard %s's turn to identify (%s); waiting %gs",
                _shown(shard_id),
                exc or type(exc).__name__,
                self._spacing,
            )
            await asyncio.sleep(self._spacing)
            return 0.0


def _shown(shard_id: int | None) -> str:
    return "-" if shard_id is None else str(shard_id)
