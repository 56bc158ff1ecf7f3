"""The built-in languages (issue 19, item 5): the catalogs cover every shipped template,
translations keep placeholders and markup, stream text stays inert in every language,
durations and dates come from CLDR, and a route's language reaches its chats."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from bot import i18n
from bot.config import load_config
from bot.errors import ConfigError
from bot.events import NOTIFIED_KINDS
from bot.pipeline.cards import CardPolicy
from bot.pipeline.routing import Router
from bot.registry import message_formats
from bot.render import Renderer
from bot.samples import sample_event, sample_events
from bot.sinks.console import FORMAT as CONSOLE
from bot.sinks.discord.format import FORMAT as DISCORD
from bot.sinks.telegram.format import FORMAT as TELEGRAM
from tests.test_cli import running_bot
from tests.test_faults import accepted, console_config
from tests.test_markup import MENTION, telegram_pings, telegram_problems, telegram_visible
from tests.test_reliability import live_start
from tests.test_render import HOSTILE_HTML, HOSTILE_MD, discord_strings, live

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
TRANSLATED = [tag for tag in i18n.LOCALES if tag != i18n.DEFAULT_LOCALE]
FORMATS = message_formats()


def catalog(tag: str) -> Catalog:
    path = i18n.CATALOGS_DIR / tag.replace("-", "_") / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as source:
        return read_po(source, locale=tag.replace("-", "_"))


def template_catalog() -> Catalog:
    with (i18n.CATALOGS_DIR / "messages.pot").open("rb") as source:
        return read_po(source)


def key(message: Message) -> str:
    return message.id if isinstance(message.id, str) else message.id[0]


def strings(message: Message) -> list[str]:
    return list(message.string) if isinstance(message.string, list | tuple) else [message.string]


# -- the catalogs ----------------------------------------------------------------------


def test_the_catalog_template_holds_exactly_the_text_of_the_sources() -> None:
    """messages.pot is what `pybabel extract -F babel.cfg` makes of the templates and the
    code today: a string added to a template without updating it fails here."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    extracted = {
        msgid if isinstance(msgid, str) else msgid[0]
        for _file, _line, msgid, _comments, _context in extract_from_dir(
            str(ROOT), method_map, options_map
        )
    }
    shipped = {key(m) for m in template_catalog() if m.id}
    assert extracted - shipped == set(), "run pybabel extract (docs/templates.md, Languages)"
    assert shipped - extracted == set(), "messages.pot names text no source has any more"


def test_every_built_in_language_has_a_catalog_and_nothing_else_does() -> None:
    found = {p.name.replace("_", "-") for p in i18n.CATALOGS_DIR.iterdir() if p.is_dir()}
    assert found == set(TRANSLATED)


@pytest.mark.parametrize("tag", TRANSLATED)
def test_each_catalog_translates_everything_without_fuzzy_entries(tag: str) -> None:
    translated = {key(m): m for m in catalog(tag) if m.id}
    for wanted in template_catalog():
        if not wanted.id:
            continue
        message = translated.get(key(wanted))
        assert message is not None, f"{tag}: {key(wanted)!r} is missing"
        assert not message.fuzzy, f"{tag}: {key(wanted)!r} is fuzzy"
        assert all(strings(message)), f"{tag}: {key(wanted)!r} is not translated"


_MARKS = re.compile(r"</?[a-z]+[^>]*>|\*\*|~~|`")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@pytest.mark.parametrize("tag", TRANSLATED)
def test_translations_keep_every_placeholder_and_the_markup(tag: str) -> None:
    """A dropped %(name)s would lose the streamer's name; a lost ** or <b> would break
    the formatting (Telegram refuses a message with unbalanced tags)."""
    book = catalog(tag)
    assert [(m.id, errors) for m, errors in book.check()] == []
    for message in book:
        if not message.id:
            continue
        original = key(message)
        for text in strings(message):
            assert sorted(_PLACEHOLDER.findall(text)) == sorted(_PLACEHOLDER.findall(original)), (
                tag,
                original,
                text,
            )
            assert sorted(_MARKS.findall(text)) == sorted(_MARKS.findall(original)), (
                tag,
                original,
                text,
            )
            assert text.replace("%%", "").count("%") == len(_PLACEHOLDER.findall(text))


def test_plural_forms_follow_each_languages_rule() -> None:
    """Russian has three forms (1 уведомление, 2 уведомления, 5 уведомлений), Japanese
    one; the catalogs' rules pick them."""
    singular = key(next(m for m in template_catalog() if m.pluralizable))
    plural = next(m for m in template_catalog() if m.pluralizable).id[1]

    def forms(tag: str) -> set[str]:
        return {i18n.translations(tag).ngettext(singular, plural, n) for n in (1, 2, 5, 21)}

    assert len(forms("ru")) == 3
    assert len(forms("ja")) == 1
    assert len(forms("de")) == 2
    assert forms("en") == {singular, plural}


# -- the languages as bot.toml names them ------------------------------------------------


@pytest.mark.parametrize(
    ("written", "meant"),
    [("pt-BR", "pt-BR"), ("pt_BR", "pt-BR"), ("PT-br", "pt-BR"), (" de ", "de"), ("JA", "ja")],
)
def test_languages_are_read_in_any_spelling(written: str, meant: str) -> None:
    assert i18n.parse_locale(written) == meant


@pytest.mark.parametrize(
    ("written", "hint"),
    [("pt", "did you mean 'pt-BR'?"), ("de-AT", "did you mean 'de'?"), ("klingon", "")],
)
def test_an_unknown_language_is_refused_with_the_ones_there_are(written: str, hint: str) -> None:
    with pytest.raises(ValueError, match="there are en, de, es, fr, pt-BR, ru, ja") as info:
        i18n.parse_locale(written)
    assert str(info.value).endswith(hint or ")")


def load(data: dict[str, Any]) -> Any:
    return load_config(data, environ={}, base_dir=Path("."))


def test_behaviour_and_route_locales_are_read_and_mistakes_named_by_key() -> None:
    config = load(
        {
            "behaviour": {"locale": "pt_BR"},
            "routes": [{"match": "*", "locale": "ja"}, {"match": "*"}],
        }
    )
    assert config.behaviour.locale == "pt-BR"
    assert [r.locale for r in config.routes] == ["ja", None]
    assert load({}).behaviour.locale == "en"
    with pytest.raises(ConfigError) as info:
        load({"behaviour": {"locale": "pt"}, "routes": [{"match": "*", "locale": 7}]})
    found = list(info.value.problems)
    assert any(p.startswith("behaviour.locale: 'pt' is not a built-in language") for p in found)
    assert any(p.startswith("routes[0].locale: ") for p in found), found


# -- CLDR: durations, relative times, dates, lists ----------------------------------------


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("en", "2h 13m"),
        ("de", "2h, 13 Min."),
        ("fr", "2h 13min"),
        ("ru", "2 ч 13 мин"),
        ("ja", "2h13m"),
        ("pt-BR", "2 h 13 min"),
    ],
)
def test_durations_are_written_as_each_language_writes_units(tag: str, expected: str) -> None:
    assert i18n.format_duration(timedelta(hours=2, minutes=13, seconds=41), tag) == expected


def test_durations_are_cut_down_never_rounded_up() -> None:
    almost_two_hours = timedelta(hours=1, minutes=59, seconds=59)
    assert i18n.format_duration(almost_two_hours, "en") == "1h 59m"
    assert i18n.format_duration(almost_two_hours, "ru") == "1 ч 59 мин"
    assert i18n.format_duration(0, "de") == "0 Sek."
    assert i18n.format_duration(timedelta(days=3, hours=4, minutes=5), "en", parts=3) == (
        "3d 4h 5m"
    )


def test_relative_times_count_whole_units_in_the_language() -> None:
    almost = NOW - timedelta(hours=1, minutes=59)
    assert i18n.relative_time(almost, NOW, "en") == "1 hour ago"
    assert i18n.relative_time(almost, NOW, "de") == "vor 1 Stunde"
    assert i18n.relative_time(NOW + timedelta(minutes=3), NOW, "ru") == "через 3 минуты"
    assert i18n.relative_time(NOW - timedelta(seconds=10), NOW, "en") == "just now"
    # "just now" comes from the catalog, like a template's text.
    german = i18n.translations("de").gettext("just now")
    assert german != "just now"
    assert i18n.relative_time(NOW - timedelta(seconds=10), NOW, "de") == german


def test_dates_follow_the_languages_order_and_say_utc() -> None:
    moment = datetime(2026, 3, 11, 5, 22, tzinfo=UTC)
    assert i18n.format_moment(moment, "de") == "11.03.2026, 05:22 UTC"
    assert i18n.format_moment(moment, "ja") == "2026/03/11 5:22 UTC"
    assert i18n.format_moment(moment, "en") == "Mar 11, 2026, 5:22\u202fAM UTC"


def test_lists_join_as_the_language_joins() -> None:
    names = ["/mute", "/unmute", "/subscribe"]
    assert i18n.join_list(names, "de") == "/mute, /unmute und /subscribe"
    assert i18n.join_list(names, "ja") == "/mute、/unmute、/subscribe"
    assert i18n.join_list(names, "fr", style="or") == "/mute, /unmute ou /subscribe"
    assert i18n.join_list([], "fr") == ""


# -- rendering ------------------------------------------------------------------------------


def renderer(locale: str = "en", user_dir: Path | None = None) -> Renderer:
    return Renderer(formats=FORMATS, clock=lambda: NOW, locale=locale, user_dir=user_dir)


def _all_text(tag: str) -> Iterator[tuple[str, str, str]]:
    """(sink, kind, what the message shows) for every notified kind in `tag`."""
    r = renderer(tag)
    for kind in NOTIFIED_KINDS:
        ev = sample_event(kind)
        yield "console", kind, r.render(CONSOLE, ev).text
        yield "discord", kind, "\n".join(discord_strings(r.render(DISCORD, ev)))
        message = r.render(TELEGRAM, ev)
        yield "telegram", kind, f"{telegram_visible(message.text)}\n{message.button_text}"


@pytest.mark.parametrize("tag", TRANSLATED)
def test_every_shipped_notification_is_written_in_the_language(tag: str) -> None:
    """No English sentence of the built-in templates is left in a translated message."""
    english = {(sink, kind): text for sink, kind, text in _all_text("en")}
    # The catalog's sentences as they show, without markup or values: whole sentences,
    # not a word languages share ("Discord", "Streamer").
    literals = [
        re.sub(r"<[^>]+>|\*\*|~~|`|%\(\w+\)s", "", key(m)).strip()
        for m in template_catalog()
        if m.id
    ]
    literals = [text for text in literals if len(text) > 12]
    for sink, kind, text in _all_text(tag):
        if any(literal in english[sink, kind] for literal in literals):
            assert text != english[sink, kind], (tag, sink, kind)
        for literal in literals:
            assert literal not in text, (tag, sink, kind, literal)


def test_a_translated_sentence_escapes_the_names_in_it_on_discord() -> None:
    for tag in i18n.LOCALES:
        for kind in NOTIFIED_KINDS:
            ev = sample_event(kind).with_changes(
                display_name=f"N1 {HOSTILE_MD} N2",
                live=live(title=f"T1 {HOSTILE_MD} T2", categories=(f"C1 {HOSTILE_MD} C2",)),
                error=f"E1 {HOSTILE_MD} E2",
            )
            message = renderer(tag).render(DISCORD, ev)
            shown = "\n".join(discord_strings(message))
            assert not MENTION.search(shown), (tag, kind, shown)
            assert "[phish](http://evil.example)" not in message.content, (tag, kind)
            assert "**bold**" not in message.content, (tag, kind)
            # The translation's own markdown stays: the name is still bold.
            if kind == "live_start":
                assert message.content.count("**") == 2, (tag, message.content)


def test_a_translated_sentence_escapes_the_names_in_it_on_telegram() -> None:
    for tag in i18n.LOCALES:
        for kind in NOTIFIED_KINDS:
            ev = sample_event(kind).with_changes(
                display_name=f"A&B <i> @everyone_bot {HOSTILE_HTML}",
                live=live(title=HOSTILE_HTML, categories=("<tg-spoiler>",)),
            )
            message = renderer(tag).render(TELEGRAM, ev)
            assert not telegram_problems(message.text), (tag, kind, message.text)
            assert "<script>" not in message.text and "&lt;script&gt;" in message.text
            assert "A&B <i>" in telegram_visible(message.text), (tag, kind)
            assert telegram_pings(message.text) == [], (tag, kind)


def test_check_renders_every_template_in_every_language(tmp_path: Path) -> None:
    """A template that breaks only in one language is found by `check`, said with it."""
    (tmp_path / "telegram").mkdir()
    (tmp_path / "telegram" / "live_start.j2").write_text(
        '{% extends "telegram/base.j2" %}{% block text %}'
        '{% if locale == "ja" %}{{ live.titel }}{% endif %}{{ _("Live now") }}'
        "{% endblock %}",
        encoding="utf-8",
    )
    problems = renderer(user_dir=tmp_path).check(sample_events())
    assert problems == [
        "telegram/live_start.j2 line 1: 'live' has no attribute 'titel' (in ja)"
    ], problems
    assert renderer().check(sample_events()) == []
    # A running bot checks the languages its config uses (each one's CLDR data stays in
    # memory once loaded): English and German find nothing wrong; with Japanese, found.
    assert renderer(user_dir=tmp_path).check(sample_events(), ("en", "de")) == []
    assert renderer(user_dir=tmp_path).check(sample_events(), ("ja",)) == problems


def test_the_languages_a_config_uses_are_english_behaviours_and_the_routes() -> None:
    config = load(
        {
            "behaviour": {"locale": "fr"},
            "routes": [
                {"match": "twitch/*", "discord_channels": ["111111111111111111"], "locale": "ja"},
                {"match": "*", "discord_channels": ["222222222222222222"]},
            ],
        }
    )
    assert config.locales_in_use == ("en", "fr", "ja")
    assert load({}).locales_in_use == ("en",)


def test_a_user_template_can_translate_and_use_the_locale(tmp_path: Path) -> None:
    (tmp_path / "console").mkdir()
    (tmp_path / "console" / "live_start.j2").write_text(
        "{{ locale }}: {% trans name=streamer.name %}{{ name }} is live{% endtrans %},"
        " {{ 5400|duration }}, {{ ['a', 'b']|or_list }}",
        encoding="utf-8",
    )
    ev = sample_event("live_start").with_changes(display_name="Quinn")
    text = renderer("ru", tmp_path).render(CONSOLE, ev).text
    sentence = i18n.translations("ru").gettext("%(name)s is live") % {"name": "Quinn"}
    assert text == f"ru: {sentence}, 1 ч 30 мин, a или b"
    # A delivery's own language wins over the bot's; one no longer built in does not.
    assert renderer("ru", tmp_path).render(CONSOLE, ev, locale="en").text.startswith("en: ")
    assert renderer("ru", tmp_path).render(CONSOLE, ev, locale="xx").text.startswith("ru: ")


# -- routes ----------------------------------------------------------------------------------


def test_a_routes_language_goes_with_its_deliveries() -> None:
    config = load(
        {
            "routes": [
                {"match": "twitch/*", "discord_channels": ["111111111111111111"], "locale": "de"},
                {"match": "*", "discord_channels": ["222222222222222222"]},
                {"match": "*", "discord_channels": ["111111111111111111"], "locale": "ja"},
            ]
        }
    )
    router = Router(routes=config.routes, sinks=["discord"], default_policy=CardPolicy())
    ev = sample_event("live_start").with_changes(platform="twitch", channel="q")
    plans = router.plan(ev, [])
    by_chat = {t.target: p.options.get("locale") for t, p in plans.items()}
    # The first route reaching the chat that sets one decides; no route: [behaviour]'s,
    # chosen when it renders.
    assert by_chat == {"111111111111111111": "de", "222222222222222222": None}


# -- through `python -m bot run` -------------------------------------------------------------


async def test_sighup_changes_the_language_and_check_names_a_bad_one(tmp_path: Path) -> None:
    """`[behaviour] locale` through the real process: the console card in German, then
    in Japanese after SIGHUP; a language there is no translation for is refused by key
    and the running one stays."""
    config = tmp_path / "bot.toml"
    base = console_config(tmp_path)

    def with_locale(tag: str) -> str:
        return base.replace("[behaviour]\n", f'[behaviour]\nlocale = "{tag}"\n')

    config.write_text(with_locale("de"))
    de = i18n.translations("de").gettext("%(name)s is live") % {"name": "Quinn"}
    ja = i18n.translations("ja").gettext("%(name)s is live") % {"name": "Ada"}
    async with running_bot(config) as bot:
        await accepted(bot.url, live_start("quinn", "Vor dem Neuladen"))
        await bot.wait_for("stdout", re.escape(f"[live_start] {de}"))
        config.write_text(with_locale("ja"))
        bot.proc.send_signal(signal.SIGHUP)
        await bot.wait_for("stderr", r"reloaded: 1 routes")
        await accepted(bot.url, live_start("ada", "After"))
        await bot.wait_for("stdout", re.escape(f"[live_start] {ja}"))

        config.write_text(with_locale("pt"))
        bot.proc.send_signal(signal.SIGHUP)
        await bot.wait_for(
            "stderr",
            r"reload refused, the running config stays: behaviour\.locale: 'pt' is not a"
            r" built-in language .*did you mean 'pt-BR'\?",
        )
        await accepted(bot.url, live_start("adam", "Still"))
        adam = i18n.translations("ja").gettext("%(name)s is live") % {"name": "Adam"}
        await bot.wait_for("stdout", re.escape(f"[live_start] {adam}"))
        assert await bot.stop() == 0
