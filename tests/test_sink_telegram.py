"""The Telegram sink, with the real python-telegram-bot talking to the fake Bot API."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from bot.chat.commands import CATALOGUE
from bot.commands import Commands
from bot.config import Route
from bot.errors import MessageGone, PermanentDeliveryError, TransientDeliveryError
from bot.events import NOTIFIED_KINDS, Event, LiveInfo, utcnow
from bot.outbox import OutboxWorker
from bot.pipeline.dispatch import Dispatcher
from bot.registry import message_formats
from bot.render import Renderer
from bot.sinks.telegram.config import TelegramConfig, chat_id_of
from bot.sinks.telegram.sink import TelegramSink, parse_message_id
from bot.store import Delivery, DeliveryInfo, Store
from tests.fakes.telegram_api import FakeTelegram
from tests.routes import chats as route_targets
from tests.waiting import Condition, every_delivery, holds

USER = 1001  # a private chat with this user
ADMIN = 2002
MEMBER = 3003
GROUP = -100777
OTHER = -100555
FORUM = -100888
MISSING = -100404  # a chat the bot was never added to
COVER = "https://cdn.example.com/quinn-1280x720.jpg"
STREAM_URL = "https://www.twitch.tv/quinn"
SECRET_PART = "TEST-token-for-the-fake"
FORMATS = message_formats()


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        assert tg.token.endswith(SECRET_PART)
        tg.add_chat(USER, "private", first_name="Alice")
        tg.add_chat(GROUP, "supergroup", title="Streams", admins={ADMIN})
        tg.add_chat(OTHER, "group", title="Friends")
        tg.add_chat(FORUM, "supergroup", title="Forum", is_forum=True, admins={ADMIN}, topics=[7])
        yield tg


def route(*chats: int) -> Route:
    return Route(
        patterns=("*",),
        events=frozenset(NOTIFIED_KINDS),
        targets=route_targets(telegram=tuple(str(c) for c in chats)),
    )


def make_sink(
    fake: FakeTelegram,
    store: Store,
    *,
    token: str | None = None,
    config: TelegramConfig | None = None,
    **knobs: Any,
) -> TelegramSink:
    return TelegramSink(
        config=config
        or TelegramConfig(token=token or fake.token, api_url=fake.api_url, disabled_reason=None),
        renderer=Renderer(formats=FORMATS),
        commands=Commands(store=store, routes=[route(GROUP, OTHER)]),
        poll_timeout=1.0,
        **knobs,
    )


@pytest.fixture
async def sink(fake: FakeTelegram, store: Store) -> AsyncIterator[TelegramSink]:
    tg = make_sink(fake, store)
    await tg.start()
    assert tg.state == "running"
    try:
        yield tg
    finally:
        await tg.stop()
    assert tg.state == "stopped"


def live_event(
    kind: str = "live_start",
    *,
    event_id: str = "e1",
    title: str = "Ranked grind",
    cover: str | None = COVER,
    name: str = "Quinn",
    minutes: float = 0,
) -> Event:
    at = utcnow() - timedelta(minutes=30) + timedelta(minutes=minutes)
    return Event(
        source="rec",
        event_id=event_id,
        kind=kind,
        occurred_at=at,
        received_at=at,
        platform="twitch",
        channel="quinn",
        display_name=name,
        url=STREAM_URL,
        live=LiveInfo(title=title, categories=("Art",), cover=cover, live_id="s1"),
    )


async def queue(store: Store, chats: tuple[int, ...], *events: Event) -> None:
    dispatcher = Dispatcher(store=store, routes=[route(*chats)], sinks=["telegram"])
    for event in events:
        assert not (await dispatcher.accept(event)).duplicate


async def settled(store: Store) -> bool:
    return set((await store.outbox_counts()).by_state) <= {"sent", "failed"}


async def run_outbox(
    store: Store, sink: TelegramSink, done: Condition | None = None, timeout: float = 5
) -> None:
    """Run the real outbox worker for the sink until `done` (default: nothing pending)."""
    check = done or (lambda: settled(store))
    worker = OutboxWorker(store=store, sink=sink)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not await holds(check):
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task


async def rows(store: Store) -> dict[str, DeliveryInfo]:
    """Delivery rows by target (one delivery per chat in these tests)."""
    return {row.target: row for row in await every_delivery(store)}


def a_delivery(target: int, **options: Any) -> Delivery:
    return Delivery(
        id=1,
        event_row=1,
        sink="telegram",
        target=str(target),
        action="post",
        options=options,
        attempts=0,
        created_at=time.time(),
        not_before=0.0,
    )


def button(message: dict[str, Any]) -> Any:
    return message["reply_markup"]["inline_keyboard"]


WATCH = [[{"text": "▶️ Watch on Twitch", "url": STREAM_URL}]]


# ---- notifications ------------------------------------------------------------------------


async def test_live_start_is_a_photo_with_escaped_caption_and_button_in_each_chat(
    fake: FakeTelegram, store: Store, sink: TelegramSink
) -> None:
    hostile = "<b>x</b> & <script> </a> 🎮"
    await queue(store, (GROUP, OTHER), live_event(title=hostile, name="@everyone"))
    await run_outbox(store, sink)

    for chat in (GROUP, OTHER):
        [message] = fake.messages[str(chat)]
        assert message["photo"], "sent with sendPhoto"
        caption = message["caption"]
        # A word joiner after the "@" keeps Telegram from making the name a mention.
        assert "@\u2060everyone is live!" in caption
        assert hostile in caption, "the title arrives as literal text"
        # Entities measure UTF-16 units: the bold name, and the title linked to the stream.
        kinds = [(e["type"], e["length"]) for e in message["caption_entities"]]
        assert kinds == [("bold", len("@\u2060everyone")), ("text_link", len(hostile) + 1)]
        assert button(message) == WATCH
        assert (await rows(store))[str(chat)].message_id == f"photo:{message['message_id']}"
    calls = fake.calls_to("sendPhoto")
    # One event: the same fresh cover URL in every chat (render.fresh_cover).
    [photo] = {c.params["photo"] for c in calls}
    assert len(calls) == 2 and re.fullmatch(re.escape(COVER) + r"\?v=[0-9a-f]{8}", photo)
    assert all(c.params["parse_mode"] == "HTML" for c in calls)
    assert "&lt;b&gt;x&lt;/b&gt; &amp; &lt;script&gt;" in calls[0].params["caption"]
    assert not fake.calls_to("sendMessage")


@pytest.mark.parametrize(
    ("cover", "title"),
    [(None, "No cover today"), (COVER, "A very long title " * 60)],
    ids=["no-cover", "caption-too-long"],
)
async def test_without_a_cover_or_with_a_long_caption_it_is_a_text_message(
    fake: FakeTelegram, store: Store, sink: TelegramSink, cover: str | None, title: str
) -> None:
    await queue(store, (GROUP,), live_event(title=title, cover=cover))
    await run_outbox(store, sink)

    assert not fake.calls_to("sendPhoto")
    [call] = fake.calls_to("sendMessage")
    assert call.params["parse_mode"] == "HTML"
    assert call.params["link_preview_options"] == {"is_disabled": True}
    [message] = fake.messages[str(GROUP)]
    assert title.strip() in message["text"]
    assert button(message) == WATCH
    assert (await rows(store))[str(GROUP)].message_id == f"text:{message['message_id']}"


async def test_a_cover_telegram_cannot_fetch_falls_back_to_text(
    fake: FakeTelegram, store: Store, sink: TelegramSink, caplog: pytest.LogCaptureFixture
) -> None:
    fake.unreachable_photos.add(COVER)
    await queue(store, (GROUP,), live_event())
    await run_outbox(store, sink)

    [photo_call] = fake.calls_to("sendPhoto")
    assert photo_call.status == 400
    [message] = fake.messages[str(GROUP)]
    assert "photo" not in message
    assert "Ranked grind" in message["text"]
    assert button(message) == WATCH
    assert (await rows(store))[str(GROUP)].state == "sent"
    assert any("could not use the cover" in r.getMessage() for r in caplog.records)


async def test_a_route_may_name_a_forum_topic(fake: FakeTelegram, sink: TelegramSink) -> None:
    topic = dataclasses.replace(a_delivery(FORUM), target=f"{FORUM}/7")
    message_id = await sink.deliver(topic, live_event())
    [message] = fake.messages[str(FORUM)]
    assert message_id == f"photo:{message['message_id']}"
    assert message["message_thread_id"] == 7


# ---- editing the card ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cover", "method", "field"),
    [(COVER, "editMessageCaption", "caption"), (None, "editMessageText", "text")],
    ids=["photo-card", "text-card"],
)
async def test_a_title_change_edits_the_card_and_keeps_its_button(
    fake: FakeTelegram,
    store: Store,
    sink: TelegramSink,
    cover: str | None,
    method: str,
    field: str,
) -> None:
    await queue(store, (GROUP,), live_event(cover=cover))
    await run_outbox(store, sink)
    [card] = fake.messages[str(GROUP)]
    assert "Ranked grind" in card[field]

    await queue(
        store,
        (GROUP,),
        live_event(
            "title_change", event_id="e2", title="Road to <Diamond>", cover=cover, minutes=5
        ),
    )
    await run_outbox(store, sink)

    [edited] = fake.messages[str(GROUP)]
    assert edited["message_id"] == card["message_id"], "edited in place, nothing new posted"
    assert "edit_date" in edited
    assert "Road to <Diamond>" in edited[field]
    assert button(edited), "the keyboard is sent again with the edit"
    [call] = fake.calls_to(method)
    assert call.params["message_id"] == card["message_id"]
    assert call.params["parse_mode"] == "HTML"
    assert len(fake.calls_to("sendPhoto") + fake.calls_to("sendMessage")) == 1


async def test_editing_a_deleted_card_is_message_gone(
    fake: FakeTelegram, sink: TelegramSink
) -> None:
    delivery = a_delivery(GROUP)
    message_id = await sink.deliver(delivery, live_event(cover=None))
    kind, number = parse_message_id(message_id)
    assert kind == "text"
    fake.delete_message(GROUP, number)
    with pytest.raises(MessageGone, match=r"(?i)message to edit not found"):
        await sink.edit(delivery, message_id, live_event("title_change", title="later"))
    with pytest.raises(MessageGone):
        await sink.edit(delivery, "not-an-id", live_event("title_change"))


async def test_an_edit_that_changes_nothing_is_success(
    fake: FakeTelegram, sink: TelegramSink
) -> None:
    delivery = a_delivery(GROUP)
    event = live_event()
    message_id = await sink.deliver(delivery, event)
    await sink.edit(delivery, message_id, event)  # same card: Telegram says not modified
    [call] = fake.calls_to("editMessageCaption")
    assert call.status == 400
    assert "message is not modified" in (call.description or "")


# ---- deleting the card --------------------------------------------------------------------


async def test_delete_takes_the_card_down_and_a_card_already_gone_counts_as_deleted(
    fake: FakeTelegram, sink: TelegramSink
) -> None:
    delivery = a_delivery(GROUP)
    photo = await sink.deliver(delivery, live_event())
    text = await sink.deliver(delivery, live_event(cover=None))
    assert (photo.split(":")[0], text.split(":")[0]) == ("photo", "text")

    await sink.delete(delivery, photo)
    assert [f"text:{m['message_id']}" for m in fake.messages[str(GROUP)]] == [text]
    await sink.delete(delivery, photo)  # again, say after a lost answer: done

    _kind, number = parse_message_id(text)
    fake.delete_message(GROUP, number)  # an admin was quicker
    await sink.delete(delivery, text)
    assert fake.messages[str(GROUP)] == []
    assert [c.status for c in fake.calls_to("deleteMessage")] == [200, 400, 400]


async def test_a_card_in_a_forum_topic_is_deleted_by_its_chat(
    fake: FakeTelegram, sink: TelegramSink
) -> None:
    topic = dataclasses.replace(a_delivery(FORUM), target=f"{FORUM}/7")
    card = await sink.deliver(topic, live_event())
    await sink.delete(topic, card)
    assert fake.messages[str(FORUM)] == []
    [call] = fake.calls_to("deleteMessage")
    assert call.params["chat_id"] == FORUM
    assert "message_thread_id" not in call.params


async def test_a_card_telegram_will_not_delete_is_permanent_and_can_still_be_edited(
    fake: FakeTelegram, sink: TelegramSink
) -> None:
    delivery = a_delivery(GROUP)
    card = await sink.deliver(delivery, live_event(cover=None))
    [message] = fake.messages[str(GROUP)]
    message["date"] -= 49 * 3600  # bots cannot delete group messages after 48 hours
    with pytest.raises(PermanentDeliveryError, match=r"(?i)message can't be deleted") as caught:
        await sink.delete(delivery, card)
    # Not MessageGone: the card is still there, and the caller edits it instead.
    assert not isinstance(caught.value, MessageGone)
    await sink.edit(delivery, card, live_event("live_end", title="That was fun"))
    [edited] = fake.messages[str(GROUP)]
    assert "That was fun" in edited["text"]

    with pytest.raises(PermanentDeliveryError) as malformed:
        await sink.delete(delivery, "not-an-id")
    assert not isinstance(malformed.value, MessageGone)

    fake.fail_next("deleteMessage", error_code=502)
    with pytest.raises(TransientDeliveryError):
        await sink.delete(delivery, card)
    assert len(fake.messages[str(GROUP)]) == 1


# ---- pacing -------------------------------------------------------------------------------

PACED_CHATS = [-100_900_000 - k for k in range(12)]


@pytest.mark.parametrize(
    ("sink_limit", "expect_429s"),
    [(5, False), (1000, True)],
    ids=["paced-to-telegrams-limit", "unpaced-control"],
)
async def test_a_fan_out_is_paced_under_the_overall_limit_instead_of_riding_429s(
    store: Store, sink_limit: int, expect_429s: bool
) -> None:
    # Telegram's 30 messages/s overall, scaled down: 5 per 0.25 s, 12 groups at once.
    async with FakeTelegram(send_limit=(5, 0.25)) as fake:
        for chat in PACED_CHATS:
            fake.add_chat(chat, "supergroup", title=f"Paced {chat}")
        tg = make_sink(fake, store, overall_limit=sink_limit, overall_period=0.25)
        await tg.start()
        try:
            await asyncio.gather(*(tg.deliver(a_delivery(c), live_event()) for c in PACED_CHATS))
        finally:
            await tg.stop()
        assert [len(fake.messages[str(chat)]) for chat in PACED_CHATS] == [1] * 12
        rejected = [c for c in fake.calls_to("sendPhoto") if c.status == 429]
        assert bool(rejected) is expect_429s


async def test_a_second_request_in_a_turn_never_leaves_the_chats_waiting_on_each_other(
    fake: FakeTelegram, store: Store
) -> None:
    # Every card's photo fails and falls back to text: two requests per delivery, with
    # more deliveries at once than the limiter has slots.
    fake.unreachable_photos.add(COVER)
    chats = (GROUP, OTHER, FORUM, USER)
    tg = make_sink(fake, store, overall_limit=2, overall_period=0.05)
    await tg.start()
    try:
        async with asyncio.timeout(10):
            ids = await asyncio.gather(*(tg.deliver(a_delivery(c), live_event()) for c in chats))
    finally:
        await tg.stop()
    assert all(message_id.startswith("text:") for message_id in ids)
    assert [len(fake.messages[str(chat)]) for chat in chats] == [1, 1, 1, 1]


async def test_a_group_gets_no_more_than_its_limit_in_a_window(
    fake: FakeTelegram, store: Store
) -> None:
    tg = make_sink(fake, store, group_limit=2, group_period=3600)
    await tg.start()
    try:
        delivery = a_delivery(GROUP)
        for _ in range(2):
            await tg.deliver(delivery, live_event(cover=None))
        third = asyncio.create_task(tg.deliver(delivery, live_event(cover=None)))
        await tg.deliver(a_delivery(USER), live_event(cover=None))  # other chats go on
        assert not third.done(), "the group's third message waits for its window"
        third.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await third
    finally:
        await tg.stop()
    assert len(fake.messages[str(GROUP)]) == 2
    assert len(fake.messages[str(USER)]) == 1


# ---- failures -----------------------------------------------------------------------------


async def test_a_429_is_waited_out_and_the_message_arrives_once(
    fake: FakeTelegram, store: Store, sink: TelegramSink
) -> None:
    fake.fail_next("sendPhoto", error_code=429, retry_after=0.05)
    await queue(store, (GROUP,), live_event())
    await run_outbox(store, sink)

    first, second = fake.calls_to("sendPhoto")
    assert first.status == 429
    assert second.ok
    assert len(fake.messages[str(GROUP)]) == 1
    row = (await rows(store))[str(GROUP)]
    assert (row.state, row.attempts) == ("sent", 1), "the limiter retried, not the outbox"


async def test_a_429_outlasting_the_limiters_retries_is_transient_with_retry_after(
    fake: FakeTelegram, store: Store
) -> None:
    fake.fail_next("sendMessage", error_code=429, retry_after=0.05, times=2)
    tg = make_sink(fake, store, rate_limit_retries=1)
    await tg.start()
    try:
        with pytest.raises(TransientDeliveryError) as caught:
            await tg.deliver(a_delivery(GROUP), live_event(cover=None))
    finally:
        await tg.stop()
    assert caught.value.retry_after == pytest.approx(0.05)
    assert fake.messages[str(GROUP)] == []


@pytest.mark.parametrize(
    ("chat", "blocked", "error"),
    [(MISSING, False, "chat not found"), (USER, True, "bot was blocked by the user")],
)
async def test_permanent_errors(
    fake: FakeTelegram, sink: TelegramSink, chat: int, blocked: bool, error: str
) -> None:
    if blocked:
        fake.chats[str(chat)].bot_status = "kicked"
    with pytest.raises(PermanentDeliveryError, match=rf"(?i){error}"):
        await sink.deliver(a_delivery(chat), live_event())


async def test_a_missing_chat_fails_its_row_while_other_chats_get_theirs(
    fake: FakeTelegram, store: Store, sink: TelegramSink
) -> None:
    await queue(store, (MISSING, GROUP), live_event())
    await run_outbox(store, sink)

    by_target = await rows(store)
    assert by_target[str(MISSING)].state == "failed"
    assert "chat not found" in (by_target[str(MISSING)].last_error or "").lower()
    assert by_target[str(GROUP)].state == "sent"
    assert len(fake.messages[str(GROUP)]) == 1
    assert await store.failed_count("telegram", str(MISSING)) == 1


async def test_deliveries_wait_while_the_sink_is_not_running(
    fake: FakeTelegram, store: Store
) -> None:
    tg = make_sink(fake, store)
    with pytest.raises(TransientDeliveryError, match="not connected"):
        await tg.deliver(a_delivery(GROUP), live_event())


async def test_an_unreachable_api_at_start_is_retried_in_the_background(
    fake: FakeTelegram, store: Store
) -> None:
    fake.fail_next("getMe", error_code=502, description="Bad Gateway")
    tg = make_sink(fake, store, reconnect_delay=0.05)
    await tg.start()
    try:
        assert tg.state == "failed"
        async with asyncio.timeout(5):
            while tg.state != "running":
                await asyncio.sleep(0.01)
        assert (await tg.deliver(a_delivery(GROUP), live_event())).startswith("photo:")
    finally:
        await tg.stop()
    assert tg.state == "stopped"


# ---- commands -----------------------------------------------------------------------------


async def go_live(store: Store, *, title: str = "Ranked grind") -> None:
    """Make twitch/quinn live in the store without queueing any delivery."""
    await Dispatcher(store=store, routes=[route(GROUP)], sinks=[]).accept(live_event(title=title))


async def reply_in(fake: FakeTelegram, chat: int, text: str, **kwargs: Any) -> dict[str, Any]:
    """Push a user's command and wait for the bot's answer to it."""
    sent = fake.push_message(chat, text, **kwargs)

    def answers(message: dict[str, Any]) -> bool:
        if chat > 0:  # private chats get a plain message, later than the command
            return bool(message["message_id"] > sent)
        return bool(message.get("reply_to_message", {}).get("message_id") == sent)

    return await fake.wait_for_message(chat, answers)


async def test_commands_are_registered_at_start(fake: FakeTelegram, sink: TelegramSink) -> None:
    [call] = fake.calls_to("setMyCommands")
    names = [c["command"] for c in call.params["commands"]]
    assert names == [spec.name for spec in CATALOGUE]
    assert names[0] == "start"
    assert fake.calls_to("deleteWebhook"), "polling started"


async def test_status_in_a_private_chat_lists_who_is_live(
    fake: FakeTelegram, store: Store, sink: TelegramSink
) -> None:
    await go_live(store, title="<b>x</b> & co")
    answer = await reply_in(fake, USER, "/status")
    text = answer["text"]
    assert "Live now" in text
    assert "Quinn" in text
    assert "<b>x</b> & co" in text
    assert "Art" in text
    assert "up 30m" in text
    assert "Nothing is muted here." in text
    links = [e for e in answer["entities"] if e["type"] == "text_link"]
    assert [e["url"] for e in links] == [STREAM_URL]
    assert not fake.calls_to("getChatMember"), "no admin check for a read-only command"


async def test_a_group_member_may_not_mute_but_an_admin_may(
    fake: FakeTelegram, store: Store, sink: TelegramSink
) -> None:
    await go_live(store)
    refused = await reply_in(fake, GROUP, "/mute twitch/quinn 2h", from_user_id=MEMBER)
    assert "only this chat's admins" in refused["text"]
    assert await store.mutes_for("telegram", str(GROUP), time.time()) == []
    assert fake.calls_to("getChatMember")[-1].params["user_id"] == MEMBER

    done = await reply_in(fake, GROUP, "/mute twitch/quinn 2h", from_user_id=ADMIN)
    assert done["text"] == "Muted twitch/quinn here for 2h."
    [mute] = await store.mutes_for("telegram", str(GROUP), time.time())
    assert mute.pattern == "twitch/quinn"
    assert mute.until is not None
    assert mute.until - time.time() == pytest.approx(7200, abs=60)


async def test_a_key_copied_from_status_mutes_that_stream_and_the_answer_pings_nobody(
    fake: FakeTelegram, store: Store, sink: TelegramSink
) -> None:
    handle = live_event().with_changes(platform="youtube", channel="@quinn", url=None)
    await Dispatcher(store=store, routes=[route(GROUP)], sinks=[]).accept(handle)
    status = await reply_in(fake, GROUP, "/status@streambot_test", from_user_id=MEMBER)
    # /status shows "youtube/@\u2060quinn", so that its "@" is no mention...
    assert "<code>youtube/@\u2060quinn</code>" in fake.calls_to("sendMessage")[-1].params["text"]
    assert not [e for e in status["entities"] if e["type"] == "mention"]
    # ... and pasted into a command, the invisible word joiner is no part of the key.
    answer = await reply_in(fake, GROUP, "/mute youtube/@\u2060quinn 2h", from_user_id=ADMIN)
    [mute] = await store.mutes_for("telegram", str(GROUP), time.time())
    assert mute.pattern == "youtube/@quinn"
    assert answer["text"].replace("\u2060", "") == "Muted youtube/@quinn here for 2h."
    assert not [e for e in answer.get("entities", []) if e["type"] == "mention"]


async def test_mute_with_a_lone_duration_mutes_everything_for_that_long(
    fake: FakeTelegram, store: Store, sink: TelegramSink
) -> None:
    answer = await reply_in(fake, GROUP, "/mute 2h", from_user_id=ADMIN)
    assert answer["text"] == "Muted every stream here for 2h."
    [mute] = await store.mutes_for("telegram", str(GROUP), time.time())
    assert mute.pattern == "*"
    assert mute.until is not None
    assert mute.until - time.time() == pytest.approx(7200, abs=60)


async def test_a_bad_duration_gets_a_helpful_answer(
    fake: FakeTelegram, store: Store, sink: TelegramSink
) -> None:
    await go_live(store)
    answer = await reply_in(fake, USER, "/mute twitch/quinn soon")
    assert "'soon' is not a duration" in answer["text"]
    assert "30m, 2h or 1d" in answer["text"]
    assert await store.mutes_for("telegram", str(USER), time.time()) == []


async def test_a_command_for_another_bot_is_ignored(
    fake: FakeTelegram, sink: TelegramSink
) -> None:
    fake.push_message(GROUP, "/status@otherbot", from_user_id=MEMBER)
    answer = await reply_in(fake, GROUP, "/help@streambot_test", from_user_id=MEMBER)
    assert "-100777" in answer["text"]
    # Updates are handled in order: had /status@otherbot been answered, it would be here.
    assert [m["message_id"] for m in fake.messages[str(GROUP)]] == [answer["message_id"]]


@pytest.mark.parametrize("command", ["/start", "/help"])
async def test_start_and_help_tell_the_chat_id_and_how_to_subscribe(
    fake: FakeTelegram, sink: TelegramSink, command: str
) -> None:
    answer = await reply_in(fake, USER, command)
    assert "This chat's id: 1001" in answer["text"]
    assert "/subscribe" in answer["text"]
    assert "/mute [streamer] [duration]" in answer["text"]


async def test_subscribe_and_answers_in_a_forum_topic(
    fake: FakeTelegram, store: Store, sink: TelegramSink
) -> None:
    answer = await reply_in(
        fake, FORUM, "/subscribe twitch/*", from_user_id=ADMIN, message_thread_id=7
    )
    assert answer["text"].startswith("Subscribed: notifications for twitch/* will come here.")
    assert answer["message_thread_id"] == 7
    assert [(s.target, s.pattern) for s in await store.subscriptions()] == [
        (str(FORUM), "twitch/*")
    ]

    usage = await reply_in(fake, FORUM, "/subscribe", from_user_id=ADMIN, message_thread_id=7)
    assert "Use: /subscribe pattern" in usage["text"]


async def test_status_tells_an_admin_when_deliveries_here_fail(
    fake: FakeTelegram, store: Store, sink: TelegramSink
) -> None:
    await queue(store, (GROUP,), live_event())
    [row] = await every_delivery(store)
    await store.mark_failed(row.id, error="Forbidden: not enough rights", now=time.time())

    member = await reply_in(fake, GROUP, "/status", from_user_id=MEMBER)
    assert "failed" not in member["text"]
    admin = await reply_in(fake, GROUP, "/status", from_user_id=ADMIN)
    assert "1 notification to this chat failed for good" in admin["text"]


# ---- secrets ------------------------------------------------------------------------------


async def test_a_wrong_token_fails_quietly_without_logging_it(
    fake: FakeTelegram,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    tg = make_sink(fake, store, token="123456:WRONG-secret-token")
    built: list[Any] = []
    build = tg._build_app

    def spy() -> Any:
        built.append(build())
        return built[-1]

    monkeypatch.setattr(tg, "_build_app", spy)
    await tg.start()
    assert tg.state == "failed"
    assert fake.calls_to("getMe")[-1].status == 401
    await tg.stop()

    assert any("rejected the bot token" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert "WRONG-secret-token" not in record.getMessage()
        assert "WRONG-secret-token" not in (record.exc_text or "")
    assert "WRONG-secret-token" not in caplog.text
    [app] = built
    assert all(request._client.is_closed for request in app.bot._request), "clients closed"


async def test_the_token_never_reaches_a_log_line_or_repr(
    fake: FakeTelegram, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tg = make_sink(fake, store)
    await tg.start()
    try:
        await tg.deliver(a_delivery(GROUP), live_event())
        quiet = [r for r in caplog.records if r.name.startswith("httpx")]
        assert quiet == [], "httpx request lines are held back while the sink runs"

        # Someone debugging turns httpx logging back on: the URLs are redacted.
        logging.getLogger("httpx").setLevel(logging.INFO)
        await tg.deliver(a_delivery(OTHER), live_event())
        await reply_in(fake, USER, "/help")
    finally:
        await tg.stop()

    loud = [r.getMessage() for r in caplog.records if r.name.startswith("httpx")]
    assert any("/bot123456:***/sendPhoto" in line for line in loud)
    for record in caplog.records:
        assert SECRET_PART not in record.getMessage()
    assert SECRET_PART not in caplog.text
    assert SECRET_PART not in repr(tg)
    assert SECRET_PART not in str(tg)


# ---- small pieces -------------------------------------------------------------------------


def test_message_ids_and_chat_ids() -> None:
    assert parse_message_id("photo:12") == ("photo", 12)
    assert parse_message_id("text:7") == ("text", 7)
    assert parse_message_id("7") == (None, 7)
    with pytest.raises(MessageGone):
        parse_message_id("video:7")
    assert chat_id_of("-1001234567890") == -1001234567890
    assert chat_id_of("@streamnews") == "@streamnews"


async def test_help_posted_in_a_channel_answers_with_the_channels_id(
    fake: FakeTelegram, sink: TelegramSink
) -> None:
    channel = -100999
    fake.add_chat(channel, "channel", title="Announcements")
    post = {
        "message_id": 1,
        "chat": fake.chats[str(channel)].to_dict(),
        "date": int(time.time()),
        "text": "/help",
        "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
    }
    fake.push_update({"channel_post": post})
    answer = await fake.wait_for_message(channel)
    assert f"This chat's id: {channel}" in answer["text"]


async def test_a_deleted_or_closed_topic_fails_for_good_and_status_says_so(
    fake: FakeTelegram, store: Store, sink: TelegramSink
) -> None:
    fake.set_topic(FORUM, 8, "deleted")
    fake.set_topic(FORUM, 9, "closed")
    fake.chats[str(FORUM)].bot_status = "member"  # not an admin: a closed topic refuses it
    await queue(store, (f"{FORUM}/7", f"{FORUM}/8", f"{FORUM}/9"), live_event())  # type: ignore[arg-type]
    await run_outbox(store, sink)
    by_target = await rows(store)
    assert by_target[f"{FORUM}/7"].state == "sent"
    for topic, error in ((8, "message thread not found"), (9, "topic_closed")):
        failed = by_target[f"{FORUM}/{topic}"]
        assert failed.state == "failed" and failed.attempts == 1  # permanent: not retried
        assert error in (failed.last_error or "").lower()
    admin = await reply_in(fake, FORUM, "/status", from_user_id=ADMIN, message_thread_id=7)
    assert "2 notifications to this chat failed for good" in admin["text"]


async def test_a_chat_with_media_restricted_gets_text_cards_and_is_remembered(
    fake: FakeTelegram, sink: TelegramSink, caplog: pytest.LogCaptureFixture
) -> None:
    fake.chats[str(GROUP)].media_restricted = True
    first = await sink.deliver(a_delivery(GROUP), live_event())
    second = await sink.deliver(a_delivery(GROUP), live_event())
    assert first.startswith("text:") and second.startswith("text:")
    # One refused photo taught the sink; the second card went out as text at once.
    assert [c.status for c in fake.calls_to("sendPhoto")] == [400]
    assert [("photo" in m, "Ranked grind" in m["text"]) for m in fake.messages[str(GROUP)]] == [
        (False, True),
        (False, True),
    ]
    warnings = [
        r.getMessage()
        for r in caplog.records
        if "does not let the bot send photos" in r.getMessage()
    ]
    assert len(warnings) == 1
    # Another chat still gets photos.
    assert (await sink.deliver(a_delivery(OTHER), live_event())).startswith("photo:")


# ---- one busy chat never holds up another ---------------------------------------------------


def answers_to(fake: FakeTelegram, chat: int, command: int) -> list[dict[str, Any]]:
    return [
        m
        for m in fake.messages.get(str(chat), [])
        if m.get("reply_to_message", {}).get("message_id") == command
    ]


async def test_a_group_at_its_flood_limit_holds_up_no_other_chats_answers(
    fake: FakeTelegram, store: Store
) -> None:
    # One message an hour in a group: the group's second answer must wait its turn...
    tg = make_sink(fake, store, group_limit=1, group_period=3600)
    await tg.start()
    try:
        await reply_in(fake, GROUP, "/status", from_user_id=MEMBER)
        waiting = fake.push_message(GROUP, "/status", from_user_id=MEMBER)
        # ...and another chat's answer comes meanwhile. (PTB handles updates one at a
        # time by default: this one used to wait behind the group's for the window.)
        answer = await reply_in(fake, OTHER, "/mutes", from_user_id=MEMBER)
        assert "muted" in answer["text"].lower()
        assert answers_to(fake, GROUP, waiting) == []
    finally:
        await asyncio.wait_for(tg.stop(), 30)


async def test_a_command_is_answered_before_the_chats_queued_notifications(
    fake: FakeTelegram, store: Store
) -> None:
    tg = make_sink(fake, store, group_limit=1, group_period=0.3)
    await tg.start()
    try:
        cards = [
            asyncio.create_task(tg.deliver(a_delivery(GROUP), live_event(cover=None, title=t)))
            for t in ("First card", "Second card", "Third card")
        ]
        await fake.wait_for_message(GROUP, lambda m: "First card" in m.get("text", ""))
        answer = await reply_in(fake, GROUP, "/mutes", from_user_id=MEMBER)
        await asyncio.wait_for(asyncio.gather(*cards), 10)
    finally:
        await tg.stop()
    sent = [m["message_id"] for m in fake.messages[str(GROUP)] if m.get("from", {}).get("is_bot")]
    texts = {m["message_id"]: m.get("text", "") for m in fake.messages[str(GROUP)]}
    order = [texts[i] for i in sorted(sent)]
    # The answer someone waits for went ahead of the two cards already queued.
    assert len(order) == 4 and "First card" in order[0]
    assert order[1] == answer["text"]
    assert "Second card" in order[2] and "Third card" in order[3]
