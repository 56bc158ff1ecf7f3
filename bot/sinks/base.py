"""What a sink (console, Discord, Telegram) provides to the outbox workers."""

from __future__ import annotations

from typing import Protocol

from bot.events import Event
from bot.store import Delivery


class Sink(Protocol):
    """A place notifications go. `deliver` raises DeliveryError subclasses on failure."""

    name: str
    #: Seconds a send in flight at shutdown is waited for before it is cut off.
    drain_timeout: float
    #: Whether its messages can be edited and deleted later: session cards, and a mute
    #: that holds back new messages only (the card is still kept current).
    keeps_cards: bool

    @property
    def state(self) -> str:
        """A short word for /healthz: starting, running, stopped, failed..."""
        ...

    async def start(self) -> None:
        """Connect; return once the sink can deliver (or has failed visibly)."""
        ...

    async def stop(self) -> None:
        """Disconnect and release resources (idempotent)."""
        ...

    async def deliver(self, delivery: Delivery, event: Event) -> str | None:
        """Post a new message for `event`; returns the platform's message id, if any."""
        ...

    async def edit(self, delivery: Delivery, message_id: str, event: Event) -> None:
        """Re-render the live card for `event` and edit message `message_id` in place.

        Raises MessageGone when that message no longer exists, so the caller can post
        a new one instead.
        """
        ...

    async def delete(self, delivery: Delivery, message_id: str) -> None:
        """Delete the bot's message `message_id` (from `deliver`) in `delivery.target`.

        A message that is already gone counts as deleted. PermanentDeliveryError (never
        MessageGone) when the platform refuses for good, so the caller can edit the card
        instead; TransientDeliveryError when a retry may help.
        """
        ...
