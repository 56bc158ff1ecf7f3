"""Sources that work beside the listener: the seam between such a source and the app.

Most sources only verify and parse what is posted to them. A few keep state with their
provider: Twitch's EventSub subscriptions are made, checked and renewed by the bot
through Twitch's API, and `stream.online` carries so little that the bot asks the API for
the rest. Such a source also implements `RunningSource`: the app runs it with a
`SourceHost`, which lends it the store (to record events it makes itself, exactly as a
webhook's), the /subscribe patterns in force and the problem registry, and tells it when
a chat subscribes or unsubscribes. The app knows no source kind by name: it runs every
source that implements the protocol.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from bot.sources.problems import SourceProblems

if TYPE_CHECKING:
    from bot.events import Event

log = logging.getLogger(__name__)

#: How long a running source gets to finish what it is doing when the bot stops.
STOP_GRACE_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True)
class SourceHost:
    """What the app lends a running source."""

    #: Store an event the source made itself, as a webhook's event is stored (deduped on
    #: its id, then dispatched); True when it was new. Raises StoreUnavailable while the
    #: database refuses writes: the source tries again later.
    emit: Callable[[Event], Awaitable[bool]]
    #: Every /subscribe pattern in force, in any chat (read from the store each time).
    subscription_patterns: Callable[[], Awaitable[list[str]]]
    problems: SourceProblems
    #: A value a source kept between runs: (source name, key) -> value, or None.
    load: Callable[[str, str], Awaitable[str | None]]
    #: Keep a value between runs: (source name, key, value). Raises StoreUnavailable.
    save: Callable[[str, str, str], Awaitable[None]]


@runtime_checkable
class RunningSource(Protocol):
    """A source with work of its own beside the listener."""

    async def run(self, host: SourceHost, stop: asyncio.Event) -> None:
        """Do the source's background work until `stop` is set; never raises for a
        provider's trouble (it reports problems and tries again)."""
        ...

    async def followed(self, pattern: str, *, added: bool) -> str | None:
        """A chat subscribed to `pattern` (`added`) or unsubscribed from it: act on it
        (within a couple of seconds, a chat command waits) and say what to add to the
        reply, or None when the pattern is none of this source's business."""
        ...


class SourceRunner:
    """Runs each source that implements RunningSource, each until the bot stops or a
    reload replaces it (a source whose config is unchanged keeps running)."""

    def __init__(self, host: SourceHost) -> None:
        self._host = host
        self._running: dict[str, tuple[RunningSource, asyncio.Event, asyncio.Task[None]]] = {}
        # Replaced by a reload and told to stop, not finished yet: waited for at stop().
        self._leaving: set[asyncio.Task[None]] = set()

    @property
    def followers(self) -> list[RunningSource]:
        """The running sources, for the commands to tell of /subscribe and /unsubscribe."""
        return [source for source, _stop, _task in self._running.values()]

    def replace(self, sources: Mapping[str, object]) -> None:
        """Run exactly the RunningSources among `sources` (by name); one that is the
        same object as before keeps running, any other running one is stopped."""
        wanted = {
            name: source for name, source in sources.items() if isinstance(source, RunningSource)
        }
        for name, (source, stop, task) in list(self._running.items()):
            if wanted.get(name) is not source:
                stop.set()
                del self._running[name]
                self._leaving.add(task)
                task.add_done_callback(self._leaving.discard)
        for name, source in wanted.items():
            if name in self._running:
                continue
            stop = asyncio.Event()
            task = asyncio.create_task(self._run(name, source, stop), name=f"source-{name}")
            self._running[name] = (source, stop, task)

    async def _run(self, name: str, source: RunningSource, stop: asyncio.Event) -> None:
        try:
            await source.run(self._host, stop)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug: the webhooks are still taken, only the source's own work stops.
            log.exception("source %s: its background work failed", name)

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop every running source and wait for each to finish (cancelled after `grace`
        seconds: a call to a provider that hangs must not hold up the shutdown)."""
        tasks = list(self._leaving)
        for _source, stop, task in self._running.values():
            stop.set()
            tasks.append(task)
        self._running.clear()
        if not tasks:
            return
        _done, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
