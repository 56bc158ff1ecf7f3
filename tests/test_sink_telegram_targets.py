"""The Telegram sink and its chats: a group that becomes a supergroup, and the preflight,
with the real python-telegram-bot against the fake Bot API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from bot.commands import Chat, Commands
from bot.sinks.telegram.sink import TelegramSink
from bot.store import Mute, Store, Subscription
from bot.targets import PREFLIGHT, SEND, TargetProblems
from tests.fakes.telegram_api import FakeTelegram
from tests.test_sink_telegram import (
    ADMIN,
    GROUP,
    USER,
    live_event,
    make_sink,
    queue,
    rows,
    run_outbox,
    settled,
)
from tests.waiting import every_delivery, holds

OLD_GROUP = -4242
NEW_GROUP = -1004242


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        tg.add_chat(USER, "private", first_name="Alice")
        tg.add_chat(GROUP, "supergroup", title="Streams", admins={ADMIN})
        tg.add_chat(OLD_GROUP, "group", title="Friends", admins={ADMIN}, owner_id=ADMIN)
        yield tg


@pytest.fixture
def problems() -> TargetProblems:
    return TargetProblems()


@pytest.fixture
async def sink(
    fake: FakeTelegram, store: Store, problems: TargetProblems
) -> AsyncIterator[TelegramSink]:
    tg = make_sink(fake, store, problems=problems)
    await tg.start()
    assert tg.state == "running"
    try:
        yield tg
    finally:
        await tg.stop()


def moved_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and str(OLD_GROUP) in r.getMessage()
    ]


# ---- a group that became a supergroup -------------------------------------------------------


async def test_a_card_for_a_group_that_became_a_supergroup_is_posted_there_once(
    fake: FakeTelegram,
    store: Store,
    sink: TelegramSink,
    problems: TargetProblems,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with store.transaction():
        await store.add_mute(Mute("telegram", str(OLD_GROUP), "kick/*", until=None), now=0)
    fake.migrate_chat(OLD_GROUP, NEW_GROUP, service_messages=False)
    await queue(store, (OLD_GROUP,), live_event(cover=None))
    await run_outbox(store, sink)

    assert fake.messages[str(OLD_GROUP)] == []
    [card] = fake.messages[str(NEW_GROUP)]
    assert "Quinn" in card["text"]
    row = (await rows(store))[str(NEW_GROUP)]
    assert (row.state, row.attempts, row.message_id) == ("sent", 1, f"text:{card['message_id']}")
    assert await store.moved_targets() == {("telegram", str(OLD_GROUP)): str(NEW_GROUP)}
    assert [m.pattern for m in await store.mutes_for("telegram", str(NEW_GROUP), 0)] == ["kick/*"]
    [problem] = problems.all()
    assert (problem.target, problem.kind, problem.blocking, problem.origin) == (
        str(NEW_GROUP),
        "moved",
        False,
        SEND,
    )
    assert f"replace it with {NEW_GROUP}" in problem.detail
    assert len(moved_warnings(caplog)) == 1

    # The group's service messages come after: nothing moves twice, nothing is said twice.
    fake.announce_migration(OLD_GROUP)
    # Updates are handled in order: once a later command is answered, they were.
    fake.push_message(USER, "/help")
    await fake.wait_for_message(USER)
    assert len(moved_warnings(caplog)) == 1
    assert len(problems.all()) == 1


async def test_the_service_message_moves_the_chat_before_anything_is_sent(
    fake: FakeTelegram,
    store: Store,
    sink: TelegramSink,
    problems: TargetProblems,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    old, new = str(OLD_GROUP), str(NEW_GROUP)
    async with store.transaction():
        await store.add_subscription(Subscription("telegram", old, "twitch/*"), now=0)
    fake.migrate_chat(OLD_GROUP, NEW_GROUP, by_user_id=ADMIN)

    async def moved() -> bool:
        return bool(await store.moved_targets())

    async with asyncio.timeout(5):
        while not await holds(moved):
            await asyncio.sleep(0.01)
    commands = Commands(store=store, routes=[])
    assert await commands.patterns_for(Chat("telegram", new)) == ["twitch/*"]
    [problem] = problems.all()
    assert (problem.target, problem.kind) == (new, "moved")
    # A delivery queued for the old id before the move is sent to the new one.
    await queue(store, (OLD_GROUP,), live_event(cover=None))
    await run_outbox(store, sink)
    assert len(fake.messages[new]) == 1
    assert len(moved_warnings(caplog)) == 1


async def test_a_refusal_a_rights_change_explains_asks_for_a_recheck(
    fake: FakeTelegram, store: Store, sink: TelegramSink, problems: TargetProblems
) -> None:
    asked: list[tuple[str, str]] = []
    problems.on_recheck = lambda sink_name, target: asked.append((sink_name, target))
    quiet = fake.add_chat(-100321, "supergroup", title="Quiet", bot_status="restricted")
    quiet.bot_rights = {"can_send_messages": False}
    fake.chats[str(GROUP)].bot_status = "kicked"
    await queue(store, (-100321, GROUP, USER), live_event(cover=None))
    await run_outbox(store, sink, done=lambda: settled(store))
    states = {target: row.state for target, row in (await rows(store)).items()}
    assert states == {"-100321": "failed", str(GROUP): "failed", str(USER): "sent"}
    assert sorted(asked) == [("telegram", "-100321"), ("telegram", str(GROUP))]


# ---- preflight -----------------------------------------------------------------------------


async def test_preflight_finds_what_keeps_the_bot_from_posting_in_each_chat(
    fake: FakeTelegram, sink: TelegramSink
) -> None:
    fake.add_chat(-100321, "supergroup", title="Quiet", bot_status="restricted").bot_rights = {
        "can_send_messages": False
    }
    fake.add_chat(-100654, "supergroup", title="No media").permissions = {"can_send_photos": False}
    fake.add_chat(-100987, "channel", title="News").bot_rights = {"can_post_messages": False}
    fake.add_chat(-100988, "channel", title="Posting")
    fake.add_chat(-100111, "supergroup", title="Gone", bot_status="kicked")
    fake.add_chat(-4343, "group", title="Left behind", bot_status="left")
    fake.add_chat(-100222, "supergroup", title="Muzzled")
    fake.chats["-100222"].permissions = {"can_send_messages": False}
    fake.migrate_chat(OLD_GROUP, NEW_GROUP, service_messages=False)
    fake.chats[str(NEW_GROUP)].media_restricted = True
    targets = [
        str(USER),
        str(GROUP),
        f"{GROUP}/7",
        "-100321",
        "-100654",
        "-100987",
        "-100988",
        "-100111",
        "-4343",
        "-100222",
        "-100404",
        str(OLD_GROUP),
    ]
    found = await sink.preflight(targets)
    assert found is not None
    assert [(p.target, p.kind, p.blocking) for p in found] == [
        ("-100321", "cannot_send", True),
        ("-100654", "no_photos", False),
        ("-100987", "not_admin", True),
        ("-100111", "not_member", True),
        ("-4343", "not_member", True),
        ("-100222", "cannot_send", True),
        ("-100404", "not_found", True),
        (str(NEW_GROUP), "moved", False),
        (str(NEW_GROUP), "no_photos", False),
    ]
    assert all(p.origin == PREFLIGHT for p in found)
    details = {(p.target, p.kind): p.detail for p in found}
    assert "unban it" in details[("-100111", "not_member")]
    assert "'Post messages'" in details[("-100987", "not_admin")]
    assert f"replace it with {NEW_GROUP}" in details[(str(NEW_GROUP), "moved")]
    assert "<" not in "".join(details.values()).replace("<botname>", "")


async def test_preflight_of_a_sink_that_is_not_connected_checks_nothing(
    fake: FakeTelegram, store: Store
) -> None:
    tg = make_sink(fake, store)
    assert await tg.preflight([str(GROUP)]) is None
    calls = len(fake.calls)
    await tg.start()
    try:
        fake.fail_next("getChat", error_code=502)
        assert await tg.preflight([str(GROUP)]) is None, "Telegram could not be asked"
        assert await tg.preflight([str(GROUP)]) == []
    finally:
        await tg.stop()
    assert await tg.preflight([str(GROUP)]) is None
    assert [c.method for c in fake.calls[calls:] if c.method.startswith("getChat")] == [
        "getChat",
        "getChat",
        "getChatMember",
    ]


async def test_a_card_posted_before_the_upgrade_is_posted_anew_in_the_supergroup(
    fake: FakeTelegram, store: Store, sink: TelegramSink
) -> None:
    start = live_event(cover=None)
    await queue(store, (OLD_GROUP,), start)
    await run_outbox(store, sink)
    [old_card] = fake.messages[str(OLD_GROUP)]
    fake.migrate_chat(OLD_GROUP, NEW_GROUP, service_messages=False)

    # The title changes: the edit meets the upgrade, follows it, and finds no card there
    # (the group's history is not the supergroup's), so a new card is posted there.
    change = live_event("title_change", event_id="e2", title="Finals", cover=None, minutes=5)
    await queue(store, (OLD_GROUP,), change)
    await run_outbox(store, sink)
    [card] = fake.messages[str(NEW_GROUP)]
    assert "Finals" in card["text"]
    assert fake.messages[str(OLD_GROUP)] == [old_card]
    by_target = await rows(store)
    assert set(by_target) == {str(NEW_GROUP)}
    assert {row.state for row in await every_delivery(store)} == {"sent"}
    edits = [(c.params["chat_id"], c.description) for c in fake.calls_to("editMessageText")]
    assert edits == [
        (OLD_GROUP, "Bad Request: group chat was upgraded to a supergroup chat"),
        (NEW_GROUP, "Bad Request: message to edit not found"),
    ]
