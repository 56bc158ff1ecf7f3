"""What a sink (console, Discord, Telegram) provides to the outbox workers."""

from __future__ import annotations

from typing import Protocol

from bot.events import Event
from bot.store import Delivery


class Sink(Protocol):
    """A place notifications go. `deliver` raises DeliveryError subclasses on failure."""

    name: str

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
        """Send one delivery; returns the platform's message id, if it has one."""
        ...
