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
from datetime import UTC, datetime
from typing import Final

from bot import events as ev
from bot.config import BehaviourConfig, Route, Target
from bot.events import Event, LiveInfo, glob_match
from bot.pipeline.cards import CardPolicy
from bot.quiet import is_quiet
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
    # Stored with each delivery row: the roles a live_start pings, @everyone, silence.
    options: dict[str, object] = field(default_factory=dict)
    # A /mute holds back every new message here; a card already posted is still kept
    # current (edited to ended, say), which notifies nobody and never leaves it stale.
    muted: bool = False
    # Every route reaching this chat filters the stream out (its categories or title):
    # no new message, as for a mute; a card already posted still follows the stream.
    filtered: bool = False
    # A route that filters wants the stream now: the first message this chat sees of
    # the session is a card (with the pings), even when a change brought it.
    late_card: bool = False
    # What a card here pings, live_start or not (a late card needs them).
    roles: list[int] = field(default_factory=list)
    everyone: bool = False
    # Publish the card to the channels following an announcement channel.
    crosspost: bool = False
    # A thread per session: the card opens it, the session's notices go in it.
    thread: bool = False
    # The route's own template folder, for every message to this chat.
    templates: str | None = None
    # The route's language, for every message to this chat ([behaviour]'s when None).
    locale: str | None = None
    # Silent sends: every route reaching the chat is silent or in its quiet hours.
    silent: bool = True


#: The kinds route filters decide on: a start, and changes that may bring a stream into
#: (or out of) a route's categories or titles. Ends follow the cards; errors always go.
FILTERED_KINDS: Final = frozenset(
    {ev.LIVE_START, ev.TITLE_CHANGE, ev.CATEGORY_CHANGE, ev.LIVE_END}
)


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
        self,
        *,
        routes: Sequence[Route],
        sinks: Iterable[str],
        default_policy: CardPolicy,
        behaviour: BehaviourConfig | None = None,
    ) -> None:
        self._routes = tuple(routes)
        self._sinks = frozenset(sinks)
        self._default = default_policy
        self._behaviour = behaviour or BehaviourConfig()

    def plan(
        self,
        event: Event,
        subscriptions: Sequence[Subscription],
        moves: Moves | None = None,
        *,
        info: LiveInfo | None = None,
        at: datetime | None = None,
    ) -> dict[Target, Plan]:
        """Every target of a running sink this event should go to, with its plan; a
        chat that moved is reached at its new id.

        `info` is the stream as it is after the event (what route filters look at; the
        event's own details when not given), `at` the time quiet hours are read at (now
        when not given)."""
        key = event.streamer_key
        info = info if info is not None else event.live
        at = at or datetime.now(UTC)
        filtering = event.kind in FILTERED_KINDS
        wanted: dict[Target, Plan] = {}
        for route in self._routes:
            if not route.matches(key, event.kind):
                continue
            passes = not filtering or route.wants(info)
            policy = route_policy(route, self._default)
            quiet = route.quiet(at, self._behaviour)
            for target in (CONSOLE, *route.targets):
                plan = self._add(wanted, moved(target, moves or {}), policy)
                if plan is None or not passes:
                    continue
                if plan.filtered:
                    # The first route that wants the stream here decides the policy.
                    plan.policy = policy
                plan.filtered = False
                plan.late_card = plan.late_card or route.filters
                plan.silent = plan.silent and (route.silent or quiet)
                plan.crosspost = plan.crosspost or route.crosspost
                plan.thread = plan.thread or route.thread == "per_stream"
                if plan.templates is None and route.templates is not None:
                    plan.templates = str(route.templates)
                if plan.locale is None and route.locale is not None:
                    plan.locale = route.locale
                if not quiet and target is not CONSOLE:
                    plan.roles.extend(r for r in route.mention_roles if r not in plan.roles)
                    plan.everyone = plan.everyone or route.mention_everyone
        if event.kind in ev.NOTIFIED_KINDS:
            quiet = bool(self._behaviour.quiet_hours) and is_quiet(
                self._behaviour.quiet_hours, self._behaviour.timezone, at
            )
            for sub in subscriptions:
                if glob_match(key or "", sub.pattern):
                    target = Target(sub.sink, sub.target)
                    plan = self._add(wanted, moved(target, moves or {}), self._default)
                    if plan is not None:
                        # /subscribe is unfiltered: the chat asked for every stream.
                        plan.filtered = False
                        plan.silent = plan.silent and quiet
        for plan in wanted.values():
            _set_options(plan, event.kind)
        return wanted

    def _add(self, wanted: dict[Target, Plan], target: Target, policy: CardPolicy) -> Plan | None:
        if target.sink not in self._sinks:
            return None
        # Filtered out until some route reaching the chat wants the stream.
        return wanted.setdefault(target, Plan(policy, filtered=True))


def _set_options(plan: Plan, kind: str) -> None:
    """The delivery options a plan's rows carry: the pings of a live_start, silence."""
    if plan.filtered:
        plan.silent = True  # what still goes out (a card's edit) notifies nobody anyway
    if kind == ev.LIVE_START:
        if plan.roles:
            plan.options["mention_roles"] = list(plan.roles)
        if plan.everyone:
            plan.options["mention_everyone"] = True
        if plan.crosspost:
            plan.options["crosspost"] = True
    if plan.silent:
        plan.options["silent"] = True
    if plan.thread:
        plan.options["thread"] = "per_stream"
    if plan.templates is not None:
        plan.options["templates"] = plan.templates
    if plan.locale is not None:
        plan.options["locale"] = plan.locale


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
