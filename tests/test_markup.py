"""Escaping and truncation: what Discord, Telegram and a terminal end up showing."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest

from bot import markup
from tests.fakes.telegram_api import find_entities, merge_found_entities, parse_html

# --- independent checkers (not the code under test) -------------------------------------

TELEGRAM_ALLOWED = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
    "blockquote", "tg-spoiler",
}  # fmt: skip


class _TelegramChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TELEGRAM_ALLOWED:
            self.problems.append(f"tag <{tag}>")
        for name, value in attrs:
            if (tag, name) != ("a", "href"):
                self.problems.append(f"attribute {name} on <{tag}>")
            elif not re.match(r"(https?|tg)://.", value or ""):
                self.problems.append(f"bad href {value!r}")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"unbalanced </{tag}>")

    def handle_entityref(self, name: str) -> None:
        if name not in ("lt", "gt", "amp", "quot"):
            self.problems.append(f"entity &{name};")


def telegram_problems(text: str) -> list[str]:
    """What Telegram's HTML parser would reject in `text`."""
    checker = _TelegramChecker()
    checker.feed(text)
    checker.close()
    problems = checker.problems + [f"unclosed <{tag}>" for tag in checker.stack]
    outside_tags = re.sub(r"<[^<>]*>", "", text)
    if "<" in outside_tags or ">" in outside_tags:
        problems.append("raw < or > in text")
    if re.search(r"&(?!(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)", outside_tags):
        problems.append("raw & in text")
    return problems


def telegram_visible(text: str) -> str:
    """The text a Telegram user sees."""
    return html.unescape(re.sub(r"<[^<>]*>", "", text))


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def discord_problems(text: str) -> list[str]:
    """Markdown left half-open in `text`: code, escapes, links, emphasis pairs."""
    problems = []
    rest = re.sub(r"```[\s\S]*?```", "", text)
    if "```" in rest:
        problems.append("open code block")
    rest = re.sub(r"`[^`]*`", "", rest)
    if "`" in rest:
        problems.append("open inline code")
    rest = re.sub(r"\\[\s\S]", "", rest)
    if "\\" in rest:
        problems.append("dangling backslash")
    rest = re.sub(r"\[[^\[\]\n]*\]\([^()\s]*\)", "", rest)
    if "[" in rest or "]" in rest:
        problems.append("half masked link")
    rest = re.sub(r"https?://\S+", "", rest)
    problems.extend(f"odd {marker}" for marker in ("**", "~~", "||") if rest.count(marker) % 2)
    return problems


def unescaped(text: str) -> str:
    """`text` with Discord backslash escapes removed: what is left can be markup."""
    return re.sub(r"\\[\s\S]", "", text)


MENTION = re.compile(r"@everyone|@here|<@!?\d+>|<@&\d+>|<#\d+>", re.IGNORECASE)


# --- console ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mred\x1b[0m alert", "red alert"),
        ("\x1b]0;owned terminal title\x07after", "after"),
        ("\x1b[2J\x1b[Hcleared", "cleared"),
        ("bell\x07 null\x00 del\x7f", "bell null del"),
        ("two\nlines", "two\nlines"),
        ("over\rwrite", "over\nwrite"),
        ("tab\there", "tab here"),
        ("\u202eevil\u202c txt", "evil txt"),
        ("\x9b31mC1 CSI", "C1 CSI"),
    ],
)
def test_console_text_cannot_drive_the_terminal(raw: str, shown: str) -> None:
    assert markup.sanitize_console(raw) == shown


# --- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "ftp://example.com/x",
        "//example.com/x",
        "/relative/path",
        "http://",
        "https://exa mple.com/",
        "https://example.com/\nInjected: header",
        "https://example.com/\u202egnp.exe",
        "https://exa\u2066mple.com/",
        "https://example.com/a\u2028b",
        "",
        None,
        42,
    ],
)
def test_only_http_urls_survive(url: object) -> None:
    assert markup.safe_url(url) is None


def test_http_urls_are_kept_and_made_safe_for_links() -> None:
    assert markup.safe_url("https://www.twitch.tv/aurora_vale") == (
        "https://www.twitch.tv/aurora_vale"
    )
    assert markup.safe_url("HTTP://example.com/a b") == "http://example.com/a%20b"
    # A ")" would end a markdown link early, a quote an HTML attribute.
    assert markup.safe_url('https://e.com/x)"y') == "https://e.com/x%29%22y"


def test_urls_keep_their_at_signs_unless_they_spell_everyone_or_here() -> None:
    assert markup.safe_url("https://youtube.com/@quinn") == "https://youtube.com/@quinn"
    # Discord shows a bare URL as text: "@everyone" in it reads as a mention.
    assert markup.safe_url("https://e.com/@everyone?to=@Here#@here1") == (
        "https://e.com/%40everyone?to=%40Here#%40here1"
    )


# --- Discord escaping ------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "@everyone",
        "@here",
        "@Everyone look",
        "<@123456789012345678>",
        "<@!123>",
        "<@&456>",
        "<#789>",
        "hi <@&456> and @here",
    ],
)
def test_discord_mentions_are_neutralised(payload: str) -> None:
    assert not MENTION.search(markup.escape_discord(payload))


@pytest.mark.parametrize(
    "payload",
    [
        "**bold**",
        "__underline__",
        "*it* _it_",
        "~~strike~~",
        "||spoiler||",
        "`code`",
        "```block```",
        "[phish](http://evil.example)",
        "[phish](<http://evil.example>)",
        "back\\slash",
    ],
)
def test_discord_inline_markdown_is_escaped(payload: str) -> None:
    escaped = markup.escape_discord(payload)
    assert not re.search(r"[*_~|`\[\]\\]", unescaped(escaped)), escaped
    # ... and each escape stands for exactly the character that was there.
    shown = re.sub(r"\\([\s\S])", r"\1", escaped).replace(markup.ZWSP, "")
    assert shown == payload


@pytest.mark.parametrize(
    "payload",
    ["# Big", "## Big", "### Big", "-# small", "> quote", ">>> all quoted", "- item", "+ item",
     "1. first", "title\n# injected heading", "  - indented"],
)  # fmt: skip
def test_discord_line_start_markdown_is_escaped(payload: str) -> None:
    escaped = markup.escape_discord(payload)
    for line in escaped.splitlines():
        assert not re.match(r"\s*(#{1,3} |-# |>{1,3} |[-+] |\d+\. )", line), escaped


def test_discord_escaping_leaves_ordinary_text_and_urls_alone() -> None:
    text = "Version 1.8.2 at 6.4 GB, -5°C #1 https://example.com/a_b_c?x=1"
    assert markup.escape_discord(text) == text


def test_discord_code_block_cannot_be_closed_from_inside() -> None:
    block = markup.discord_code_block("a ``` b `")
    assert block.startswith("```\n") and block.endswith("\n```")
    assert block.count("```") == 2


# --- Discord truncation ----------------------------------------------------------------

RICH_DISCORD = (
    "🔴 **Aurora Vale** is live! ~~old~~ ||spoiler|| `code *x*` "
    "[Watch the stream](https://www.twitch.tv/auroravale) <t:1773206558:R> "
    + markup.escape_discord("a*b_c [x](y) \\ **not bold** 😀 <@&1> ")
    + "```\nsome code\n``` end"
) * 3


def test_discord_truncation_keeps_markdown_whole_wherever_it_cuts() -> None:
    for limit in range(1, utf16(RICH_DISCORD) + 2):
        cut = markup.truncate_discord(RICH_DISCORD, limit)
        assert utf16(cut) <= limit, limit
        assert not discord_problems(cut), (limit, cut)
        if utf16(RICH_DISCORD) <= limit:
            assert cut == RICH_DISCORD
        else:
            kept = cut[: cut.rindex("…")]
            assert RICH_DISCORD.startswith(kept.rstrip(" ")), (limit, cut)


def test_discord_truncation_closes_an_open_span() -> None:
    assert markup.truncate_discord("**" + "x" * 50 + "**", 20) == "**" + "x" * 15 + "…**"


def test_discord_truncation_does_not_split_a_masked_link() -> None:
    text = "see [Watch the stream](https://www.twitch.tv/auroravale) now"
    assert markup.truncate_discord(text, 30) == "see…"


def test_discord_truncation_counts_utf16() -> None:
    cut = markup.truncate_discord("😀" * 100, 11)
    assert cut == "😀" * 5 + "…"


def test_plain_truncation() -> None:
    assert markup.truncate_plain("short", 10) == "short"
    assert markup.truncate_plain("abcdefghij", 5) == "abcd…"


# --- Telegram --------------------------------------------------------------------------

RICH_TELEGRAM = (
    "<b>Bold &amp; brave</b> <i>it &lt;3 <u>nested 😀</u></i> "
    '<a href="https://x.example/?a=1&amp;b=2">a link</a> <pre>code &gt; x</pre> '
    "<s>old</s> &#39;quoted&#39; plain words here\n"
) * 3


def test_telegram_visible_length_counts_text_after_entities_in_utf16() -> None:
    assert markup.telegram_visible_len("<b>a &amp; b</b> 😀") == utf16("a & b 😀")
    assert markup.telegram_visible_len(RICH_TELEGRAM) == utf16(telegram_visible(RICH_TELEGRAM))


def test_telegram_truncation_keeps_html_valid_wherever_it_cuts() -> None:
    assert not telegram_problems(RICH_TELEGRAM)
    for limit in range(1, markup.telegram_visible_len(RICH_TELEGRAM) + 2):
        cut = markup.truncate_telegram(RICH_TELEGRAM, limit)
        assert not telegram_problems(cut), (limit, cut)
        assert utf16(telegram_visible(cut)) <= limit, limit
        if markup.telegram_visible_len(RICH_TELEGRAM) > limit:
            assert telegram_visible(cut).endswith("…"), (limit, cut)
        else:
            assert cut == RICH_TELEGRAM


def test_telegram_truncation_leaves_short_text_alone() -> None:
    assert markup.truncate_telegram(RICH_TELEGRAM, 4096) == RICH_TELEGRAM


def test_telegram_truncation_never_cuts_an_entity() -> None:
    cut = markup.truncate_telegram("ab&amp;cd", 3)
    assert cut in ("ab…", "ab&amp;…")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<div>x</div>", "unsupported tag <div>"),
        ("<b>x", "unclosed <b>"),
        ("<b><i>x</b></i>", "unexpected </b>"),
        ("a < b", "unescaped '<'"),
        ("a & b", "unescaped '&'"),
        ("&nbsp;", "unsupported entity &nbsp;"),
        ('<a href="">x</a>', 'link without an http(s) URL: <a href="">'),
    ],
)
def test_telegram_html_problems_are_found(text: str, problem: str) -> None:
    assert problem in markup.telegram_html_problems(text)
    assert telegram_problems(text)  # the independent checker agrees


def test_valid_telegram_html_has_no_problems() -> None:
    assert markup.telegram_html_problems(RICH_TELEGRAM) == []


# --- what no sink may carry from stream text ---------------------------------------------

HIDDEN = re.compile("[\u202a-\u202e\u2066-\u2069\u2028\u2029\x85]")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\u2066iso\u2069late \u2067rtl\u2069 \u2068first\u2069", "isolate rtl first"),
        ("\u202aembed\u202c \u202boverride\u202c \u202dlro\u202e", "embed override lro"),
        ("line\u2028sep\u2029para\x85nel", "line sep para nel"),
    ],
)
def test_bidi_controls_and_line_separators_reach_no_sink(raw: str, shown: str) -> None:
    assert markup.strip_controls(raw) == shown
    assert markup.sanitize_console(raw) == shown
    assert markup.escape_discord(markup.strip_controls(raw)) == shown
    assert telegram_visible(markup.escape_telegram(raw)) == shown


@pytest.mark.parametrize(
    "payload",
    ["@everyone1", "@here_", "mail@everyone.example", "@EVERYONE!", "x@Here2",
     "@\u0301everyone", "@\u0300\u0301here", "@everyone@here"],
)  # fmt: skip
def test_discord_everyone_and_here_are_broken_whatever_surrounds_them(payload: str) -> None:
    # Discord pings for them anywhere, whatever follows; combining marks can hide in between.
    ping = re.compile(r"@[\u0300-\u036f]*(?:everyone|here)", re.IGNORECASE)
    for text in (markup.escape_discord(payload), markup.neutralise_mentions(payload)):
        assert not ping.search(text), text
        # Still what was written, once the invisible spaces and the escapes are read.
        assert re.sub(r"\\(.)", r"\1", text).replace(markup.ZWSP, "") == payload


def telegram_pings(html_text: str) -> list[dict[str, object]]:
    """The mention and text_mention entities Telegram would make of this HTML (as the fake
    finds them, a port of TDLib's parser and entity finder)."""
    text, entities = parse_html(html_text)
    merged = merge_found_entities(entities, find_entities(text))
    return [e for e in merged if e["type"] in ("mention", "text_mention")]


@pytest.mark.parametrize(
    "payload",
    ["@admin_user", "ask @admin_user!", "@ab", "(@x_y_z)", "@@admin_user", "a @b_c@d_e",
     "@" + "a" * 32, "\u202e@admin_user", "@\u2028admin_user", "&#64;admin_user"],
)  # fmt: skip
def test_telegram_stream_text_mentions_nobody_and_still_reads_the_same(payload: str) -> None:
    escaped = markup.escape_telegram(payload)
    for html_text in (escaped, f"<b>{escaped}</b>"):
        assert telegram_pings(html_text) == [], html_text
        shown = telegram_visible(html_text).replace(markup.WORD_JOINER, "")
        assert shown == markup.strip_controls(payload)


def test_the_mention_break_is_made_once() -> None:
    once = markup.break_telegram_mentions("@a @b")
    assert once == "@\u2060a @\u2060b"
    assert markup.break_telegram_mentions(once) == once


def test_telegram_html_gets_its_text_broken_and_its_links_left_whole() -> None:
    html_text = '<a href="https://youtube.com/@quinn">@quinn</a> &#64;admin_user &amp;@x_y'
    broken = markup.break_telegram_html_mentions(html_text)
    assert telegram_pings(broken) == []
    assert 'href="https://youtube.com/@quinn"' in broken
    text, entities = parse_html(broken)
    assert entities[0]["url"] == "https://youtube.com/@quinn"
    assert text.replace(markup.WORD_JOINER, "") == "@quinn @admin_user &@x_y"


def test_a_telegram_cut_never_makes_a_broken_mention_whole_again() -> None:
    html_text = (
        f"<b>{markup.escape_telegram('@admin_user ' * 20)}</b> "
        f'<a href="https://twitch.tv/q">{markup.escape_telegram("@mod_team " * 20)}</a>'
    )
    assert telegram_pings(html_text) == []
    for limit in range(1, markup.telegram_visible_len(html_text) + 2):
        cut = markup.truncate_telegram(html_text, limit)
        assert telegram_pings(cut) == [], (limit, cut)
