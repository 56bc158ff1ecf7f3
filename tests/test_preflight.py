"""The preflight runner: when targets are checked, how often, what /healthz then says, and
that a sink's failure to check never stops the bot."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest

from bot.app import Health
from bot.config import Route, Target
from bot.events import NOTIFIED_KINDS, Event
from bot.preflight import Preflight, check_targets
from bot.store import Delivery, Store, Subscription
from bot.targets import SEND, TargetProblem, TargetProblems


class CheckingSink:
    """A sink at the Sink protocol's seam whose preflight answers what a test says."""

    drain_timeout = 1.0
    keeps_cards = True
    shares_token_limits = False

    def __init__(self, name: str = "chat", state: str = "running") -> None:
        self.name = name
        self.state = state
        #: target -> the problems its check finds; targets not named are fine.
        self.answers: dict[str, list[TargetProblem]] = {}
        #: None answers "cannot check now"; an exception is raised.
        self.fails: BaseException | None = None
        self.cannot_check = False
        self.calls: list[list[str]] = []
        self.roles: list[dict[str, set[int]]] = []

    async def start(self) -> None:
        self.state = "running"

    async def stop(self) -> None:
        self.state = "stopped"

    async def deliver(self, delivery: Delivery, event: Event) -> str | None:
        raise AssertionError("a preflight never posts")

    async def edit(self, delivery: Delivery, message_id: str, event: Event) -> None:
        raise AssertionError("a preflight never edits")

    async def delete(self, delivery: Delivery, message_id: str) -> None:
        raise AssertionError("a preflight never deletes")

    async def preflight(
        self,
        targets: Sequence[str],
        *,
        mention_roles: Mapping[str, Collection[int]] | None = None,
        thread_targets: Collection[str] | None = None,
    ) -> list[TargetProblem] | None:
        del thread_targets
        self.calls.append(list(targets))
        self.roles.append({t: set(r) for t, r in (mention_roles or {}).items()})
        if self.fails is not None:
            raise self.fails
        if self.cannot_check:
            return None
        return [p for t in targets for p in self.answers.get(t, [])]


def route(*targets: str, sink: str = "chat") -> Route:
    return Route(
        patterns=("twitch/*",),
        events=frozenset(NOTIFIED_KINDS),
        targets=tuple(Target(sink, t) for t in targets),
    )


def problem(target: str, kind: str = "missing_permissions", **kw: Any) -> TargetProblem:
    detail = kw.pop("detail", f"The bot may not post in {target}.")
    return TargetProblem("chat", target, kind, detail, **kw)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def runner(
    sink: CheckingSink, problems: TargetProblems, routes: Sequence[Route], **kw: Any
) -> Preflight:
    return Preflight(sinks={sink.name: sink}, problems=problems, routes=routes, **kw)


async def test_targets_are_checked_once_the_sink_runs_and_again_when_it_reconnects() -> None:
    sink = CheckingSink(state="starting")
    sink.answers["B"] = [problem("B")]
    problems = TargetProblems()

    async def subscriptions() -> list[Subscription]:
        return [Subscription("chat", "C", "twitch/*"), Subscription("other", "X", "*")]

    preflight = runner(sink, problems, [route("A", "B"), route("B")], subscriptions=subscriptions)
    await preflight.step()
    assert sink.calls == []  # not connected yet: nothing to ask
    assert preflight.as_json() == {"chat": {"checked": False, "problems": {}}}

    sink.state = "running"
    await preflight.step()
    await preflight.step()
    # Each target once, config order first, then the chats /subscribe added.
    assert sink.calls == [["A", "B", "C"]]
    assert [p.target for p in problems.all()] == ["B"]
    report = preflight.as_json()["chat"]
    assert isinstance(report["checked"], str)  # an ISO time
    assert report["problems"] == {
        "B": [
            {
                "kind": "missing_permissions",
                "detail": "The bot may not post in B.",
                "blocking": True,
            }
        ]
    }

    # Telegram reconnecting after an outage: everything is looked at again, and what
    # was fixed meanwhile is forgotten.
    sink.state = "failed"
    await preflight.step()
    sink.answers.clear()
    sink.state = "running"
    await preflight.step()
    assert sink.calls == [["A", "B", "C"], ["A", "B", "C"]]
    assert problems.all() == []


async def test_the_routes_mention_roles_go_with_each_check() -> None:
    # Discord checks that a role a route pings can be pinged at each of its channels.
    sink = CheckingSink()
    routes = [
        replace(route("A", "B"), mention_roles=(7,)),
        replace(route("B"), mention_roles=(8,)),
        route("C"),
    ]
    preflight = runner(sink, TargetProblems(), routes)
    await preflight.step()
    assert sink.calls == [["A", "B", "C"]]
    assert sink.roles == [{"A": {7}, "B": {7, 8}}]
    rows = await check_targets({"chat": sink}, {"chat": ["B"]}, routes)
    assert [r.status for r in rows] == ["OK"]
    assert sink.roles[-1] == {"A": {7}, "B": {7, 8}}


async def test_a_recheck_is_at_most_once_a_minute_per_target() -> None:
    sink = CheckingSink()
    clock = Clock()
    problems = TargetProblems()
    preflight = runner(sink, problems, [route("A", "B")], clock=clock)
    await preflight.step()
    assert sink.calls == [["A", "B"]]

    # A send to A was refused: A is checked again, but not sooner than a minute after
    # its last check, and many requests meanwhile make one check.
    clock.now += 10
    preflight.request("chat", "A")
    preflight.request("chat", "A")
    await preflight.step()
    assert sink.calls == [["A", "B"]]
    clock.now += 50
    await preflight.step()
    assert sink.calls == [["A", "B"], ["A"]]
    clock.now += 1
    preflight.request("chat", "A")
    sink.answers["A"] = [problem("A")]
    clock.now += 58
    await preflight.step()
    assert sink.calls == [["A", "B"], ["A"]]
    clock.now += 1
    await preflight.step()
    assert sink.calls == [["A", "B"], ["A"], ["A"]]
    assert [p.target for p in problems.all()] == ["A"]
    # A target of a sink it does not know is no business of the preflight.
    preflight.request("nowhere", "Z")
    await preflight.step()
    assert len(sink.calls) == 3


async def test_a_send_asks_for_a_recheck_through_the_shared_problems() -> None:
    sink = CheckingSink()
    clock = Clock()
    problems = TargetProblems()
    preflight = runner(sink, problems, [route("A")], clock=clock, poll_interval=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(preflight.run(stop))
    try:
        async with asyncio.timeout(5):
            while not sink.calls:
                await asyncio.sleep(0.01)
        clock.now += 61
        sink.answers["A"] = [problem("A", "not_found", detail="Channel A is gone.")]
        problems.request_recheck("chat", "A")  # what a sink does on a 403
        async with asyncio.timeout(5):
            while not problems.all():
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert sink.calls == [["A"], ["A"]]
    assert [p.kind for p in problems.all()] == ["not_found"]
    # Stopped: no preflight listens any more.
    assert problems.on_recheck is None


async def test_a_sink_that_raises_is_logged_and_its_targets_count_as_unchecked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = CheckingSink()
    sink.fails = RuntimeError("the platform library broke")
    problems = TargetProblems()
    preflight = runner(sink, problems, [route("A", "B")])
    await preflight.step()  # does not raise
    assert "preflight of chat failed" in caplog.text
    assert preflight.as_json() == {
        "chat": {"checked": False, "unchecked": ["A", "B"], "problems": {}}
    }
    # "Cannot check now" is the same for /healthz, without the alarm in the log.
    sink.fails, sink.cannot_check = None, True
    caplog.clear()
    preflight.reconfigure(routes=[route("A", "B")])
    await preflight.step()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert preflight.as_json()["chat"]["unchecked"] == ["A", "B"]
    sink.cannot_check = False
    preflight.reconfigure(routes=[route("A", "B")])
    await preflight.step()
    assert "unchecked" not in preflight.as_json()["chat"]


async def test_a_reload_checks_the_new_routes_and_forgets_removed_targets() -> None:
    sink = CheckingSink()
    sink.answers = {"A": [problem("A")], "B": [problem("B")]}
    problems = TargetProblems()
    # What a send found stays until the sink says it is resolved.
    problems.report(problem("A", "no_embed_links", blocking=False, origin=SEND))
    preflight = runner(sink, problems, [route("A", "B")])
    await preflight.step()
    assert [(p.target, p.kind) for p in problems.all()] == [
        ("A", "missing_permissions"),
        ("A", "no_embed_links"),
        ("B", "missing_permissions"),
    ]
    preflight.reconfigure(routes=[route("B", "N")])  # SIGHUP: A left bot.toml, N came
    await preflight.step()
    assert sink.calls[-1] == ["B", "N"]
    assert [(p.target, p.kind) for p in problems.all()] == [
        ("A", "no_embed_links"),
        ("B", "missing_permissions"),
    ]


async def test_healthz_lists_target_problems_and_stays_ok(store: Store) -> None:
    sink = CheckingSink()
    sink.answers["A"] = [problem("A")]
    problems = TargetProblems()
    preflight = runner(sink, problems, [route("A")])
    health = Health(store=store, sinks={"chat": sink}, stuck_after=300, preflight=preflight)
    await preflight.step()
    report = await health.report()
    # A missing permission is not something a restart would fix: still 200.
    assert report["ok"] is True
    assert report["targets"]["chat"]["problems"] == {
        "A": [
            {
                "kind": "missing_permissions",
                "detail": "The bot may not post in A.",
                "blocking": True,
            }
        ]
    }


async def test_check_online_rows_for_each_outcome() -> None:
    ok, broken, offline, unable, idle = (
        CheckingSink("ok"),
        CheckingSink("broken"),
        CheckingSink("offline", state="failed"),
        CheckingSink("unable"),
        CheckingSink("idle"),
    )
    broken.answers["B"] = [
        TargetProblem("broken", "B", "not_found", "No such channel."),
        TargetProblem("broken", "B/7", "topic_closed", "Topic 7 is closed.", blocking=False),
    ]
    unable.cannot_check = True
    sinks = {s.name: s for s in (ok, broken, offline, unable, idle)}
    targets = {"ok": ["A"], "broken": ["B"], "offline": ["C"], "unable": ["D"]}
    rows = await check_targets(sinks, targets)
    assert [(r.sink, r.target, r.status, r.failing) for r in rows] == [
        ("ok", "A", "OK", False),
        ("broken", "B", "not_found", True),
        ("broken", "B/7", "topic_closed", False),
        ("offline", "C", "not connected", True),
        ("unable", "D", "not checked", True),  # the check could not be done: a failure
        ("idle", "-", "OK", False),  # connected, nothing routed there: nothing to ask
    ]
    assert offline.calls == [] and idle.calls == []
