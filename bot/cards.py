"""Session-card policy: what each chat gets when a live session changes, ends or resumes.

A live session has one card per chat: the message posted for its `live_start`. Later
events of the session edit that card (`edit`), post a notice of their own (`post`), or
delete it at the end (`delete`), as `[behaviour]` and per-route overrides say. This
module decides the actions; dispatch.py looks up the cards and writes the outbox rows,
and outbox.py carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from bot import events as ev
from bot.config import BehaviourConfig
from bot.events import Event
from bot.registry import PLATFORMS

#: Sinks whose posted messages can be edited and deleted later: every chat platform
#: that says so in bot.registry.PLATFORMS; the console cannot.
CARD_SINKS: Final = frozenset(name for name, spec in PLATFORMS.items() if spec.edits_cards)
CHANGE_KINDS: Final = frozenset({ev.TITLE_CHANGE, ev.CATEGORY_CHANGE})

POST: Final = "post"
EDIT: Final = "edit"
DELETE: Final = "delete"


@dataclass(frozen=True, slots=True)
class CardPolicy:
    """How one chat's cards react to changes and ends (from [behaviour] or its route)."""

    on_change: str = "edit"
    on_end: str = "edit"
    end_grace: timedelta = timedelta(0)

    @classmethod
    def from_behaviour(cls, behaviour: BehaviourConfig) -> CardPolicy:
        """The policy `[behaviour]` sets for every chat without a route override."""
        return cls(behaviour.on_change, behaviour.on_end, behaviour.end_grace)


def card_actions(kind: str, policy: CardPolicy, *, has_card: bool) -> list[str]:
    """The actions, in order, that an event of `kind` takes in a chat that keeps cards.

    Without a card to edit (the session began before this chat was routed, or its post
    failed) an edit becomes a post, so nothing is silently dropped; a delete becomes
    nothing, since there is nothing to take down.
    """
    if kind in CHANGE_KINDS:
        mode = policy.on_change
    elif kind == ev.LIVE_END:
        mode = policy.on_end
    else:
        return [POST]
    if mode == DELETE:
        return [DELETE] if has_card else []
    actions = []
    if mode in (EDIT, "both") and has_card:
        actions.append(EDIT)
    if mode in (POST, "both") or not has_card:
        actions.append(POST)
    return actions


def card_view(event: Event) -> Event:
    """The event as the session card shows it: live with the latest details, or ended.

    Cards are drawn with the `live_start` template while the stream is live and the
    `live_end` template once it ended, whatever event caused the edit; the change
    templates are for the separate notices `on_change = "post"` sends.
    """
    if event.kind == ev.LIVE_END:
        return event
    return event.with_changes(kind=ev.LIVE_START, old_live=None)
