"""Routing: which chats an event goes to, from `[[routes]]` and run-time /subscribe.

Each target gets a Plan: the card policy of the first route that reaches it and the
options stored with its delivery rows (the roles a live_start pings). Muting is not
decided here: muting.py marks the plans afterwards, so a muted chat's card is still
kept current.

A chat that was given a new id (a Telegram group upgraded to a supergroup) is followed
once, by `follow_move`, whichever part of the bot learns of it first; from then on a
route naming the old id reaches the new one (`Router.plan`'s `moves`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bot import events as ev
from bot.config import Route, Target
from bot.events import Event, glob_match
from bot.pipeline.cards import CardPolicy
from bot.store import Store, Subscription

log = logging.getLogger(__name__)

#: (sink, old chat id) -> new chat id, as `Store.moved_targets` reads them.
Moves = Mapping[tuple[str, str], str]

#: The console sink's one target: it prints, it has no chats.
CONSOLE = Target("console", "")


@dataclass(slots=True)
class Plan:
    """What one target does with one event: its card policy and the delivery's options."""

    policy: CardPolicy
    # Stored with each delivery row: the roles a live_start pings.
    options: dict[str, object] = field(default_factory=dict)
    # A /mute holds back every new message here; a card already posted is still kept
    # current (edited to ended, say), which notifies nobody and never leaves it stale.
    muted: bool = False


def route_policy(route: Route, default: CardPolicy) -> CardPolicy:
    """The card policy for a route's chats: its overrides over `default`."""
    return CardPolicy(
        on_change=route.on_change or default.on_change,
        on_end=route.on_end or default.on_end,
        end_grace=default.end_grace if route.end_grace is None else route.end_grace,
    )


class Router:
    """Plans each event's targets from the configured routes and the subscriptions."""

    def __init__(
        self, *, routes: Sequence[Route], sinks: Iterable[str], default_policy: CardPolicy
    ) -> None:
        self._routes = tuple(routes)
        self._sinks = frozenset(sinks)
        self._default = default_policy

    def plan(
        self, event: Event, subscriptions: Sequence[Subscription], moves: Moves | None = None
    ) -> dict[Target, Plan]:
        """Every target of a running sink this event should go to, with its plan; a
        chat that moved is reached at its new id."""
        key = event.streamer_key
        wanted: dict[Target, Plan] = {}
        for route in self._routes:
            if not route.matches(key, event.kind):
                continue
            policy = route_policy(route, self._default)
            self._add(wanted, CONSOLE, policy)
            for target in route.targets:
                plan = self._add(wanted, moved(target, moves or {}), policy)
                if plan is not None and event.kind == ev.LIVE_START and route.mention_roles:
                    roles = plan.options.setdefault("mention_roles", [])
                    assert isinstance(roles, list)
                    roles.extend(r for r in route.mention_roles if r not in roles)
        if event.kind in ev.NOTIFIED_KINDS:
            for sub in subscriptions:
                if glob_match(key or "", sub.pattern):
                    target = Target(sub.sink, sub.target)
                    self._add(wanted, moved(target, moves or {}), self._default)
        return wanted

    def _add(self, wanted: dict[Target, Plan], target: Target, policy: CardPolicy) -> Plan | None:
        if target.sink not in self._sinks:
            return None
        # The first route that reaches a chat decides its policy.
        return wanted.setdefault(target, Plan(policy))


def moved(target: Target, moves: Moves) -> Target:
    """Where `target` is now: its chat's new id if the chat moved (a forum topic
    "old/7" follows its chat to "new/7"), else `target` itself."""
    chat, slash, thread = target.target.partition("/")
    new = moves.get((target.sink, chat))
    return target if new is None else Target(target.sink, new + slash + thread)


def moved_route_targets(routes: Sequence[Route], moves: Moves) -> list[tuple[Target, Target]]:
    """(as configured, where it is now) for each route target whose chat moved."""
    found: dict[Target, Target] = {}
    for route in routes:
        for target in route.targets:
            now = moved(target, moves)
            if now != target:
                found.setdefault(target, now)
    return list(found.items())


async def follow_move(store: Store, sink: str, old: str, new: str, *, now: float) -> bool:
    """A chat of `sink` now has the id `new`: move what the bot keeps for `old` there and
    remember it, once (True when this call did it, False when it was done already)."""
    async with store.transaction():
        done = await store.move_target(sink, old, new, now=now)
    if done:
        log.info(
            "%s chat %s moved to %s: its subscriptions, mutes and deliveries follow it,"
            " and routes naming %s reach it there",
            sink,
            old,
            new,
            old,
        )
    return done
