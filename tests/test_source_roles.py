"""The sources' own work runs in one bot process on the database (the "sources" role):
the others stand by, keeping current what their webhooks need, and one takes over when
the role comes to it."""

from __future__ import annotations

import asyncio

from bot.errors import StoreUnavailable
from bot.events import Event
from bot.sources.problems import SourceProblems
from bot.sources.service import SOURCES_ROLE, SourceHost, SourceRunner


class Recorder:
    """A source with work of its own that says what it was asked to do."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def run(self, host: SourceHost, stop: asyncio.Event) -> None:
        self.log.append("run")
        await stop.wait()
        self.log.append("run ended")

    async def standby(self, host: SourceHost, stop: asyncio.Event) -> None:
        self.log.append("standby")
        await stop.wait()
        self.log.append("standby ended")

    async def followed(self, pattern: str, *, added: bool) -> str | None:
        return None


async def _emit(event: Event) -> bool:
    return True


async def _patterns() -> list[str]:
    return []


async def _load(source: str, key: str) -> str | None:
    return None


async def _save(source: str, key: str, value: str) -> None:
    return None


HOST = SourceHost(
    emit=_emit,
    subscription_patterns=_patterns,
    problems=SourceProblems(),
    load=_load,
    save=_save,
)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_only_the_role_holder_runs_the_sources_and_the_others_stand_by() -> None:
    held = {"now": False}
    asked: list[str] = []

    async def holds_role(role: str) -> bool:
        asked.append(role)
        if held["now"] is None:
            raise StoreUnavailable("08006: connection lost")
        return bool(held["now"])

    changes: list[int] = []
    runner: SourceRunner
    runner = SourceRunner(
        HOST, holds_role=holds_role, on_change=lambda: changes.append(len(runner.followers))
    )
    source = Recorder()
    await runner.check_role()
    runner.replace({"kick": source, "plain": object()})
    await settle()
    assert source.log == ["standby"] and runner.followers == []

    held["now"] = True  # the process that ran them is gone: this one takes over
    await runner.check_role()
    await settle()
    assert source.log == ["standby", "run", "standby ended"]
    assert runner.followers == [source] and changes == [1]

    held["now"] = None  # the database cannot say: what runs keeps running
    await runner.check_role()
    await settle()
    assert runner.followers == [source] and changes == [1]

    held["now"] = False  # the role went elsewhere (its connection broke)
    await runner.check_role()
    await settle()
    assert source.log[-2:] == ["run ended", "standby"] and changes == [1, 0]
    await runner.stop()
    assert source.log[-1] == "standby ended"
    assert set(asked) == {SOURCES_ROLE}


async def test_without_roles_the_sources_just_run() -> None:
    runner = SourceRunner(HOST)
    source = Recorder()
    await runner.check_role()
    runner.replace({"kick": source})
    await settle()
    assert source.log == ["run"]
    await runner.stop()
