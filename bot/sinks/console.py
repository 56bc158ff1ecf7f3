"""The console sink: prints each rendered notification to standard output."""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TextIO

from jinja2 import Environment

from bot import markup
from bot.errors import TemplateProblem
from bot.events import Event
from bot.render import Cutter, Rendered, Renderer
from bot.sinks.base import WebRoute
from bot.store import Delivery
from bot.targets import TargetProblem


@dataclass(frozen=True, slots=True)
class ConsoleMessage:
    """One notification as text for a terminal or a log."""

    text: str


class ConsoleFormat:
    """Plain text: every value sanitized for a terminal, one `text` block."""

    name = "console"
    autoescape = False
    #: The console has no limit of its own; a megabyte of title should still not fill the
    #: terminal (or the journal it goes to), so a notification is cut like a Telegram one.
    text_max = 4096
    blocks = ("text",)
    plain_blocks = ()
    sample_options: Mapping[str, Any] = {}

    def finalize(self, value: object, *, plain: bool) -> object:
        """Every `{{ }}` without terminal escapes or controls."""
        del plain
        return "" if value is None else markup.sanitize_console(str(value))

    def install(self, env: Environment) -> None:
        """The console has no helpers of its own."""
        del env

    def build(self, rendered: Rendered) -> ConsoleMessage:
        """The text, cut to `text_max`."""
        text = rendered.blocks["text"]
        if not text:
            raise TemplateProblem(f"{rendered.name}: block 'text' is empty")
        text = Cutter(self.name, rendered.context.event.kind)(
            markup.truncate_plain, text, self.text_max, "text"
        )
        return ConsoleMessage(text=text)

    def preview(self, message: ConsoleMessage) -> str:
        """The text as printed."""
        return message.text


#: The one instance the sink, the registry and the tests share.
FORMAT: Final = ConsoleFormat()


class ConsoleSink:
    """Prints notifications; the default when no chat platform has a token."""

    name = "console"
    format = FORMAT

    def __init__(self, *, renderer: Renderer, stream: TextIO | None = None) -> None:
        self._renderer = renderer
        self._stream = stream
        self._state = "created"

    #: Printing never hangs for long; at shutdown a print in progress gets this long.
    drain_timeout = 5.0
    keeps_cards = False
    shares_token_limits = False
    #: It serves nothing on the bot's listener.
    web_routes: tuple[WebRoute, ...] = ()

    @property
    def state(self) -> str:
        """created, running or stopped."""
        return self._state

    async def start(self) -> None:
        """Nothing to connect to."""
        self._state = "running"

    def share_limits(self, processes: int, rank: int = 0) -> None:
        """The console has no rate limit."""
        del processes, rank

    def chat_window(self, target: str) -> float | None:
        """None: the console limits no chat."""
        del target
        return None

    def sent_elsewhere(self, target: str, sent: Sequence[float], *, now: float) -> None:
        """Never asked (no `chat_window`)."""
        del target, sent, now

    async def stop(self) -> None:
        """Nothing to disconnect."""
        self._state = "stopped"

    async def deliver(self, delivery: Delivery, event: Event) -> str | None:
        """Render the event for the console and print it as one block."""
        message = self._renderer.render(
            FORMAT,
            event,
            templates=delivery.options.get("templates"),
            locale=delivery.options.get("locale"),
        )
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

    async def preflight(
        self,
        targets: Sequence[str],
        *,
        mention_roles: Mapping[str, Collection[int]] | None = None,
        thread_targets: Collection[str] | None = None,
    ) -> list[TargetProblem] | None:
        """Standard output takes everything."""
        del targets, mention_roles, thread_targets
        return []
