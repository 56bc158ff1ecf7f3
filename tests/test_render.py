"""Rendering events into Discord, Telegram and console messages, as users will see them."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.errors import TemplateProblem
from bot.events import NOTIFIED_KINDS, Event, LiveInfo
from bot.registry import KNOWN_KINDS, message_formats
from bot.render import (
    Renderer,
    builtin_templates_dir,
    datetime_filter,
    duration_filter,
    join_categories,
    reltime,
)
from bot.samples import sample_event, sample_events
from bot.sinks.console import FORMAT as CONSOLE
from bot.sinks.console import ConsoleMessage
from bot.sinks.discord.format import FORMAT as DISCORD
from bot.sinks.discord.format import KIND_COLOURS, DiscordMessage
from bot.sinks.telegram.format import FORMAT as TELEGRAM
from bot.sinks.telegram.format import TelegramMessage
from tests.test_markup import (
    HIDDEN,
    MENTION,
    telegram_pings,
    telegram_problems,
    telegram_visible,
    unescaped,
    utf16,
)

NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
SINKS = ("console", "discord", "telegram")
FORMATS = message_formats()
CONSOLE_TEXT_MAX = CONSOLE.text_max


def preview(message: ConsoleMessage | DiscordMessage | TelegramMessage) -> str:
    """What `python -m bot render` prints for this message."""
    fmt = {ConsoleMessage: CONSOLE, DiscordMessage: DISCORD, TelegramMessage: TELEGRAM}
    return fmt[type(message)].preview(message)  # type: ignore[attr-defined]


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(formats=FORMATS, clock=lambda: NOW)


def event(kind: str = "live_start", **changes: object) -> Event:
    return sample_event(kind).with_changes(**changes)


def live(**changes: Any) -> LiveInfo:
    base = sample_event("live_start").live
    assert base is not None
    return replace(base, **changes)


def render(
    renderer: Renderer, sink: str, ev: Event
) -> ConsoleMessage | DiscordMessage | TelegramMessage:
    if sink == "discord":
        return renderer.render(DISCORD, ev, mention_roles=[1234])
    if sink == "telegram":
        return renderer.render(TELEGRAM, ev)
    return renderer.render(CONSOLE, ev)


def discord_strings(message: DiscordMessage) -> list[str]:
    """Every piece of text Discord would display from the message."""
    out = [message.content]
    embed = message.embed
    out += [embed.get("title", ""), embed.get("description", "")]
    out += [embed.get("author", {}).get("name", ""), embed.get("footer", {}).get("text", "")]
    for item in embed.get("fields", []):
        out += [item["name"], item["value"]]
    return out


def assert_discord_limits(message: DiscordMessage) -> None:
    embed = message.embed
    assert utf16(message.content) <= 2000
    assert utf16(embed.get("title", "")) <= 256
    assert utf16(embed.get("description", "")) <= 4096
    assert utf16(embed.get("author", {}).get("name", "")) <= 256
    assert utf16(embed.get("footer", {}).get("text", "")) <= 2048
    for item in embed.get("fields", []):
        assert utf16(item["name"]) <= 256
        assert utf16(item["value"]) <= 1024
    assert sum(utf16(text) for text in discord_strings(message)[1:]) <= 6000


# --- every kind, every sink ------------------------------------------------------------


@pytest.mark.parametrize("sink", SINKS)
@pytest.mark.parametrize("kind", sorted(KNOWN_KINDS))
def test_every_kind_renders_for_every_sink(renderer: Renderer, sink: str, kind: str) -> None:
    ev = sample_event(kind)
    message = render(renderer, sink, ev)
    shown = preview(message)
    assert ev.name in shown
    if isinstance(message, TelegramMessage):
        assert not telegram_problems(message.text)
    if isinstance(message, DiscordMessage):
        assert_discord_limits(message)
        assert message.content or message.embed


@pytest.mark.parametrize("sink", SINKS)
@pytest.mark.parametrize("kind", NOTIFIED_KINDS)
def test_every_notified_kind_renders_with_a_terse_event(
    renderer: Renderer, sink: str, kind: str
) -> None:
    # Livepeer and FastPix often send no title, categories, names or URLs.
    ev = event(
        kind,
        display_name=None,
        url=None,
        live=None,
        old_live=None,
        error=None,
        started_at=None,
        ended_at=None,
        details={},
    )
    assert preview(render(renderer, sink, ev)).strip()


def test_the_built_in_templates_pass_their_own_check(renderer: Renderer) -> None:
    assert renderer.check(sample_events()) == []


def test_each_notified_kind_has_its_own_look(renderer: Renderer) -> None:
    texts = {kind: renderer.render(CONSOLE, sample_event(kind)).text for kind in NOTIFIED_KINDS}
    assert "is live" in texts["live_start"]
    assert (
        "Cozy ranked grind" in texts["title_change"] and "Diamond or bust" in texts["title_change"]
    )
    assert "Just Chatting" in texts["category_change"]
    assert "League of Legends" in texts["category_change"]
    assert "ended" in texts["live_end"] and "2h 13m" in texts["live_end"]
    assert "Connection reset by peer" in texts["error"]


# --- Telegram --------------------------------------------------------------------------

HOSTILE_HTML = "<b>x</b> & <script>alert(1)</script> \"q\" 'a'"


def test_telegram_stream_text_arrives_escaped(renderer: Renderer) -> None:
    ev = event(display_name="A&B <i>", live=live(title=HOSTILE_HTML, categories=("<tg-spoiler>",)))
    text = renderer.render(TELEGRAM, ev).text
    assert not telegram_problems(text), text
    assert "&lt;b&gt;x&lt;/b&gt; &amp; &lt;script&gt;" in text
    assert "<script>" not in text and "<i>" not in text
    shown = telegram_visible(text)
    assert HOSTILE_HTML in shown and "A&B <i>" in shown and "<tg-spoiler>" in shown


def test_telegram_error_text_arrives_escaped(renderer: Renderer) -> None:
    text = renderer.render(TELEGRAM, event("error", error="</pre><b>boom</b> & more")).text
    assert not telegram_problems(text)
    assert "</pre><b>boom</b> & more" in telegram_visible(text)


@pytest.mark.parametrize(
    "ev",
    [
        event("live_start", live=live(title="Huge & <title> 😀 " * 800)),
        event("title_change", old_live=live(title="<old> & " * 2000), live=live(title="x" * 9000)),
        event("error", error="Traceback <frame> & stuff\n" * 1000),
        event("video_file_finish", details={"path": "&<>" * 5000}),
    ],
    ids=lambda ev: ev.kind,
)
def test_telegram_limits_hold_for_huge_text_and_the_cut_still_parses(
    renderer: Renderer, ev: Event, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.render"):
        message = renderer.render(TELEGRAM, ev)
    assert not telegram_problems(message.text)
    assert utf16(telegram_visible(message.text)) <= 4096
    assert telegram_visible(message.text).endswith("…")
    assert message.caption is None  # too long for a photo caption: sent as a message
    assert any(
        "telegram" in r.getMessage() and ev.kind in r.getMessage() and "text" in r.getMessage()
        for r in caplog.records
    )


def test_telegram_photo_carries_the_text_as_caption_when_it_fits(renderer: Renderer) -> None:
    message = renderer.render(TELEGRAM, sample_event("live_start"))
    cover = sample_event("live_start").live.cover  # type: ignore[union-attr]
    assert message.photo_url is not None and message.photo_url.startswith(f"{cover}?v=")
    assert message.caption == message.text
    assert message.button_url == "https://www.twitch.tv/auroravale"
    assert message.button_text and "Watch" in message.button_text
    assert message.disable_preview is True


def test_telegram_medium_text_goes_as_a_message_with_no_caption(renderer: Renderer) -> None:
    message = renderer.render(TELEGRAM, event(live=live(title="t" * 2000)))
    assert message.photo_url is not None
    assert message.caption is None
    assert "t" * 2000 in message.text


def test_telegram_error_has_no_button_and_no_photo(renderer: Renderer) -> None:
    message = renderer.render(TELEGRAM, sample_event("error"))
    assert message.button_text is None and message.button_url is None
    assert message.photo_url is None and message.caption is None


def test_telegram_button_label_is_plain_text(renderer: Renderer) -> None:
    message = renderer.render(TELEGRAM, event(platform="R&D <tv>"))
    assert message.button_text == "▶️ Watch on R&d <tv>"


# --- Discord ---------------------------------------------------------------------------

HOSTILE_MD = "@everyone @here <@123> <@!123> <@&456> <#789> **bold** [phish](http://evil.example)"


@pytest.mark.parametrize("kind", NOTIFIED_KINDS)
def test_discord_stream_text_is_inert(renderer: Renderer, kind: str) -> None:
    ev = event(
        kind,
        display_name=f"N1 {HOSTILE_MD} N2",
        live=live(title=f"T1 {HOSTILE_MD} T2", categories=(f"C1 {HOSTILE_MD} C2",)),
        old_live=live(title=f"O1 {HOSTILE_MD} O2", categories=(f"P1 {HOSTILE_MD} P2",)),
        error=f"E1 {HOSTILE_MD} E2",
    )
    message = renderer.render(DISCORD, ev)
    strings = discord_strings(message)
    assert not MENTION.search("\n".join(strings)), strings
    # Markdown is rendered in all but the author and footer, and not in code blocks.
    embed = message.embed
    markdown = [message.content, embed.get("title", ""), embed.get("description", "")]
    markdown += [item["value"] for item in embed.get("fields", [])]
    markdown = [re.sub(r"```[\s\S]*?```", "", text) for text in markdown]
    assert "[phish](http://evil.example)" not in "\n".join(markdown)
    for start, end in (("N1", "N2"), ("T1", "T2"), ("C1", "C2"), ("O1", "O2"), ("P1", "P2")):
        for text in markdown:
            for segment in re.findall(f"{start}(.*?){end}", text):
                # No markdown left once escapes are taken out: no bold, no link brackets.
                assert not re.search(r"[*\[\]]", unescaped(segment)), segment
    assert message.allowed_mentions["parse"] == []


def test_discord_error_text_in_a_code_block_stays_inside_it(renderer: Renderer) -> None:
    message = renderer.render(DISCORD, event("error", error="``` @everyone\n**x**```"))
    description = message.embed["description"]
    assert description.startswith("```") and description.count("```") == 2


def test_discord_role_mentions_only_configured_roles_and_only_on_live_start(
    renderer: Renderer,
) -> None:
    message = renderer.render(DISCORD, sample_event("live_start"), mention_roles=[111, 222, 111])
    assert message.content.startswith("<@&111> <@&222> ")
    assert message.allowed_mentions == {
        "parse": [],
        "roles": ["111", "222"],
        "users": [],
        "replied_user": False,
    }
    for kind in ("title_change", "category_change", "live_end", "error", "video_file_finish"):
        other = renderer.render(DISCORD, sample_event(kind), mention_roles=[111])
        assert "<@&" not in other.content
        assert other.allowed_mentions["roles"] == []


def test_discord_embed_has_the_stream_details(renderer: Renderer) -> None:
    message = renderer.render(DISCORD, sample_event("live_start"))
    embed = message.embed
    assert embed["title"] == "Cozy ranked grind 🌙 road to Diamond \\| !socials"
    assert embed["url"] == "https://www.twitch.tv/auroravale"
    assert embed["author"]["name"] == "Aurora Vale"
    assert embed["author"]["icon_url"].startswith("https://static-cdn.jtvnw.net/")
    assert embed["image"]["url"].partition("?")[0].endswith("1280x720.jpg")
    assert embed["fields"] == [
        {"name": "Category", "value": "Just Chatting · Music", "inline": True}
    ]
    assert embed["color"] == KIND_COLOURS["live_start"]
    assert datetime.fromisoformat(embed["timestamp"]) == datetime(
        2026, 3, 11, 5, 22, 38, tzinfo=UTC
    )
    assert "<t:1773206558:R>" in embed["description"]  # discord_time is not escaped
    json.dumps(message.allowed_mentions)  # API-shaped, serialisable
    json.dumps(embed)


def test_discord_author_and_footer_are_plain_text(renderer: Renderer) -> None:
    message = renderer.render(DISCORD, event(display_name="cool_guy *42*", platform="my_tv"))
    assert message.embed["author"]["name"] == "cool_guy *42*"
    assert message.embed["footer"]["text"] == "My_tv"
    assert "cool\\_guy \\*42\\*" in message.content  # markdown is rendered there


def test_discord_limits_hold_for_huge_inputs(
    renderer: Renderer, caplog: pytest.LogCaptureFixture
) -> None:
    huge = "**x** [a](b) _y_ \\ 😀 " * 1000
    ev = event(
        "title_change",
        display_name=huge,
        platform=huge,
        live=live(title=huge, categories=(huge, huge)),
        old_live=live(title=huge),
    )
    with caplog.at_level(logging.WARNING, logger="bot.render"):
        message = renderer.render(DISCORD, ev)
    assert_discord_limits(message)
    # Every part was at its own limit, so the 6000 total is what cut the description.
    assert sum(utf16(text) for text in discord_strings(message)[1:]) > 5900
    logged = " ".join(r.getMessage() for r in caplog.records)
    for part in (
        "content",
        "embed.title",
        "embed.description",
        "embed.author.name",
        "embed.footer.text",
        "Category",
    ):
        assert part in logged
    assert "discord title_change" in logged


def test_discord_huge_content_keeps_the_role_mentions(renderer: Renderer) -> None:
    message = renderer.render(DISCORD, event(display_name="n" * 5000), mention_roles=[42])
    assert message.content.startswith("<@&42> ")
    assert utf16(message.content) <= 2000


# --- console ---------------------------------------------------------------------------


def test_console_strips_terminal_escapes_from_stream_text(renderer: Renderer) -> None:
    ev = event(
        display_name="\x1b]0;pwned\x07Aurora",
        live=live(title="\x1b[31mRED\x1b[0m title\x1b[2J", categories=("Music\x00",)),
    )
    text = renderer.render(CONSOLE, ev).text
    assert "\x1b" not in text and "\x07" not in text and "\x00" not in text
    assert "RED title" in text and "Aurora" in text and "Music" in text


def test_console_notification_is_cut_to_its_limit_and_the_cut_logged_once(
    renderer: Renderer, caplog: pytest.LogCaptureFixture
) -> None:
    ev = event(live=live(title="word " * 200_000))
    with caplog.at_level(logging.WARNING, logger="bot.render"):
        text = renderer.render(CONSOLE, ev).text
    assert utf16(text) <= CONSOLE_TEXT_MAX
    assert text.startswith("[live_start] Aurora Vale is live") and text.endswith("…")
    cuts = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert cuts == [
        f"console live_start: text is longer than {CONSOLE_TEXT_MAX} characters; truncated"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bot.render"):
        renderer.render(CONSOLE, sample_event("live_start"))
    assert not caplog.records, "an ordinary notification is not cut"


def test_console_live_end_shows_the_duration(renderer: Renderer) -> None:
    text = renderer.render(CONSOLE, sample_event("live_end")).text
    assert "2h 13m" in text and "Aurora Vale" in text


# --- URLs ------------------------------------------------------------------------------


def test_non_http_urls_are_dropped_everywhere(renderer: Renderer) -> None:
    ev = event(
        url="javascript:alert(1)",
        live=live(cover="data:image/png;base64,AAAA", avatar="file:///etc/passwd"),
    )
    discord = renderer.render(DISCORD, ev)
    assert "url" not in discord.embed and "image" not in discord.embed
    assert "icon_url" not in discord.embed["author"]
    telegram = renderer.render(TELEGRAM, ev)
    assert telegram.photo_url is None and telegram.caption is None
    assert telegram.button_url is None and telegram.button_text is None
    console = renderer.render(CONSOLE, ev)
    for shown in (preview(discord), preview(telegram), console.text):
        assert "javascript" not in shown and "data:" not in shown and "file:" not in shown


# --- what every sink keeps out of stream text -------------------------------------------

SNEAKY = (
    "@admin_user \u202eevil\u202c \u2066iso\u2069 line\u2028para\u2029nel\x85@here_ @everyone1"
)


def hostile_event(kind: str) -> Event:
    return event(
        kind,
        display_name=f"N {SNEAKY}",
        live=live(title=f"T {SNEAKY}", categories=(f"C {SNEAKY}",)),
        old_live=live(title=f"O {SNEAKY}", categories=(f"P {SNEAKY}",)),
        error=f"E {SNEAKY}",
        details={"note": f"D {SNEAKY}"},
    )


def shown_strings(message: ConsoleMessage | DiscordMessage | TelegramMessage) -> list[str]:
    if isinstance(message, DiscordMessage):
        return discord_strings(message)
    if isinstance(message, TelegramMessage):
        return [message.text, message.caption or "", message.button_text or ""]
    return [message.text]


@pytest.mark.parametrize("sink", SINKS)
@pytest.mark.parametrize("kind", sorted(KNOWN_KINDS))
def test_no_sink_shows_bidi_controls_or_line_separators_from_stream_text(
    renderer: Renderer, sink: str, kind: str
) -> None:
    strings = shown_strings(render(renderer, sink, hostile_event(kind)))
    assert not HIDDEN.search("".join(strings)), strings


@pytest.mark.parametrize("kind", sorted(KNOWN_KINDS))
def test_telegram_stream_text_mentions_nobody_wherever_it_lands(
    renderer: Renderer, kind: str
) -> None:
    message = renderer.render(TELEGRAM, hostile_event(kind))
    for html_text in (message.text, message.caption or ""):
        assert telegram_pings(html_text) == [], html_text
    # The names are still there to read: the word joiners are invisible.
    shown = telegram_visible(message.text).replace("\u2060", "")
    assert "@admin_user evil iso line para nel @here_ @everyone1" in shown


def test_telegram_filters_that_give_html_keep_the_breaks_and_leave_links_whole(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        "telegram/live_start.j2",
        '{% block text %}<a href="{{ streamer.url }}">{{ streamer.url }}</a> {{ live.title|e }} '
        '{{ live.categories|join(", ") }} {{ streamer.name|indent }}{% endblock %}',
    )
    ev = event(
        url="https://youtube.com/@quinn",
        display_name="@admin_user\u2066",
        live=live(title="@admin_user & co\u202e", categories=("@mod_team", "@here_")),
    )
    message = Renderer(formats=FORMATS, user_dir=tmp_path).render(TELEGRAM, ev)
    assert 'href="https://youtube.com/@quinn"' in message.text
    # Shown as text the URL is one link entity, which takes in its "@quinn".
    assert telegram_pings(message.text) == [], message.text
    assert not HIDDEN.search(message.text)
    shown = telegram_visible(message.text).replace("\u2060", "")
    assert shown == "https://youtube.com/@quinn @admin_user & co @mod_team, @here_ @admin_user"


def test_discord_values_that_are_already_markup_lose_everyone_and_bidi(tmp_path: Path) -> None:
    write(
        tmp_path,
        "discord/live_start.j2",
        '{% extends "discord/base.j2" %}{% block content %}{{ live.title|e }}{% endblock %}',
    )
    ev = event(live=live(title="@everyone1 \u202eevil\u2028x"))
    message = Renderer(formats=FORMATS, user_dir=tmp_path).render(DISCORD, ev)
    assert not MENTION.search(message.content) and not HIDDEN.search(message.content)
    assert message.content.replace("\u200b", "") == "@everyone1 evil x"


# --- user templates --------------------------------------------------------------------


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_user_template_overrides_the_built_in_one(tmp_path: Path) -> None:
    write(
        tmp_path, "console/live_start.j2", "{% block text %}LIVE {{ streamer.name }}{% endblock %}"
    )
    renderer = Renderer(formats=FORMATS, user_dir=tmp_path, clock=lambda: NOW)
    assert renderer.render(CONSOLE, sample_event("live_start")).text == "LIVE Aurora Vale"
    # Kinds the user did not override keep the built-in look.
    assert "ended the stream" in renderer.render(CONSOLE, sample_event("live_end")).text


def test_a_user_template_without_blocks_is_the_whole_text(tmp_path: Path) -> None:
    write(
        tmp_path, "telegram/live_start.j2", "<b>{{ streamer.name }}</b> is on: {{ live.title }}\n"
    )
    message = Renderer(formats=FORMATS, user_dir=tmp_path).render(
        TELEGRAM, event(live=live(title="a<b"))
    )
    assert message.text == "<b>Aurora Vale</b> is on: a&lt;b"


def test_a_user_base_template_changes_every_kind_that_extends_it(tmp_path: Path) -> None:
    base = (builtin_templates_dir() / "discord/base.j2").read_text()
    colour = "{% block colour %}#123456{% endblock %}"
    write(tmp_path, "discord/base.j2", base.replace("{% block colour %}{% endblock %}", colour))
    message = Renderer(formats=FORMATS, user_dir=tmp_path).render(
        DISCORD, sample_event("live_end")
    )
    assert message.embed["color"] == 0x123456


def test_a_user_template_can_turn_on_link_previews(tmp_path: Path) -> None:
    write(
        tmp_path,
        "telegram/live_end.j2",
        '{% extends "telegram/base.j2" %}{% block link_preview %}yes{% endblock %}',
    )
    assert (
        Renderer(formats=FORMATS, user_dir=tmp_path)
        .render(TELEGRAM, sample_event("live_end"))
        .disable_preview
        is False
    )


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("{% block text %}\n{{ live.titel }}{% endblock %}", "'live' has no attribute 'titel'"),
        ("{% block text %}\n{{ streamer.name }{% endblock %}", "line 2"),
        ('{% extends "console/nope.j2" %}', "nope.j2"),
        ("{% block text %}{{ live.title|duration }}{% endblock %}", "TypeError"),
        ("{% block text %}{% endblock %}", "empty"),
    ],
)
def test_a_broken_user_template_falls_back_to_the_built_in_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, source: str, problem: str
) -> None:
    write(tmp_path, "console/live_start.j2", source)
    with caplog.at_level(logging.ERROR, logger="bot.render"):
        text = (
            Renderer(formats=FORMATS, user_dir=tmp_path)
            .render(CONSOLE, sample_event("live_start"))
            .text
        )
    assert text.startswith("[live_start] Aurora Vale is live")
    [record] = [r for r in caplog.records if r.name == "bot.render"]
    assert record.levelno == logging.ERROR
    assert "console/live_start.j2" in record.getMessage() and problem in record.getMessage()


def test_invalid_telegram_html_from_a_user_template_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(
        tmp_path,
        "telegram/live_start.j2",
        "{% block text %}<div>{{ live.title }}</div>{% endblock %}",
    )
    with caplog.at_level(logging.ERROR, logger="bot.render"):
        text = (
            Renderer(formats=FORMATS, user_dir=tmp_path)
            .render(TELEGRAM, sample_event("live_start"))
            .text
        )
    assert "<div>" not in text and "is live" in text
    assert "unsupported tag <div>" in caplog.text


def test_a_broken_built_in_template_raises_template_problem(tmp_path: Path) -> None:
    write(tmp_path, "console/default.j2", "{% block text %}{{ live.titel }}{% endblock %}")
    renderer = Renderer(formats=FORMATS, builtin_dir=tmp_path)
    with pytest.raises(TemplateProblem, match=r"console/default.j2 line 1: 'live' has no attr"):
        renderer.render(CONSOLE, sample_event("live_start"))


# --- check() ---------------------------------------------------------------------------


def test_check_reports_a_syntax_error_with_template_name_and_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "discord/live_start.j2",
        '{% extends "discord/base.j2" %}\n{% block content %}\nLive: {{ streamer.name } }}\n'
        "{% endblock %}\n",
    )
    assert Renderer(formats=FORMATS, user_dir=tmp_path).check(sample_events()) == [
        "discord/live_start.j2 line 3: unexpected '}'"
    ]


def test_check_reports_an_undefined_attribute(tmp_path: Path) -> None:
    write(
        tmp_path,
        "telegram/live_end.j2",
        '{% extends "telegram/base.j2" %}\n{% block text %}{{ live.titel }}{% endblock %}\n',
    )
    assert Renderer(formats=FORMATS, user_dir=tmp_path).check(sample_events()) == [
        "telegram/live_end.j2 line 2: 'live' has no attribute 'titel'"
    ]


def test_check_reports_a_template_that_fails_without_stream_details(tmp_path: Path) -> None:
    write(tmp_path, "console/title_change.j2", "{% block text %}{{ old.title }}{% endblock %}")
    [problem] = Renderer(formats=FORMATS, user_dir=tmp_path).check(sample_events())
    assert problem.startswith("console/title_change.j2 line 1: 'None' has no attribute 'title'")
    assert "no stream details" in problem


def test_check_reports_a_bad_switch_value(tmp_path: Path) -> None:
    write(
        tmp_path,
        "telegram/live_start.j2",
        '{% extends "telegram/base.j2" %}{% block photo %}maybe{% endblock %}',
    )
    [problem] = Renderer(formats=FORMATS, user_dir=tmp_path).check(sample_events())
    assert "telegram/live_start.j2" in problem and "'photo' must be yes or no" in problem


def test_check_is_clean_for_good_user_templates(tmp_path: Path) -> None:
    write(tmp_path, "console/live_start.j2", "{{ streamer.name }} is live: {{ live.title }}")
    assert Renderer(formats=FORMATS, user_dir=tmp_path).check(sample_events()) == []


# --- filters ---------------------------------------------------------------------------


def test_filters_in_a_template(tmp_path: Path) -> None:
    write(
        tmp_path,
        "console/live_end.j2",
        "{{ duration|duration }}|{{ 135|duration }}|{{ started_at|reltime }}|"
        "{{ ended_at|reltime }}|{{ started_at|datetime }}|"
        "{{ started_at|datetime('%H:%M') }}|{{ live.categories|join_categories }}|"
        "{{ ['A', 'B']|join_categories(', ') }}",
    )
    renderer = Renderer(formats=FORMATS, user_dir=tmp_path, clock=lambda: NOW)
    ev = event("live_end", live=live(categories=("Just Chatting", "Music")))
    assert renderer.render(CONSOLE, ev).text == (
        "2h 13m|2m 15s|2 hours ago|23 minutes ago|Mar 11, 2026, 5:22\u202fAM UTC|05:22|"
        "Just Chatting · Music|A, B"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(hours=2, minutes=13, seconds=41), "2h 13m"),
        (45, "45s"),
        (3600.0, "1h"),
        (timedelta(0), "0s"),
        (None, ""),
    ],
)
def test_duration_filter(value: object, expected: str) -> None:
    assert duration_filter(value) == expected


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (NOW - timedelta(minutes=5), "5 minutes ago"),
        (NOW + timedelta(minutes=3), "in 3 minutes"),
        (NOW - timedelta(seconds=10), "just now"),
        (NOW - timedelta(hours=1, minutes=59), "1 hour ago"),
        (NOW - timedelta(days=3), "3 days ago"),
        (NOW.replace(tzinfo=None) - timedelta(minutes=1), "1 minute ago"),  # naive is UTC
        (None, ""),
    ],
)
def test_reltime(moment: datetime | None, expected: str) -> None:
    assert reltime(moment, NOW) == expected


def test_datetime_filter() -> None:
    moment = datetime(2026, 3, 11, 6, 22, tzinfo=UTC).astimezone()
    # CLDR's English: a narrow no-break space before AM.
    assert datetime_filter(moment) == "Mar 11, 2026, 6:22\u202fAM UTC"
    assert datetime_filter(NOW.replace(tzinfo=None), "%d.%m.%Y") == "11.03.2026"
    assert datetime_filter("2026-03-11T05:22:38Z") == "Mar 11, 2026, 5:22\u202fAM UTC"
    assert datetime_filter(None) == ""


def test_join_categories() -> None:
    assert join_categories(("Just Chatting", "Music")) == "Just Chatting · Music"
    assert join_categories(["A", "", "B"], " / ") == "A / B"
    assert join_categories(()) == ""
    assert join_categories(None) == ""


# --- sandbox ---------------------------------------------------------------------------


def test_templates_are_sandboxed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(
        tmp_path,
        "console/live_start.j2",
        "{% block text %}{{ live.__class__.__mro__ }}{{ details.update(x=1) }}{% endblock %}",
    )
    with caplog.at_level(logging.ERROR, logger="bot.render"):
        text = (
            Renderer(formats=FORMATS, user_dir=tmp_path)
            .render(CONSOLE, sample_event("live_start"))
            .text
        )
    assert "is live" in text
    assert "unsafe" in caplog.text


def test_stream_text_is_never_compiled_as_a_template(renderer: Renderer) -> None:
    text = renderer.render(
        CONSOLE, event(live=live(title="{{ 7*7 }} {% if 1 %}x{% endif %}"))
    ).text
    assert "{{ 7*7 }} {% if 1 %}x{% endif %}" in text and "49" not in text


# ---- fresh cover URLs ----------------------------------------------------------------


def _cover_of(renderer: Renderer, event: Event) -> tuple[str | None, str | None]:
    """(Discord's embed image, Telegram's photo) for one event."""
    embed = renderer.render(DISCORD, event).embed
    photo = renderer.render(TELEGRAM, event).photo_url
    return embed.get("image", {}).get("url"), photo


def test_a_cover_gets_a_new_url_per_card_and_edit_and_the_same_on_a_retry(
    renderer: Renderer,
) -> None:
    # Discord and Telegram cache images by URL: a cover URL that never changes
    # (a "latest frame" URL) would show the frame of the first card for weeks.
    cover = "https://cdn.example/live/quinn.jpg"
    start = replace(sample_event("live_start"), live=LiveInfo(title="Day 1", cover=cover))
    edit = replace(start, event_id="title-change-1")
    first, again, edited = (_cover_of(renderer, e) for e in (start, start, edit))
    for url in (*first, *edited):
        assert url is not None and re.fullmatch(re.escape(cover) + r"\?v=[0-9a-f]{8}", url)
    assert first[0] == first[1], "one card shows one URL on both platforms"
    assert again == first, "a retry of the same message sends the same request"
    assert edited[0] != first[0], "an edit makes the platform fetch the cover again"


@pytest.mark.parametrize(
    "cover",
    [
        # Signed: any change to the query breaks the signature.
        "https://bucket.s3.amazonaws.com/q.jpg?X-Amz-Signature=abc&X-Amz-Expires=60",
        # Already made fresh by the sender, or read by its server.
        "https://cdn.example/frame.jpg?t=1712345678",
        "https://cdn.example/frame.jpg#large",
    ],
)
def test_a_cover_with_a_query_or_fragment_is_left_untouched(
    renderer: Renderer, cover: str
) -> None:
    event = replace(sample_event("live_start"), live=LiveInfo(title="Day 1", cover=cover))
    assert _cover_of(renderer, event) == (cover, cover)


# ---- overrides nothing uses ----------------------------------------------------------


def test_override_files_that_nothing_would_use_are_named_with_what_to_call_them(
    tmp_path: Path,
) -> None:
    files = {
        # Used: an event kind, a built-in's name, default, and a file another includes.
        "discord/live_start.j2": '{% import "discord/macros.j2" as m %}{{ m.x() }}',
        "discord/macros.j2": "{% macro x() %}x{% endmacro %}",
        "telegram/status.j2": "status",
        "console/default.j2": "{{ streamer.name }}",
        # Never used: a typo of a kind, and a folder that is no sink.
        "telegram/live_started.j2": "typo",
        "discrod/live_start.j2": "typo",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    renderer = Renderer(formats=message_formats(), user_dir=tmp_path)
    assert renderer.unused_overrides(KNOWN_KINDS) == [
        "discrod/live_start.j2: unused: there is no sink 'discrod' (folders: console, discord,"
        " telegram)",
        "telegram/live_started.j2: unused: no event kind or template is called that, and no"
        " template includes it; did you mean live_start.j2?",
    ]
    # Without a user folder there is nothing to say.
    assert Renderer(formats=message_formats()).unused_overrides(KNOWN_KINDS) == []
