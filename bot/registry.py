"""The explicit registries: which source kinds (and, next, chat platforms) the bot knows.

A new webhook provider is one module in `bot/sources/` exporting `SPEC` plus one line in
`SOURCES`; the config loader, `init`, the list of event kinds and the sample events all
read their per-kind knowledge from here. No discovery: what is not listed does not exist.
Code that looks kinds up takes the registry as a parameter (defaulting to these), so a
test can add a kind to a copy instead of patching this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from bot.events import CORE_KINDS
from bot.sources import fastpix, livepeer, onliverec
from bot.sources.spec import SourceSpec

#: `[[sources]] kind` -> what that provider declares; the order is the order `init`
#: offers them in, and the first is its default.
SOURCES: Final[dict[str, SourceSpec]] = {
    "onliverec": onliverec.SPEC,
    "livepeer": livepeer.SPEC,
    "fastpix": fastpix.SPEC,
}

# PLATFORMS (chat platforms: Discord, Telegram) joins SOURCES here.


def known_kinds(registry: Mapping[str, SourceSpec] = SOURCES) -> frozenset[str]:
    """Every event kind an event may have: the core kinds and each source's own."""
    return frozenset(CORE_KINDS).union(*(spec.event_types.values() for spec in registry.values()))


#: The event kinds of the registered sources: what a route's `events` may name.
KNOWN_KINDS: Final = known_kinds(SOURCES)
