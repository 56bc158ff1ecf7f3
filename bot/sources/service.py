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
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from bot.errors import StoreUnavailable
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

    async def standby(self, host: SourceHost, stop: asyncio.Event) -> None:
        """In a process that takes the source's webhooks while another one runs its work
        (several processes on one database): keep current what the webhooks need from
        that work (Kick: the public key the other process keeps) until `stop` is set."""
        ...


#: The role of the process that runs the sources' own work (Store.hold_role): with several
#: bot processes on one database, Twitch's subscriptions and Kick's keeper run in one.
SOURCES_ROLE: Final = "sources"
#: How often a process asks whether it should run them (or still should).
ROLE_CHECK_SECONDS: Final = 5.0


class SourceRunner:
    """Runs each source that implements RunningSource, each until the bot stops or a
    reload replaces it (a source whose config is unchanged keeps running).

    With `holds_role` (several processes may share the database), only the process that
    holds SOURCES_ROLE runs them; another takes over within ROLE_CHECK_SECONDS of its
    end (`follow_role`). Every process still takes the sources' webhooks."""

    def __init__(
        self,
        host: SourceHost,
        *,
        holds_role: Callable[[str], Awaitable[bool]] | None = None,
        on_change: Callable[[], None] | None = None,
        role_check_interval: float = ROLE_CHECK_SECONDS,
    ) -> None:
        self._host = host
        self._running: dict[str, tuple[RunningSource, asyncio.Event, asyncio.Task[None]]] = {}
        # Replaced by a reload and told to stop, not finished yet: waited for at stop().
        self._leaving: set[asyncio.Task[None]] = set()
        self._wanted: dict[str, RunningSource] = {}
        # Their standby, while another process runs them (RunningSource.standby).
        self._standing_by: dict[str, tuple[RunningSource, asyncio.Event, asyncio.Task[None]]] = {}
        self._holds_role = holds_role
        self._leading = holds_role is None
        # Told when the running sources change (the commands' followers).
        self._on_change = on_change
        self._role_check_interval = role_check_interval

    @property
    def followers(self) -> list[RunningSource]:
        """The running sources, for the commands to tell of /subscribe and /unsubscribe."""
        return [source for source, _stop, _task in self._running.values()]

    def replace(self, sources: Mapping[str, object]) -> None:
        """Run exactly the RunningSources among `sources` (by name); one that is the
        same object as before keeps running, any other running one is stopped."""
        self._wanted = {
            name: source for name, source in sources.items() if isinstance(source, RunningSource)
        }
        self._apply()

    async def check_role(self) -> None:
        """Ask once whether this process runs the sources, and start or stop them."""
        if self._holds_role is None:
            return
        try:
            leading = await self._holds_role(SOURCES_ROLE)
        except StoreUnavailable as exc:
            # Unknown for now: whatever runs keeps running (a source's work is safe to do
            # twice for a moment: subscriptions are reconciled, events deduplicated).
            log.debug("sources: cannot tell whether to run them (%s)", exc)
            return
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            log.info("sources: this process runs the sources' own work now")
        else:
            log.info("sources: another bot process runs the sources' own work")
        self._apply()
        if self._on_change is not None:
            self._on_change()

    async def follow_role(self, stop: asyncio.Event) -> None:
        """Keep asking (`check_role`) until the bot stops."""
        while not stop.is_set():
            await self.check_role()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._role_check_interval)

    def _apply(self) -> None:
        wanted = self._wanted if self._leading else {}
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
        standing_by = {} if self._leading else self._wanted
        for name, (source, stop, task) in list(self._standing_by.items()):
            if standing_by.get(name) is not source:
                stop.set()
                del self._standing_by[name]
                self._leaving.add(task)
                task.add_done_callback(self._leaving.discard)
        for name, source in standing_by.items():
            if name in self._standing_by:
                continue
            stop = asyncio.Event()
            task = asyncio.create_task(
                self._run(name, source, stop, standby=True), name=f"source-{name}-standby"
            )
            self._standing_by[name] = (source, stop, task)

    async def _run(
        self, name: str, source: RunningSource, stop: asyncio.Event, *, standby: bool = False
    ) -> None:
        try:
            if standby:
                await source.standby(self._host, stop)
            else:
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
        for _source, stop, task in (*self._running.values(), *self._standing_by.values()):
            stop.set()
            tasks.append(task)
        self._running.clear()
        self._standing_by.clear()
        if not tasks:
            return
        _done, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
