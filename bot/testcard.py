"""Test cards: a realistic notification posted to see that a target works, pinging nobody,
and taken down again a minute later.

`python -m bot test-send` posts one through the sinks directly (bot.__main__); `/test`
queues one in the outbox with its deletion, so a restart in between still deletes it.
The card shows the live_start that opened the most recent session the bot knows (for the
streams routed to the chat, when there are any), else the built-in sample `render` uses.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from bot import events as ev
from bot.errors import DeliveryError
from bot.events import Event, glob_match
from bot.pipeline.cards import DELETE, POST
from bot.samples import sample_event
from bot.sinks.base import Sink
from bot.store import Delivery, Store

log = logging.getLogger(__name__)

#: How long a test card stays up before it is deleted.
TEST_CARD_SECONDS: Final = 60.0
#: The event id prefix of a test card's event, so it never collides with a real one.
TEST_EVENT_PREFIX: Final = "test-card-"


async def latest_live_start(store: Store, patterns: Sequence[str] = ()) -> Event | None:
    """The live_start that opened the latest session of a stream matching one of
    `patterns` (of any stream when there are none), or None when the bot knows none."""
    latest: tuple[datetime, int] | None = None
    for key in await store.known_streamers():
        if patterns and not any(glob_match(key, pattern) for pattern in patterns):
            continue
        state = await store.get_stream(key)
        if state is None or state.marks.session_row is None:
            continue
        when = state.started_at or state.state_at
        if latest is None or when > latest[0]:
            latest = (when, state.marks.session_row)
    if latest is None:
        return None
    try:
        return await store.load_event(latest[1])
    except KeyError:  # pruned meanwhile
        return None


def card_event(real: Event | None, now: datetime) -> Event:
    """A copy of `real` (or the built-in sample) as if it happened `now`, with an id of
    its own, so it can be stored without touching the real one."""
    base = real if real is not None and real.kind == ev.LIVE_START else None
    event = base or sample_event(ev.LIVE_START)
    live = event.live
    if live is not None and live.start_time is not None:
        live = replace(live, start_time=now)
    return event.with_changes(
        event_id=f"{TEST_EVENT_PREFIX}{uuid.uuid4().hex}",
        occurred_at=now,
        received_at=now,
        started_at=now if event.started_at is not None else None,
        ended_at=None,
        live=live,
    )


async def queue_test_card(
    store: Store, sink: str, target: str, event: Event, *, now: float
) -> tuple[int, int]:
    """Store `event` as already dispatched, queue its post to `target` with no pings and
    the post's deletion `TEST_CARD_SECONDS` later; (post id, delete id)."""
    async with store.transaction():
        row = await store.insert_event(event, notified=True, dispatched=True)
        if row is None:
            raise ValueError(f"event {event.event_id} is stored already")
        # No mention_roles: a test card pings nobody.
        post = await store.add_delivery(
            event_row=row, sink=sink, target=target, action=POST, not_before=now, now=now
        )
        delete = await store.add_delivery(
            event_row=row,
            sink=sink,
            target=target,
            action=DELETE,
            options={"card": post},
            not_before=now + TEST_CARD_SECONDS,
            now=now,
        )
    return post, delete


# -- test-send: straight through the sinks, not the outbox ---------------------------------


@dataclass(slots=True)
class Sent:
    """What `test-send` did at one target."""

    sink: str
    target: str
    #: The platform's message id once posted ("" where there is none, the console).
    message_id: str | None = None
    #: Why the post, or later the deletion, failed.
    error: str | None = None
    deleted: bool = False


def _delivery(sink: str, target: str) -> Delivery:
    # A delivery no outbox row backs: no mention_roles, so nobody is pinged. Its time
    # makes Discord's nonce for it unlike any earlier one's.
    now = time.time()
    return Delivery(
        id=0,
        event_row=0,
        sink=sink,
        target=target,
        action=POST,
        options={},
        attempts=0,
        created_at=now,
        not_before=now,
    )


async def post_card(sink: Sink, target: str, event: Event) -> Sent:
    """Post the test card `event` to `target`; a failure is recorded, never raised."""
    sent = Sent(sink.name, target)
    if sink.state != "running":
        sent.error = f"{sink.name} did not connect (it is {sink.state}; the log says why)"
        return sent
    try:
        sent.message_id = await sink.deliver(_delivery(sink.name, target), event) or ""
    except DeliveryError as exc:
        sent.error = str(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.debug("test card to %s %s", sink.name, target, exc_info=True)
        sent.error = f"unexpected {type(exc).__name__}: {exc}"
    return sent


async def delete_card(sink: Sink, sent: Sent) -> None:
    """Delete a posted test card again; a failure is recorded in `sent.error`."""
    if not sent.message_id:
        return
    try:
        await sink.delete(_delivery(sink.name, sent.target), sent.message_id)
    except DeliveryError as exc:
        sent.error = f"posted, but not deleted: {exc}"
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.debug("deleting the test card in %s %s", sink.name, sent.target, exc_info=True)
        sent.error = f"posted, but not deleted: unexpected {type(exc).__name__}: {exc}"
    else:
        sent.deleted = True
