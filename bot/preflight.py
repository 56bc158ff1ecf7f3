"""The preflight: every configured target checked with its platform's read calls.

Once a sink is running (at start, and again each time it connects anew, say Telegram
after an outage) every target the config routes to it and every chat /subscribe added
there is checked with `Sink.preflight`, and the results replace that sink's earlier
preflight results in the shared TargetProblems. A send that hits a permission-related
error asks for its target to be checked again (`TargetProblems.request_recheck`), at
most once a minute per target; SIGHUP checks everything again. Nothing here can take the
bot down: a sink that raises is logged and its targets count as unchecked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from bot.config import Route
from bot.sinks.base import Sink
from bot.store import Subscription
from bot.targets import PREFLIGHT, TargetProblem, TargetProblems

log = logging.getLogger(__name__)

#: A target is checked again at most this often, however many sends ask for it.
RECHECK_INTERVAL_SECONDS: Final = 60.0
#: How often the runner looks whether a sink (re)connected.
POLL_SECONDS: Final = 1.0
#: The console's one target (it prints; it has no chats): bot.pipeline.routing.CONSOLE.
CONSOLE_TARGET: Final = ""


def configured_targets(
    sinks: Iterable[str], routes: Sequence[Route], subscriptions: Sequence[Subscription] = ()
) -> dict[str, list[str]]:
    """Each sink's targets: the routes' in bot.toml order, then the subscribed chats."""
    targets: dict[str, list[str]] = {}
    for sink in sinks:
        if sink == "console":
            # Every route prints to the console when it is on.
            found = [CONSOLE_TARGET] if routes else []
        else:
            found = [t for route in routes for t in route.targets_on(sink)]
            found += [s.target for s in subscriptions if s.sink == sink]
        targets[sink] = list(dict.fromkeys(found))
    return targets


def mention_roles_of(routes: Sequence[Route], sink: str) -> dict[str, set[int]]:
    """The roles the routes ping at each of `sink`'s targets (on live_start)."""
    roles: dict[str, set[int]] = {}
    for route in routes:
        if route.mention_roles:
            for target in route.targets_on(sink):
                roles.setdefault(target, set()).update(route.mention_roles)
    return roles


def thread_targets_of(routes: Sequence[Route], sink: str) -> set[str]:
    """`sink`'s targets of routes that open a thread per stream session."""
    return {
        target
        for route in routes
        if route.thread == "per_stream"
        for target in route.targets_on(sink)
    }


async def check_sink(
    sink: Sink, targets: Sequence[str], routes: Sequence[Route] = ()
) -> list[TargetProblem] | None:
    """`sink.preflight(targets)` with the routes' mention roles, or None (not checked)
    when it raises: logged, never raised."""
    try:
        return await sink.preflight(
            targets,
            mention_roles=mention_roles_of(routes, sink.name),
            thread_targets=thread_targets_of(routes, sink.name),
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("preflight of %s failed; its targets count as unchecked", sink.name)
        return None


@dataclass(slots=True)
class SinkCheck:
    """What is known about one sink's preflight, for /healthz."""

    #: Wall-clock time of the last complete check that got an answer; None: never.
    checked_at: float | None = None
    #: Targets whose last check got no answer (the sink could not check, or raised).
    unchecked: set[str] = field(default_factory=set)

    def as_json(self) -> dict[str, Any]:
        """`checked` (an ISO time, or false) and, when there are any, `unchecked`."""
        report: dict[str, Any] = {
            "checked": _iso(self.checked_at) if self.checked_at is not None else False
        }
        if self.unchecked:
            report["unchecked"] = sorted(self.unchecked)
        return report


class Preflight:
    """Runs the sinks' preflights when they connect, on request and on reload."""

    def __init__(
        self,
        *,
        sinks: Mapping[str, Sink],
        problems: TargetProblems,
        routes: Sequence[Route],
        subscriptions: Callable[[], Awaitable[Sequence[Subscription]]] | None = None,
        recheck_interval: float = RECHECK_INTERVAL_SECONDS,
        poll_interval: float = POLL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._sinks = sinks
        self._problems = problems
        self._routes = tuple(routes)
        # An async callable giving the store's subscriptions (None: config routes only).
        self._subscriptions = subscriptions
        self._recheck_interval = recheck_interval
        self._poll_interval = poll_interval
        self._clock = clock
        self._wall_clock = wall_clock
        self.checks: dict[str, SinkCheck] = {name: SinkCheck() for name in sinks}
        # Sinks to check whole at the next look (they connected, or the config changed).
        self._full: set[str] = set()
        # Targets asked for again, by when they may be checked (the debounce).
        self._due: dict[tuple[str, str], float] = {}
        self._last_checked: dict[tuple[str, str], float] = {}
        self._was_running: dict[str, bool] = dict.fromkeys(sinks, False)
        self._wake = asyncio.Event()

    # -- requests ------------------------------------------------------------------

    def reconfigure(self, *, routes: Sequence[Route]) -> None:
        """Check every target of these routes (SIGHUP), now or once its sink runs."""
        self._routes = tuple(routes)
        self._full.update(self._sinks)
        self._wake.set()

    def request(self, sink: str, target: str) -> None:
        """Check `target` again soon (TargetProblems.on_recheck): at most once a minute."""
        if sink not in self._sinks:
            return
        key = (sink, target)
        last = self._last_checked.get(key)
        due = self._clock() if last is None else max(self._clock(), last + self._recheck_interval)
        self._due[key] = min(self._due.get(key, due), due)
        self._wake.set()

    # -- the task --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Check each sink when it is running and re-check on request, until `stop`."""
        self._problems.on_recheck = self.request
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Never the bot's end: the next look tries again.
                    log.exception("preflight: unexpected error; trying again later")
                self._wake.clear()
                waits = [
                    asyncio.ensure_future(self._wake.wait()),
                    asyncio.ensure_future(stop.wait()),
                ]
                try:
                    await asyncio.wait(
                        waits, timeout=self._next_wait(), return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for wait in waits:
                        wait.cancel()
        finally:
            if self._problems.on_recheck == self.request:
                self._problems.on_recheck = None

    async def step(self) -> None:
        """One look: whole checks of sinks that (re)connected or need one, then rechecks."""
        for name, sink in self._sinks.items():
            running = sink.state == "running"
            if running and not self._was_running[name]:
                self._full.add(name)
            self._was_running[name] = running
        ready = [name for name in self._full if self._was_running[name]]
        if ready:
            targets = await self._targets()
            for name in sorted(ready):
                self._full.discard(name)
                await self._check(name, targets.get(name, []), whole=True)
        now = self._clock()
        for key in sorted(k for k, due in self._due.items() if due <= now):
            name, target = key
            if not self._was_running.get(name):
                continue  # waits for the sink; the whole check on connecting covers it
            del self._due[key]
            await self._check(name, [target], whole=False)

    async def _targets(self) -> dict[str, list[str]]:
        subscriptions: Sequence[Subscription] = ()
        if self._subscriptions is not None:
            try:
                subscriptions = await self._subscriptions()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A sick database: check the configured targets at least.
                log.warning("preflight: cannot read the subscriptions (%s)", exc)
        return configured_targets(self._sinks, self._routes, subscriptions)

    async def _check(self, name: str, targets: list[str], *, whole: bool) -> None:
        sink = self._sinks[name]
        state = self.checks[name]
        now = self._clock()
        for target in targets:
            self._last_checked[(name, target)] = now
            self._due.pop((name, target), None)
        found = await check_sink(sink, targets, self._routes) if targets else []
        if found is None:
            state.unchecked.update(targets)
            if whole:
                log.info("preflight: %s cannot check its targets now", name)
            return
        state.unchecked.difference_update(targets)
        checked: set[str] = set(targets)
        if whole:
            state.checked_at = self._wall_clock()
            # Targets no longer configured lose their old preflight results too.
            checked.update(
                p.target for p in self._problems.all() if p.sink == name and p.origin == PREFLIGHT
            )
            blocking = sum(p.blocking for p in found)
            log.info(
                "preflight: %s: %d target(s) checked, %d problem(s)%s",
                name,
                len(targets),
                len(found),
                f" ({blocking} blocking)" if blocking else "",
            )
        self._problems.replace(name, checked, found)

    def _next_wait(self) -> float:
        if not self._due:
            return self._poll_interval
        soonest = min(self._due.values()) - self._clock()
        return min(max(soonest, 0.0), self._poll_interval)

    # -- reading -----------------------------------------------------------------------

    def as_json(self) -> dict[str, dict[str, Any]]:
        """/healthz `targets`: per sink `checked` (a time, or false) and its `problems`."""
        problems = self._problems.as_json()
        return {
            name: {**check.as_json(), "problems": problems.get(name, {})}
            for name, check in sorted(self.checks.items())
        }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


# -- check --online ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """One line of `check --online`: a target and what its check found."""

    sink: str
    target: str
    #: OK, a problem's kind, "not checked" or "not connected".
    status: str
    detail: str
    #: Whether this line makes the check fail (a blocking problem, no answer).
    failing: bool


async def check_targets(
    sinks: Mapping[str, Sink],
    targets: Mapping[str, Sequence[str]],
    routes: Sequence[Route] = (),
) -> list[TargetStatus]:
    """Run each sink's preflight over its `targets` once, as `check --online` shows it.

    A sink that is not running, or cannot check (its preflight answers None), fails
    each of its targets: the check could not be done.
    """
    rows: list[TargetStatus] = []
    for name, sink in sinks.items():
        wanted = list(targets.get(name, ()))
        shown = [_shown(name, t) for t in wanted] or ["-"]
        if sink.state != "running":
            detail = f"{name} did not connect (it is {sink.state}; the log above says why)"
            rows += [TargetStatus(name, t, "not connected", detail, True) for t in shown]
            continue
        found = await check_sink(sink, wanted, routes) if wanted else []
        if found is None:
            detail = f"{name} connected, but could not check its targets now (see the log)"
            rows += [TargetStatus(name, t, "not checked", detail, True) for t in shown]
            continue
        if not wanted:
            rows.append(TargetStatus(name, "-", "OK", "connected; no targets routed here", False))
        by_target: dict[str, list[TargetProblem]] = {}
        for problem in found:
            by_target.setdefault(problem.target, []).append(problem)
        # Problems of a configured target first, in bot.toml order; then any others the
        # sink found (a forum topic of a configured chat, say).
        for target in [*wanted, *(t for t in by_target if t not in wanted)]:
            problems = by_target.get(target, [])
            if not problems:
                rows.append(TargetStatus(name, _shown(name, target), "OK", "", False))
            rows += [
                TargetStatus(name, _shown(name, target), p.kind, p.detail, p.blocking)
                for p in problems
            ]
    return rows


def _shown(sink: str, target: str) -> str:
    return "stdout" if sink == "console" and target == CONSOLE_TARGET else target
