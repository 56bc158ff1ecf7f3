"""Session cards, every rule in one place: what each chat gets when a session changes,
ends or resumes.

A live session has one card per chat: the message posted for its `live_start`. Later
events of the session edit that card (`edit`), post a notice of their own (`post`), or
delete it at the end (`delete`), as `[behaviour]` and per-route overrides say. An end
waits out `end_grace` in the outbox; a comeback within `rejoin_window` calls it off, or
turns the cards back to live where the end was shown; a new session announces a held
end first. `change_cooldown` limits change notices (cards still follow every change).
This module decides the rows; the dispatch stage writes them and outbox.py carries
them out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Final, NamedTuple

from bot import events as ev
from bot.config import BehaviourConfig, Target
from bot.events import Event
from bot.store import SessionMarks, Store, StreamState

if TYPE_CHECKING:
    from bot.pipeline.routing import Plan
    from bot.pipeline.streams import Candidate

log = logging.getLogger(__name__)

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
    if kind == ev.REPLAY_READY:
        # The ended card gains its replay link; a card left as it was (on_end "post")
        # or taken down ("delete") is not brought back for it.
        return [EDIT] if has_card and policy.on_end in (EDIT, "both") else []
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
    if event.kind == ev.REPLAY_READY:
        return event.with_changes(kind=ev.LIVE_END)  # the ended card, with its replay
    return event.with_changes(kind=ev.LIVE_START, old_live=None)


class Row(NamedTuple):
    """One outbox row to write."""

    target: Target
    action: str
    options: dict[str, object]
    not_before: float
    #: The event the row belongs to, when not the candidate's own: a late card is the
    #: session's (so later changes edit it), drawn from the change that brought it.
    event_row: int | None = None


@dataclass(slots=True)
class StreamContext:
    """One stream while one event is dispatched: its state after the event, and its
    session marks as they stand (updated here as the rows are planned; the dispatcher
    saves them with the state), so the stream is read and written once per event."""

    key: str | None
    state: StreamState | None
    marks: SessionMarks


class SessionCards:
    """Plans the outbox rows of one candidate event by the session-card rules."""

    def __init__(
        self, *, store: Store, card_sinks: frozenset[str], change_cooldown: timedelta
    ) -> None:
        self._store = store
        self._card_sinks = card_sinks
        self._cooldown = change_cooldown

    def change_posts_allowed(self, stream: StreamContext, now: float) -> bool:
        """False while a change notice for this stream was posted less than a cooldown ago."""
        last = stream.marks.change_posted_at
        return last is None or now - last >= self._cooldown.total_seconds()

    async def rows(
        self,
        item: Candidate,
        row: int,
        targets: dict[Target, Plan],
        stream: StreamContext,
        now: float,
        *,
        change_posts: bool,
    ) -> list[Row]:
        """The rows for one candidate (stored as event `row`); the session marks it
        changes are changed in `stream.marks`."""
        event = item.event
        key = stream.key
        if key is not None and event.kind == ev.LIVE_START and not item.resumed:
            await self._close_last_session(stream, now)
            stream.marks = replace(stream.marks, session_row=row)
        if key is not None and event.kind == ev.LIVE_END:
            stream.marks = replace(stream.marks, end_row=row)
        if item.resumed:
            return await self._resume_rows(stream, targets, now)
        return await self._card_rows(event, row, targets, stream, now, change_posts=change_posts)

    async def _card_rows(
        self,
        event: Event,
        row: int,
        targets: dict[Target, Plan],
        stream: StreamContext,
        now: float,
        *,
        change_posts: bool,
    ) -> list[Row]:
        """Posts, card edits and deletes for an event, per each target's card policy."""
        key = stream.key
        cards = await self._session_cards(event, stream)
        ended = stream.state.ended_at if stream.state is not None else None
        rows: list[Row] = []
        for target, plan in targets.items():
            due = now
            options = plan.options
            if event.kind == ev.LIVE_END and plan.policy.end_grace:
                # The end waits out the grace period in the outbox, where a restart
                # cannot lose it and a comeback can still call it off.
                due = now + plan.policy.end_grace.total_seconds()
                options = {**options, "due": due}
            elif event.kind == ev.REPLAY_READY and plan.policy.end_grace and ended is not None:
                # Not before the end it adds to is announced (and the outbox calls it
                # off if the stream is live again by then).
                due = max(now, ended.timestamp() + plan.policy.end_grace.total_seconds())
            if target.sink not in self._card_sinks:
                if not plan.filtered:
                    rows.append(Row(target, POST, options, due))
                continue
            card = cards.get((target.sink, target.target))
            if card is None and (
                late := self._late_card(
                    event, row, target=target, plan=plan, stream=stream, now=now
                )
            ):
                rows.append(late)
                continue
            for action in card_actions(event.kind, plan.policy, has_card=card is not None):
                if action == POST and (
                    plan.muted
                    or (plan.filtered and not (event.kind == ev.LIVE_END and card is not None))
                    or (event.kind in CHANGE_KINDS and not change_posts)
                ):
                    continue
                # A notice of a session with a thread goes into the thread, which the
                # card's message names (the outbox looks it up).
                posts_in_thread = action == POST and card is not None and plan.thread
                extra = {} if action == POST and not posts_in_thread else {"card": card}
                rows.append(Row(target, action, {**options, **extra}, due))
        if event.kind in CHANGE_KINDS and key is not None:
            if any(
                r.target.sink in self._card_sinks and r.action == POST and r.event_row is None
                for r in rows
            ):
                stream.marks = replace(stream.marks, change_posted_at=now)
            elif not change_posts:
                log.info("%s for %s: no change notice posted (change_cooldown)", event.kind, key)
        return rows

    def _late_card(
        self,
        event: Event,
        row: int,
        *,
        target: Target,
        plan: Plan,
        stream: StreamContext,
        now: float,
    ) -> Row | None:
        """A card for a chat that sees this session for the first time because a change
        brought the stream into a route's filters: the session's card (later changes edit
        it), drawn from this change (`view`), pinging what a live_start here would."""
        session = stream.marks.session_row
        if (
            event.kind not in CHANGE_KINDS
            or not plan.late_card
            or plan.filtered
            or plan.muted
            or session is None
            or stream.state is None
            or not stream.state.live
        ):
            return None
        options: dict[str, object] = {
            k: v
            for k, v in plan.options.items()
            if k not in ("mention_roles", "mention_everyone", "crosspost", "silent")
        }
        options["view"] = row
        if plan.roles:
            options["mention_roles"] = list(plan.roles)
        if plan.everyone:
            options["mention_everyone"] = True
        if plan.crosspost:
            options["crosspost"] = True
        if plan.silent:
            options["silent"] = True
        log.info(
            "%s for %s brings it into a route's filters: a card for %s %s",
            event.kind,
            stream.key,
            target.sink,
            target.target,
        )
        return Row(target, POST, options, now, event_row=session)

    async def _session_cards(
        self, event: Event, stream: StreamContext
    ) -> dict[tuple[str, str], int]:
        """The cards of the session this event belongs to: (sink, target) -> delivery id.

        Only changes while live and the end touch cards. A title set while offline
        belongs to no session: the last session's card stays as it ended.
        """
        ended = (ev.LIVE_END, ev.REPLAY_READY)
        if stream.key is None or event.kind not in (*CHANGE_KINDS, *ended):
            return {}
        if event.kind not in ended and (stream.state is None or not stream.state.live):
            return {}
        session = stream.marks.session_row
        return await self._store.cards(session) if session is not None else {}

    async def _close_last_session(self, stream: StreamContext, now: float) -> None:
        """A new session begins: the last one's end, if still held back, goes out first.

        That happens when end_grace is longer than rejoin_window: the comeback is a new
        session, so the old end is announced now, ahead of the new card, not after it.
        """
        end = stream.marks.end_row
        if end is not None and await self._store.release_held(end, now=now):
            log.info(
                "%s: a new session began during the last one's end_grace; announcing that end now",
                stream.key,
            )

    async def _resume_rows(
        self, stream: StreamContext, targets: dict[Target, Plan], now: float
    ) -> list[Row]:
        """A comeback within rejoin_window: call off the end where it is still waiting,
        and turn the cards back to live where the end was already shown. Nobody is pinged.
        """
        store = self._store
        end = stream.marks.end_row
        if end is None:
            return []
        cancelled = await store.cancel_pending(
            end, reason="cancelled: the stream came back within end_grace", now=now
        )
        if cancelled:
            log.info(
                "%s came back before its end was announced: %d end notices called off",
                stream.key,
                cancelled,
            )
        shown = await store.reached_targets(end)
        session = stream.marks.session_row
        cards = await store.cards(session) if session is not None else {}
        rows: list[Row] = []
        for target, plan in targets.items():
            if (target.sink, target.target) not in shown:
                continue  # the chat never saw the end: its card still says live
            options = {
                k: v
                for k, v in plan.options.items()
                if k not in ("mention_roles", "mention_everyone", "crosspost")
            }
            card = cards.get((target.sink, target.target))
            if card is not None:
                rows.append(Row(target, EDIT, {**options, "card": card}, now))
            elif not plan.muted and not plan.filtered:
                rows.append(Row(target, POST, options, now))
        return rows
