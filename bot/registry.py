"""The explicit registries: which source kinds and which chat platforms the bot knows.

A new webhook provider is one module in `bot/sources/` exporting `SPEC` plus one line in
`SOURCES`; the config loader, `init`, the list of event kinds and the sample events all
read their per-kind knowledge from here. A new chat platform is one package in
`bot/sinks/` exporting `SPEC` plus one line in `PLATFORMS` (and its templates); the
config loader, the app and the renderer take it from there. No discovery: what is not
listed does not exist.
Code that looks kinds up takes the registry as a parameter (defaulting to these), so a
test can add a kind to a copy instead of patching this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from bot.events import CORE_KINDS
from bot.render import MessageFormat
from bot.sinks import console, discord, telegram
from bot.sinks.base import PlatformSpec
from bot.sources import fastpix, kick, livepeer, onliverec, twitch, webhook
from bot.sources.spec import SourceSpec

#: `[[sources]] kind` -> what that provider declares; the order is the order `init`
#: offers them in, and the first is its default.
SOURCES: Final[dict[str, SourceSpec]] = {
    "onliverec": onliverec.SPEC,
    "livepeer": livepeer.SPEC,
    "fastpix": fastpix.SPEC,
    "twitch": twitch.SPEC,
    "kick": kick.SPEC,
    "webhook": webhook.SPEC,
}

#: Chat platform name (its `[<name>]` section, its template folder, a delivery's sink)
#: -> what its package declares. The order is the order sinks start and are listed in.
PLATFORMS: Final[dict[str, PlatformSpec]] = {
    "discord": discord.SPEC,
    "telegram": telegram.SPEC,
}


def message_formats(
    platforms: Mapping[str, PlatformSpec] = PLATFORMS,
) -> dict[str, MessageFormat[Any]]:
    """Every sink's message format by name, for the Renderer: the console's and each
    platform's."""
    return {"console": console.FORMAT} | {name: spec.format for name, spec in platforms.items()}


def known_kinds(registry: Mapping[str, SourceSpec] = SOURCES) -> frozenset[str]:
    """Every event kind an event may have: the core kinds and each source's own."""
    return frozenset(CORE_KINDS).union(*(spec.event_types.values() for spec in registry.values()))


#: The event kinds of the registered sources: what a route's `events` may name.
KNOWN_KINDS: Final = known_kinds(SOURCES)
