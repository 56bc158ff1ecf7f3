"""The console sink: prints each rendered notification to standard output."""

from __future__ import annotations

import sys
from typing import TextIO

from bot.events import Event
from bot.render import Renderer
from bot.store import Delivery


class ConsoleSink:
    """Prints notifications; the default when no chat platform has a token."""

    name = "console"

    def __init__(self, *, renderer: Renderer, stream: TextIO | None = None) -> None:
        self._renderer = renderer
        self._stream = stream
        self._state = "created"

    #: Printing never hangs for long; at shutdown a print in progress gets this long.
    drain_timeout = 5.0
    keeps_cards = False

    @property
    def state(self) -> str:
        """created, running or stopped."""
        return self._state

    async def start(self) -> None:
        """Nothing to connect to."""
        self._state = "running"

    async def stop(self) -> None:
        """Nothing to disconnect."""
        self._state = "stopped"

    async def deliver(self, delivery: Delivery, event: Event) -> str | None:
        """Render the event for the console and print it as one block."""
        del delivery
        message = self._renderer.render_console(event)
        stream = self._stream or sys.stdout
        stream.write(message.text.rstrip("\n") + "\n\n")
        stream.flush()
        return None

    async def edit(self, delivery: Delivery, message_id: str, event: Event) -> None:
        """The console cannot edit what it printed; it prints the change instead."""
        await self.deliver(delivery, event)

    async def delete(self, delivery: Delivery, message_id: str) -> None:
        """The console cannot unprint; there is nothing to take down, so this is done."""
        del delivery, message_id
