"""The Telegram fake, driven by the real python-telegram-bot (no mocks in between)."""

from __future__ import annotations

import asyncio
import datetime as dtm
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from telegram import (
    Bot,
    BotCommand,
    ChatMemberAdministrator,
    ChatMemberRestricted,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    RetryAfter,
)
from telegram.ext import ApplicationBuilder, BaseRateLimiter, CommandHandler, ContextTypes

from bot.sinks.telegram.client import PacedRateLimiter
from tests.fakes.telegram_api import (
    FakeTelegram,
    HtmlParseError,
    find_entities,
    merge_found_entities,
    parse_html,
)

USER = 1001  # a private chat with this user
ADMIN = 2002
MEMBER = 3003
GROUP = -100777
FORUM = -100888
BUTTON = InlineKeyboardMarkup([[InlineKeyboardButton("Watch", url="https://example.com/live")]])


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """RetryAfter.__init__ reads its own deprecated int property, which warns unless opted in.

    Under filterwarnings=error that warning replaces the RetryAfter, so a rate limiter never
    sees a 429. With the opt-in, ``RetryAfter.retry_after`` is a timedelta.
    """
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        tg.add_chat(USER, "private", first_name="Alice")
        tg.add_chat(GROUP, "supergroup", title="Streams", admins={ADMIN})
        tg.add_chat(FORUM, "supergroup", title="Forum", is_forum=True, topics=[7])
        yield tg


def build_app(
    fake: FakeTelegram,
    *,
    token: str | None = None,
    rate_limiter: BaseRateLimiter[Any] | None = None,
) -> Any:
    """An Application pointed at the fake, built the way the bot's sink will build it."""
    builder = (
        ApplicationBuilder()
        .token(token or fake.token)
        .base_url(f"{fake.api_url}/bot")
        .base_file_url(f"{fake.api_url}/file/bot")
    )
    if rate_limiter is not None:
        return builder.rate_limiter(rate_limiter).build()
    return builder.build()


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(
        fake.token, base_url=f"{fake.api_url}/bot", base_file_url=f"{fake.api_url}/file/bot"
    ) as b:
        yield b


# ---- polling and commands ---------------------------------------------------------------


async def test_polled_command_reaches_handler_and_reply_is_stored(fake: FakeTelegram) -> None:
    async def status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("<b>All quiet</b> &amp; idle", parse_mode="HTML")

    app = build_app(fake)
    app.add_handler(CommandHandler("status", status))
    async with app:
        await app.updater.start_polling(poll_interval=0, timeout=1)
        await app.start()
        assert fake.calls_to("deleteWebhook"), "start_polling bootstraps with deleteWebhook"

        fake.push_message(USER, "/status")
        # In groups PTB quotes the command (reply_parameters) and needs the @botname form.
        group_msg = fake.push_message(GROUP, "/status@streambot_test", from_user_id=MEMBER)

        private = await fake.wait_for_message(USER, lambda m: "All quiet" in m["text"])
        group = await fake.wait_for_message(GROUP)

        started = time.monotonic()
        await app.updater.stop()
        await app.stop()
        assert time.monotonic() - started < 1.0, "the last getUpdates(timeout=0) is answered now"

    assert private["text"] == "All quiet & idle"
    assert private["entities"] == [{"type": "bold", "offset": 0, "length": 9}]
    assert private["from"]["username"] == "streambot_test"
    assert group["reply_to_message"]["message_id"] == group_msg
    last_poll = fake.calls_to("getUpdates")[-1]
    assert last_poll.params["timeout"] == 0
    assert last_poll.params["offset"] == fake.updates[-1]["update_id"] + 1


async def test_get_updates_long_polls_acknowledges_and_filters(
    fake: FakeTelegram, bot: Bot
) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=0) == ()
    assert time.monotonic() - started < 0.5

    mark = len(fake.calls)
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await fake.wait_for_call("getUpdates", start=mark, answered=False)
    fake.push_message(USER, "hello")
    updates = await asyncio.wait_for(poll, 2)
    assert [u.message.text for u in updates if u.message] == ["hello"]

    again = await bot.get_updates(timeout=0)
    assert again == updates, "not acknowledged yet"
    assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0) == ()

    fake.push_update({"edited_message": dict(fake.updates[-1]["message"], edit_date=1)})
    fake.push_message(USER, "kept")
    kept = await bot.get_updates(timeout=0, allowed_updates=["message"])
    assert [u.message.text for u in kept if u.message] == ["kept"]
    assert len(kept) == 1, "edited_message was not asked for"


async def test_second_get_updates_ends_the_pending_one_with_conflict(
    fake: FakeTelegram, bot: Bot
) -> None:
    # A Bot has one connection for getUpdates, so the rival poller is a second instance.
    async with Bot(fake.token, base_url=f"{fake.api_url}/bot") as rival:
        first = asyncio.create_task(bot.get_updates(timeout=5))
        await fake.wait_for_call("getUpdates", answered=False)
        await rival.get_updates(timeout=0)
        with pytest.raises(Conflict, match="terminated by other getUpdates"):
            await asyncio.wait_for(first, 2)


# ---- sending and editing ----------------------------------------------------------------


async def test_html_message_with_url_button_then_edits(fake: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(
        GROUP,
        '<b>Alice</b> is live: <a href="https://example.com/live?a=1&amp;b=2">watch</a>',
        parse_mode=ParseMode.HTML,
        reply_markup=BUTTON,
    )
    assert sent.reply_markup == BUTTON
    stored = fake.messages[str(GROUP)][-1]
    assert stored["text"] == "Alice is live: watch"
    assert stored["entities"] == [
        {"type": "bold", "offset": 0, "length": 5},
        {
            "type": "text_link",
            "offset": 15,
            "length": 5,
            "url": "https://example.com/live?a=1&b=2",
        },
    ]
    assert stored["reply_markup"] == {
        "inline_keyboard": [[{"text": "Watch", "url": "https://example.com/live"}]]
    }

    edited = await bot.edit_message_text(
        "<b>Alice</b> was live", GROUP, sent.message_id, parse_mode="HTML", reply_markup=BUTTON
    )
    assert isinstance(edited, Message)
    assert edited.text == "Alice was live"
    assert edited.edit_date is not None
    assert fake.messages[str(GROUP)][-1]["text"] == "Alice was live"

    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text(
            "<b>Alice</b> was live", GROUP, sent.message_id, parse_mode="HTML", reply_markup=BUTTON
        )
    # Telegram drops the keyboard when an edit does not repeat it; that is a change.
    await bot.edit_message_text("<b>Alice</b> was live", GROUP, sent.message_id, parse_mode="HTML")
    assert "reply_markup" not in fake.messages[str(GROUP)][-1]

    restored = await bot.edit_message_reply_markup(GROUP, sent.message_id, reply_markup=BUTTON)
    assert isinstance(restored, Message)
    assert restored.reply_markup == BUTTON


async def test_photo_caption_and_caption_edit(fake: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_photo(
        USER,
        "https://cdn.example.com/thumb.jpg",
        caption="<i>Live</i> now",
        parse_mode="HTML",
        reply_markup=BUTTON,
    )
    assert sent.photo and sent.caption == "Live now"
    stored = fake.messages[str(USER)][-1]
    assert stored["caption_entities"] == [{"type": "italic", "offset": 0, "length": 4}]
    assert fake.calls_to("sendPhoto")[-1].params["photo"] == "https://cdn.example.com/thumb.jpg"

    await bot.edit_message_caption(USER, sent.message_id, caption="Ended", reply_markup=BUTTON)
    assert fake.messages[str(USER)][-1]["caption"] == "Ended"
    assert "caption_entities" not in fake.messages[str(USER)][-1]

    with pytest.raises(BadRequest, match="no text in the message to edit"):
        await bot.edit_message_text("x", USER, sent.message_id)

    again = await bot.send_photo(USER, sent.photo[-1].file_id)  # a file_id Telegram issued
    assert again.photo[-1].file_id == sent.photo[-1].file_id

    uploaded = await bot.send_photo(USER, b"\x89PNG fake bytes", caption="upload")
    assert fake.calls_to("sendPhoto")[-1].files["photo"] == b"\x89PNG fake bytes"
    assert uploaded.caption == "upload"

    fake.unreachable_photos.add("https://cdn.example.com/gone.jpg")
    with pytest.raises(BadRequest, match=r"(?i)wrong file identifier/HTTP URL specified"):
        await bot.send_photo(USER, "https://cdn.example.com/gone.jpg", caption="x")


async def test_editing_a_deleted_message(fake: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(USER, "card")
    fake.delete_message(USER, sent.message_id)
    assert fake.messages[str(USER)] == []
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("card v2", USER, sent.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(USER, sent.message_id)

    other = await bot.send_message(USER, "another")
    assert other.message_id == sent.message_id + 1, "ids keep increasing per chat"
    assert await bot.delete_message(USER, other.message_id) is True
    assert fake.messages[str(USER)] == []


async def test_delete_message_follows_the_bot_api_rules(fake: FakeTelegram, bot: Bot) -> None:
    card = await bot.send_message(GROUP, "card")
    theirs = fake.push_message(GROUP, "hello", from_user_id=MEMBER)
    with pytest.raises(BadRequest, match=r"(?i)message can't be deleted"):
        await bot.delete_message(GROUP, theirs)  # someone else's, and the bot is no admin

    fake.messages[str(GROUP)][0]["date"] -= 49 * 3600
    with pytest.raises(BadRequest, match=r"(?i)message can't be deleted"):
        await bot.delete_message(GROUP, card.message_id)  # older than 48 hours
    assert [m["message_id"] for m in fake.messages[str(GROUP)]] == [card.message_id]

    fake.chats[str(GROUP)].bot_status = "administrator"  # an admin may delete anything
    assert await bot.delete_message(GROUP, card.message_id) is True
    assert await bot.delete_message(GROUP, theirs) is True
    assert fake.messages[str(GROUP)] == []
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(GROUP, card.message_id)


async def test_send_limit_answers_429_with_retry_after_for_sends_only() -> None:
    async with FakeTelegram(send_limit=(2, 60.0)) as fake:
        fake.add_chat(GROUP, "supergroup", title="Streams")
        async with Bot(
            fake.token, base_url=f"{fake.api_url}/bot", base_file_url=f"{fake.api_url}/file/bot"
        ) as bot:
            first = await bot.send_message(GROUP, "one")
            await bot.send_photo(GROUP, "https://cdn.example.com/a.jpg", caption="two")
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(GROUP, "three")
            # Other methods are not counted.
            await bot.edit_message_text("one, edited", GROUP, first.message_id)
            assert await bot.delete_message(GROUP, first.message_id) is True
    assert 59 < caught.value.retry_after.total_seconds() <= 60
    sends = [c for c in fake.calls if c.method in ("sendMessage", "sendPhoto")]
    assert [c.status for c in sends] == [200, 200, 429]
    assert sends[2].description.startswith("Too Many Requests: retry after ")
    assert [m.get("caption") for m in fake.messages[str(GROUP)]] == ["two"]


async def test_group_send_limit_is_per_group_over_a_rolling_window() -> None:
    async with FakeTelegram(group_send_limit=(2, 0.5)) as fake:
        fake.add_chat(GROUP, "supergroup", title="Streams")
        fake.add_chat(FORUM, "group", title="Friends")
        fake.add_chat(USER, "private", first_name="Alice")
        async with Bot(
            fake.token, base_url=f"{fake.api_url}/bot", base_file_url=f"{fake.api_url}/file/bot"
        ) as bot:
            await bot.send_message(GROUP, "one")
            await asyncio.sleep(0.3)
            await bot.send_message(GROUP, "two")
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(GROUP, "three")
            await bot.send_message(FORUM, "another group has its own window")
            for n in range(3):
                await bot.send_message(USER, f"a private chat has none {n}")
            await asyncio.sleep(0.25)  # "one" has left the window; "two" has not
            await bot.send_message(GROUP, "four")
            with pytest.raises(RetryAfter):
                await bot.send_message(GROUP, "five")
    assert 0 < caught.value.retry_after.total_seconds() <= 0.21
    assert [m["text"] for m in fake.messages[str(GROUP)]] == ["one", "two", "four"]


async def test_forum_topic_thread_is_echoed(fake: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(FORUM, "in a topic", message_thread_id=7)
    assert sent.message_thread_id == 7
    assert sent.is_topic_message
    with pytest.raises(BadRequest, match=r"(?i)message thread not found"):
        await bot.send_message(GROUP, "not a forum", message_thread_id=7)
    with pytest.raises(BadRequest, match=r"(?i)message to be replied not found"):
        await bot.send_message(USER, "x", reply_parameters=ReplyParameters(message_id=999))


# ---- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("<b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<blink>x</blink>", 'Unsupported start tag "blink" at byte offset 0'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
        ("Tom & Jerry", 'Unescaped "&" at byte offset 4'),
        ('<a href="https://x.test/?a=1&b=2">x</a>', 'Unescaped "&" at byte offset 28'),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ("</b>", "Unexpected end tag at byte offset 0"),
        ("ok <b", "Unclosed start tag at byte offset 3"),
    ],
)
async def test_malformed_html_is_rejected(bot: Bot, text: str, error: str) -> None:
    with pytest.raises(BadRequest, match="parse entities") as caught:
        await bot.send_message(USER, text, parse_mode="HTML")
    # PTB capitalizes the description, lower-casing the rest of it.
    assert caught.value.message == f"Can't parse entities: {error}".capitalize()


async def test_length_limits_count_utf16_after_parsing(fake: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(USER, "<b>" + "a" * 4096 + "</b>", parse_mode="HTML")
    await bot.send_message(USER, "😀" * 2048)  # 4096 UTF-16 code units
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(USER, "😀" * 2048 + "a")
    with pytest.raises(BadRequest, match=r"(?i)message caption is too long"):
        await bot.send_photo(USER, "https://cdn.example.com/t.jpg", caption="c" * 1025)
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(USER, " \n <b> </b>", parse_mode="HTML")
    trimmed = await bot.send_message(USER, "\n  <b>hi</b>  \n", parse_mode="HTML")
    assert trimmed.text == "hi"
    assert fake.messages[str(USER)][-1]["entities"] == [{"type": "bold", "offset": 0, "length": 2}]


@pytest.mark.parametrize(
    ("markup", "error"),
    [
        (InlineKeyboardMarkup([[InlineKeyboardButton("x", url="not a url")]]), "BUTTON_URL"),
        (
            InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="d" * 65)]]),
            "BUTTON_DATA",
        ),
    ],
)
async def test_bad_inline_buttons_are_rejected(
    bot: Bot, markup: InlineKeyboardMarkup, error: str
) -> None:
    with pytest.raises(BadRequest, match=rf"(?i){error}"):
        await bot.send_message(USER, "x", reply_markup=markup)


# ---- failures -----------------------------------------------------------------------------


async def test_unknown_chat_blocked_and_kicked(fake: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(-100999, "x")

    fake.chats[str(USER)].bot_status = "kicked"  # the user blocked the bot
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(USER, "x")

    fake.fail_next(
        "sendMessage", error_code=403, description="Forbidden: bot was kicked from the group chat"
    )
    with pytest.raises(Forbidden, match="kicked from the group chat"):
        await bot.send_message(GROUP, "x")
    assert (await bot.send_message(GROUP, "x")).text == "x", "fail_next fails only once"


async def test_429_is_retried_by_the_rate_limiter(fake: FakeTelegram) -> None:
    fake.fail_next("sendMessage", error_code=429, retry_after=0.05)
    limiter = PacedRateLimiter(overall=(30, 1.0), group=(20, 60.0), max_retries=1)
    app = build_app(fake, rate_limiter=limiter)
    async with app:
        sent = await app.bot.send_message(GROUP, "retried")
    assert sent.text == "retried"
    first, second = fake.calls_to("sendMessage")
    assert first.response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 0.05",
        "parameters": {"retry_after": 0.05},
    }
    assert second.ok
    assert [m["text"] for m in fake.messages[str(GROUP)]] == ["retried"]


async def test_429_without_retries_raises_retry_after(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail_next("sendMessage", error_code=429, retry_after=3)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(GROUP, "x")
    assert caught.value.retry_after == dtm.timedelta(seconds=3)
    assert fake.calls_to("sendMessage")[-1].description == "Too Many Requests: retry after 3"
    assert fake.messages[str(GROUP)] == []


async def test_wrong_token_is_invalid_token_at_initialize(fake: FakeTelegram) -> None:
    app = build_app(fake, token="123456:WRONG-token")
    with pytest.raises(InvalidToken) as caught:
        async with app:
            pass
    assert "WRONG-token" in str(caught.value), "PTB puts the token in the message: never log it"
    # Application.__aenter__ shuts down only what it initialized: the bot's HTTP clients
    # are left open when getMe fails, so close them here.
    await app.bot.shutdown()
    assert fake.calls_to("getMe")[-1].status == 401


# ---- chat queries and commands ------------------------------------------------------------


async def test_chat_member_status_and_commands(fake: FakeTelegram, bot: Bot) -> None:
    assert (await bot.get_chat_member(GROUP, ADMIN)).status == "administrator"
    assert (await bot.get_chat_member(GROUP, MEMBER)).status == "member"
    admins = await bot.get_chat_administrators(GROUP)
    assert [a.user.id for a in admins] == [ADMIN]
    chat = await bot.get_chat(GROUP)
    assert chat.title == "Streams"

    commands = [BotCommand("status", "What is live"), BotCommand("mute", "Mute a stream")]
    assert await bot.set_my_commands(commands)
    recorded = fake.calls_to("setMyCommands")[-1].params["commands"]
    assert recorded == [c.to_dict() for c in commands]
    assert await bot.get_my_commands() == tuple(commands)

    with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand("Bad-Command", "x")])


async def test_callback_query_answer(fake: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(USER, "card", reply_markup=BUTTON)
    query_id = fake.push_callback_query(USER, sent.message_id, "mute:alice", from_user_id=USER)
    [update] = await bot.get_updates(timeout=0)
    assert update.callback_query is not None
    assert update.callback_query.data == "mute:alice"
    assert await bot.answer_callback_query(query_id, text="Muted")
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(query_id)


# ---- entities Telegram finds by itself ------------------------------------------------------


async def test_mentions_links_and_commands_are_found_in_what_the_bot_sends(
    fake: FakeTelegram, bot: Bot
) -> None:
    await bot.send_message(GROUP, "ping @admin_user, see https://t.example/@x or /status")
    stored = fake.messages[str(GROUP)][-1]
    assert [(e["type"], e["offset"], e["length"]) for e in stored["entities"]] == [
        ("mention", 5, 11),
        ("url", 22, 20),
        ("bot_command", 46, 7),
    ]
    await bot.send_photo(
        GROUP,
        "https://cdn.example.com/t.jpg",
        caption='<b>@admin_user</b> <a href="tg://user?id=2002">you</a>',
        parse_mode="HTML",
    )
    caption = fake.messages[str(GROUP)][-1]["caption_entities"]
    assert [e["type"] for e in caption] == ["mention", "bold", "text_mention"]
    assert caption[2]["user"]["id"] == 2002
    # An edit is looked at again.
    sent = await bot.send_message(GROUP, "hello")
    assert "entities" not in fake.messages[str(GROUP)][-1]
    await bot.edit_message_text("hello @mod_team", GROUP, sent.message_id)
    assert fake.messages[str(GROUP)][-1]["entities"] == [
        {"type": "mention", "offset": 6, "length": 9}
    ]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("@admin_user", [("mention", "@admin_user")]),
        ("(@ab)", [("mention", "@ab")]),  # stricter than TDLib, which wants 4 characters
        ("@\u2060admin_user", []),  # a word joiner ends it before it starts
        ("x@admin_user me@example.com", [("email", "me@example.com")]),
        ("@" + "a" * 33, []),
        ("@adminé", []),
        ("https://youtube.com/@quinn.", [("url", "https://youtube.com/@quinn")]),
        ("https://x.example/@\u2060q", [("url", "https://x.example/@")]),
        ("/mute@streambot_test 1h", [("bot_command", "/mute@streambot_test")]),
        ("#tag #123 #a#b $USD", [("hashtag", "#tag"), ("cashtag", "$USD")]),
    ],
)
def test_found_entities_follow_tdlib(text: str, found: list[tuple[str, str]]) -> None:
    entities = find_entities(text)
    assert [(e["type"], text[e["offset"] : e["offset"] + e["length"]]) for e in entities] == found


def test_found_entities_give_way_to_links_and_code_except_mentions() -> None:
    text, parsed = parse_html(
        '<a href="https://t.example/">#in https://u.example</a> <code>#c @code_x</code> '
        "<b>#bold</b> <blockquote>#q</blockquote>"
    )
    merged = merge_found_entities(parsed, find_entities(text))
    kinds = [(e["type"], text[e["offset"] : e["offset"] + e["length"]]) for e in merged]
    assert ("hashtag", "#in") not in kinds and ("url", "https://u.example") not in kinds
    assert ("hashtag", "#c") not in kinds
    assert ("mention", "@code_x") in kinds  # the fake's deliberate strictness
    assert ("hashtag", "#bold") in kinds and ("hashtag", "#q") in kinds


# ---- the parser itself (cases from TDLib's test/message_entities.cpp) -----------------------


@pytest.mark.parametrize(
    ("markup", "error"),
    [
        ("🏟 🏟&lt;<abacaba", "Unclosed start tag at byte offset 13"),
        ("🏟 🏟&lt;<abac aba>", 'Unsupported start tag "abac" at byte offset 13'),
        ("🏟 🏟&lt;<i   =aba>", 'Empty attribute name in the tag "i" at byte offset 13'),
        ("🏟 🏟&lt;<i    aba>", 'Can\'t find end tag corresponding to start tag "i"'),
        ("🏟 🏟&lt;<i    aba  =  ", 'Unclosed start tag "i" at byte offset 13'),
        ("🏟 🏟&lt;<i    aba  =  190azAz-.,", "Unexpected end of name token at byte offset 27"),
        ('🏟 🏟&lt;<i    aba  =  "&lt;&gt;&quot;>', "Unclosed start tag at byte offset 13"),
        ("🏟 🏟&lt;</", "Unexpected end tag at byte offset 13"),
        ("🏟 🏟&lt;<b></b></", "Unexpected end tag at byte offset 20"),
        ("🏟 🏟&lt;<i>a</i   ", "Unclosed end tag at byte offset 17"),
        (
            "🏟 🏟&lt;<i>a</em   >",
            'Unmatched end tag at byte offset 17, expected "</i>", found "</em>"',
        ),
        ("&#xDFDF;", "Text contains invalid Unicode characters"),
    ],
)
def test_parse_html_errors_match_tdlib(markup: str, error: str) -> None:
    with pytest.raises(HtmlParseError) as caught:
        parse_html(markup, strict_ampersand=False)
    assert str(caught.value).startswith(error)


@pytest.mark.parametrize(
    ("markup", "text", "entities"),
    [
        ("&ge;&lt;&gt;&amp;&quot;&#12345678;", '&ge;<>&"&#12345678;', []),
        ("🏟 🏟<i>🏟 &lt🏟</i>", "🏟 🏟🏟 <🏟", [("italic", 5, 6)]),
        ("🏟 🏟&lt;<i    aba  =  190azAz-.>a</i>", "🏟 🏟<a", [("italic", 6, 1)]),
        ("🏟 🏟&lt;<i>🏟 🏟&lt;</>", "🏟 🏟<🏟 🏟<", [("italic", 6, 6)]),
        ("<a href=telegram.org> </a>", " ", [("text_link", 0, 1, "http://telegram.org/")]),
        ("<a>telegram.org </a>", "telegram.org ", []),
        ("<code><i><b> </b></i></code>", " ", [("code", 0, 1), ("bold", 0, 1), ("italic", 0, 1)]),
        ('<pre><code class="language-fift">x</></>', "x", [("pre", 0, 1, "fift")]),
        ("<blockquote expandable>q</blockquote>", "q", [("expandable_blockquote", 0, 1)]),
        ('<span class="tg-spoiler">s</span>', "s", [("spoiler", 0, 1)]),
        ('<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>', "👍", [("custom_emoji", 0, 2)]),
    ],
)
def test_parse_html_results_match_tdlib(
    markup: str, text: str, entities: list[tuple[object, ...]]
) -> None:
    got_text, got_entities = parse_html(markup, strict_ampersand=False)
    assert got_text == text
    assert len(got_entities) == len(entities)
    # (type, offset, length[, url or language]): the dicts keep that key order.
    pairs = zip(got_entities, entities, strict=True)
    assert [tuple(got.values())[: len(want)] for got, want in pairs] == entities


async def test_a_forum_takes_messages_in_open_topics_only(fake: FakeTelegram, bot: Bot) -> None:
    fake.add_chat(-1009990001, "supergroup", is_forum=True, topics=[5, 6])
    fake.set_topic(-1009990001, 5, "closed")
    fake.set_topic(-1009990001, 6, "deleted")
    for thread, error in ((5, "TOPIC_CLOSED"), (6, "message thread not found"), (1, "thread")):
        with pytest.raises(BadRequest, match=f"(?i){error}"):
            await bot.send_message(-1009990001, "x", message_thread_id=thread)
    # General takes the message without a thread id.
    assert (await bot.send_message(-1009990001, "in General")).text == "in General"


# ---- a group upgraded to a supergroup, and what the bot may do in a chat ---------------

OLD_GROUP = -4242


async def test_a_migrated_group_refuses_writes_with_the_new_id_and_announces_it(
    fake: FakeTelegram, bot: Bot
) -> None:
    group = fake.add_chat(OLD_GROUP, "group", title="Friends", admins={ADMIN}, owner_id=ADMIN)
    card = await bot.send_message(OLD_GROUP, "card before")
    new_id = fake.migrate_chat(OLD_GROUP)
    assert str(new_id).startswith("-100") and group.migrated_to == new_id

    for write in (
        bot.send_message(OLD_GROUP, "hello"),
        bot.send_photo(OLD_GROUP, "https://cdn.example.com/a.jpg"),
        bot.edit_message_text("edited", chat_id=OLD_GROUP, message_id=card.message_id),
        bot.delete_message(OLD_GROUP, card.message_id),
        bot.get_chat_administrators(OLD_GROUP),
        bot.get_chat_member(OLD_GROUP, ADMIN),
    ):
        with pytest.raises(ChatMigrated) as caught:
            await write
        assert caught.value.new_chat_id == new_id
    refused = fake.calls[-1]
    assert refused.status == 400
    assert refused.response == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": new_id},
    }
    # Reads of the old group still answer (the Bot API server checks only writes).
    assert (await bot.get_chat(OLD_GROUP)).type == "group"
    assert (await bot.get_chat_member(OLD_GROUP, fake.bot_id)).status == "member"

    # The supergroup: same title, members and admins; a history of its own.
    chat = await bot.get_chat(new_id)
    assert (chat.type, chat.title) == ("supergroup", "Friends")
    assert (await bot.get_chat_member(new_id, ADMIN)).status == "creator"
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("edited", chat_id=new_id, message_id=card.message_id)
    sent = await bot.send_message(new_id, "hello again")
    assert fake.messages[str(new_id)][-1]["text"] == "hello again"
    assert sent.chat.type == "supergroup"

    updates = await bot.get_updates(timeout=0)
    service = [u.message for u in updates if u.message is not None]
    assert [(m.chat.id, m.migrate_to_chat_id, m.migrate_from_chat_id) for m in service] == [
        (OLD_GROUP, new_id, None),
        (new_id, None, OLD_GROUP),
    ]
    assert all(m.from_user is not None and m.from_user.id == ADMIN for m in service)


async def test_a_migration_can_be_announced_later_and_only_groups_migrate(
    fake: FakeTelegram, bot: Bot
) -> None:
    fake.add_chat(OLD_GROUP, "group", title="Friends")
    new_id = fake.migrate_chat(OLD_GROUP, -1009999, service_messages=False)
    assert new_id == -1009999
    assert await bot.get_updates(timeout=0) == ()
    fake.announce_migration(OLD_GROUP)
    assert len(await bot.get_updates(timeout=0)) == 2
    with pytest.raises(ValueError, match="only a group"):
        fake.migrate_chat(GROUP)
    with pytest.raises(ValueError, match="already"):
        fake.migrate_chat(OLD_GROUP)


async def test_chat_permissions_and_the_bots_rights_bind_its_sends(
    fake: FakeTelegram, bot: Bot
) -> None:
    cover = "https://cdn.example.com/a.jpg"
    restricted = fake.add_chat(-100321, "supergroup", title="Quiet", bot_status="restricted")
    restricted.bot_rights = {"can_send_messages": False, "can_send_photos": False}
    member = await bot.get_chat_member(-100321, fake.bot_id)
    assert isinstance(member, ChatMemberRestricted)
    assert (member.is_member, member.can_send_messages, member.can_send_photos) == (
        True,
        False,
        False,
    )
    assert member.can_send_polls is True
    with pytest.raises(BadRequest, match=r"(?i)not enough rights to send text messages"):
        await bot.send_message(-100321, "hi")
    with pytest.raises(BadRequest, match=r"(?i)not enough rights to send photos"):
        await bot.send_photo(-100321, cover)

    # A plain member is bound by the chat's default permissions.
    media = fake.add_chat(-100654, "supergroup", title="No media")
    media.permissions = {"can_send_photos": False}
    full = await bot.get_chat(-100654)
    assert full.permissions is not None
    assert (full.permissions.can_send_messages, full.permissions.can_send_photos) == (True, False)
    await bot.send_message(-100654, "text is fine")
    with pytest.raises(BadRequest, match=r"(?i)not enough rights to send photos"):
        await bot.send_photo(-100654, cover)
    # An administrator is not.
    media.bot_status = "administrator"
    await bot.send_photo(-100654, cover)

    # A channel wants an administrator that may post.
    channel = fake.add_chat(-100987, "channel", title="News")
    channel.bot_rights = {"can_post_messages": False}
    admin = await bot.get_chat_member(-100987, fake.bot_id)
    assert isinstance(admin, ChatMemberAdministrator)
    assert admin.can_post_messages is False
    with pytest.raises(BadRequest, match=r"(?i)need administrator rights in the channel"):
        await bot.send_message(-100987, "news")


async def test_reads_where_the_bot_is_not_a_member_answer_as_the_bot_api_server_does(
    fake: FakeTelegram, bot: Bot
) -> None:
    fake.add_chat(-4343, "group", title="Left", bot_status="left")
    fake.add_chat(-4444, "group", title="Kicked", bot_status="kicked")
    fake.add_chat(-100111, "supergroup", title="Private", bot_status="left")
    fake.add_chat(-100222, "supergroup", title="Public", username="pub", bot_status="left")
    fake.add_chat(-100333, "supergroup", title="Banned", bot_status="kicked")
    # A group still answers reads; sends say why not.
    assert (await bot.get_chat_member(-4343, fake.bot_id)).status == "left"
    assert (await bot.get_chat_member(-4444, fake.bot_id)).status == "kicked"
    with pytest.raises(Forbidden, match="not a member of the group chat"):
        await bot.send_message(-4343, "hi")
    # A private supergroup answers nothing; a public one answers reads.
    with pytest.raises(Forbidden, match="not a member of the supergroup chat"):
        await bot.get_chat(-100111)
    assert (await bot.get_chat(-100222)).title == "Public"
    with pytest.raises(Forbidden, match="not a member of the supergroup chat"):
        await bot.send_message(-100222, "hi")
    with pytest.raises(Forbidden, match="kicked from the supergroup chat"):
        await bot.get_chat(-100333)
