"""Muting, consulted twice: when an event's rows are planned, and again when one is sent.

A mute (`/mute`) holds back every new message to its chat: at planning, muted chats get
no post; at sending, a post queued before the mute (an end notice waiting out its
`end_grace`, a backlog after an outage) is called off. Edits and deletes of a card
already posted still go out: they notify nobody and keep the card from going stale.
A sink without cards (the console) gets nothing at all while muted. Mutes suppress
delivery, not recording (Alertmanager's MuteStage is the model).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from bot.config import Target
from bot.events import glob_match
from bot.pipeline.cards import POST
from bot.pipeline.routing import Plan
from bot.store import Mute

log = logging.getLogger(__name__)


def chat_of(target: str) -> str:
    """The chat a target belongs to: mutes are per chat, and a forum topic
    ("-100123/42") follows its chat's mutes."""
    return target.partition("/")[0]


def is_muted(mutes: Iterable[Mute], streamer_key: str | None) -> bool:
    """Whether any of these mutes (of one chat) covers this stream."""
    return any(glob_match(streamer_key or "", mute.pattern) for mute in mutes)


def mutes_by_chat(mutes: Iterable[Mute]) -> dict[tuple[str, str], list[Mute]]:
    """Mutes grouped by (sink, chat)."""
    grouped: dict[tuple[str, str], list[Mute]] = {}
    for mute in mutes:
        grouped.setdefault((mute.sink, mute.target), []).append(mute)
    return grouped


def apply_mutes(
    plans: dict[Target, Plan],
    mutes: Mapping[tuple[str, str], Sequence[Mute]],
    *,
    streamer_key: str | None,
    kind: str,
    card_sinks: frozenset[str],
) -> None:
    """Mark muted chats' plans (cards kept current), drop muted targets without cards."""
    for target in list(plans):
        if not is_muted(mutes.get((target.sink, chat_of(target.target)), ()), streamer_key):
            continue
        log.info("%s for %s muted in %s %s", kind, streamer_key, target.sink, target.target)
        if target.sink in card_sinks:
            plans[target].muted = True
        else:
            del plans[target]


def held_back(action: str, *, has_cards: bool) -> bool:
    """Whether a mute holds back a delivery with this action when it is about to go out."""
    return action == POST or not has_cards
