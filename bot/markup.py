"""Escaping and safe truncation for Telegram HTML, Discord markdown and the console.

Pure functions over strings. Lengths are counted the way the platforms count them:
Telegram measures text after entity parsing in UTF-16 code units; Discord's limits are
applied to the raw text, also in UTF-16 code units (never more than a code-point count,
so a limit kept here is kept there).
"""

from __future__ import annotations

import html
import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

ELLIPSIS: Final = "…"

#: Tags Telegram's HTML parse mode understands (with the attributes it reads).
TELEGRAM_TAGS: Final = frozenset(
    {
        "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
        "blockquote", "tg-spoiler", "span", "tg-emoji",
    }
)  # fmt: skip

# --- control characters ---------------------------------------------------------------

# C0 and C1 controls except newline; tab and carriage returns are normalised first.
_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
# ANSI escape sequences as terminals read them: CSI (also the 8-bit form), OSC, and the
# two-character escapes. Removed whole, so no "[31m" debris is left behind.
_ANSI = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI ... final byte
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC ... BEL/ST
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*[0-~]"  # other escapes (charset selection, RIS, ...)
)
# Bidirectional embeddings, overrides and isolates: they make text show in an order other
# than its characters' ("Trojan Source"), so a title could pass for another name or link.
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
# Line and paragraph separators, and NEL (a C1 control): line breaks no newline shows, so a
# value could start a line of its own that looks like the template's. A space keeps the
# words apart.
_LINE_SEPARATORS = re.compile(r"[\x85\u2028\u2029]")


def strip_controls(text: str) -> str:
    """Drop control characters except newline, and bidi controls; tabs and line separators
    become spaces, CR LF becomes LF."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = _LINE_SEPARATORS.sub(" ", text)
    return _BIDI.sub("", _CONTROLS.sub("", text))


def sanitize_console(text: str) -> str:
    """Text safe to print on a terminal: no ANSI sequences, controls or bidi overrides."""
    return strip_controls(_ANSI.sub("", text))


# --- lengths ---------------------------------------------------------------------------


def utf16_len(text: str) -> int:
    """The length in UTF-16 code units (what Telegram, and JavaScript, call length)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _prefix_within(text: str, budget: int, *, word_break: bool = True) -> str:
    """The longest prefix of `text` at most `budget` UTF-16 units long, never splitting a
    code point; backs off to a space when one is close, so a word is not cut in half."""
    if budget <= 0:
        return ""
    used = 0
    end = 0
    for ch in text:
        size = 2 if ord(ch) > 0xFFFF else 1
        if used + size > budget:
            break
        used += size
        end += 1
    if end == len(text):
        return text
    cut = text[:end]
    if word_break:
        space = cut.rfind(" ", max(0, end - 16))
        if space > 0:
            cut = cut[:space]
    return cut.rstrip()


def truncate_plain(text: str, limit: int) -> str:
    """`text` cut to `limit` UTF-16 units with a trailing ellipsis, if it is longer."""
    if utf16_len(text) <= limit:
        return text
    return _prefix_within(text, limit - 1) + ELLIPSIS


# --- URLs ------------------------------------------------------------------------------

# Characters that are not valid in a URL (RFC 3986) or that would end a markdown link
# target or an HTML attribute early; they are percent-encoded outside the host.
_URL_ENCODE: Final = {
    c: f"%{ord(c):02X}" for c in " \"'<>()[]`{}|\\^"
}  # fmt: skip


def safe_url(value: object) -> str | None:
    """An http(s) URL made safe to put in a link or an attribute, or None for anything else.

    Other schemes (javascript:, data:, file:, ...), relative references, URLs without a
    host and URLs with control characters are dropped rather than repaired.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if (
        not text
        or _CONTROLS.search(text)
        or _BIDI.search(text)
        or any(ch.isspace() and ch != " " for ch in text)
    ):
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if any(ch in parts.netloc for ch in " \"'<>`{}|\\^"):
        return None

    def encode(part: str) -> str:
        # Discord shows a bare URL as text, where "@everyone" in it would read as a
        # mention; web servers take "%40" in a path or query for the "@" it stands for.
        return _MENTION_AT.sub("%40", "".join(_URL_ENCODE.get(ch, ch) for ch in part))

    return urlunsplit(
        (
            parts.scheme.lower(),
            parts.netloc,
            encode(parts.path),
            encode(parts.query),
            encode(parts.fragment),
        )
    )


# --- Discord markdown ------------------------------------------------------------------

# URLs Discord turns into links by itself: left unescaped (a backslash inside one would
# end up in the link), but never with characters that could close surrounding markdown.
_DISCORD_URL = re.compile(r"https?://[^\s<>\[\]()`*~|\\\"']+")
_URL_TRAILING = ".,:;!?"
# Characters with a meaning anywhere in a line: escapes, emphasis, strike, spoilers,
# code, and masked-link brackets.
_MD_INLINE = re.compile(r"([\\*_~|`\[\]])")
# What only means something at the start of a line and before a space: headings (# ## ###
# and -# subtext), quotes (> and >>>), lists (- + and "1."); `*` is escaped anyway. The
# end of the value counts as a space: the template may put one right after it.
_MD_LINE_START = re.compile(
    r"^([ \t]*)(#{1,3}|-#|>>>|[>+\-]|\d+(?=[.)]))(?=[.)]?(?:[ \t]|$))", re.MULTILINE
)
# Mentions. `@everyone`/`@here` get a zero-width space after the @; `<@id>`, `<@!id>`,
# `<@&id>`, `<#id>`, `</cmd:id>`, `<t:..>`, `<:emoji:id>` one after the `<`.
# Discord finds @everyone and @here anywhere, whatever follows ("@everyone1", "@here_" and
# "a@everyone" ping too), and has been seen to skip combining marks between the @ and the
# word (discord-api-docs#1241), so those may stand in between here.
_MENTION_AT = re.compile(
    r"@(?=[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe00-\ufe0f\ufe20-\ufe2f]*"
    r"(?:everyone|here))",
    re.IGNORECASE,
)
_MENTION_ANGLE = re.compile(r"<(?=[@#/:]|[A-Za-z]+:)")
ZWSP: Final = "\u200b"


def neutralise_everyone(text: str) -> str:
    """`text` with every `@everyone` and `@here` broken by an invisible zero-width space."""
    return _MENTION_AT.sub("@" + ZWSP, text)


def neutralise_mentions(text: str) -> str:
    """`text` with every Discord mention syntax broken by an invisible zero-width space."""
    return _MENTION_ANGLE.sub("<" + ZWSP, neutralise_everyone(text))


def escape_discord(text: str) -> str:
    """`text` as literal Discord markdown: no formatting, masked links or mentions.

    Bare http(s) URLs stay as they are so Discord still links them.
    """
    out: list[str] = []
    pos = 0
    for match in _DISCORD_URL.finditer(text):
        url = match.group().rstrip(_URL_TRAILING)
        if len(url) <= len("https://"):
            continue
        out.append(_MD_INLINE.sub(r"\\\1", text[pos : match.start()]))
        out.append(url)
        pos = match.start() + len(url)
    out.append(_MD_INLINE.sub(r"\\\1", text[pos:]))
    escaped = "".join(out)
    escaped = _MD_LINE_START.sub(_escape_line_start, escaped)
    return neutralise_mentions(escaped)


def _escape_line_start(match: re.Match[str]) -> str:
    lead, mark = match.group(1), match.group(2)
    if mark[0].isdigit():
        # "1." / "1)" starts a numbered list: escape the dot, not the number.
        return f"{lead}{mark}\\"
    return f"{lead}\\{mark}"


def discord_code_block(text: str) -> str:
    """`text` in a Discord code block; nothing inside can close the block early."""
    body = text.replace("```", "`" + ZWSP + "``").rstrip("\n")
    if body.endswith("`"):
        body += ZWSP
    return f"```\n{body}\n```"


# Tokens of Discord markdown, for cutting it without breaking it. Order matters.
_DISCORD_TOKEN = re.compile(
    r"(?P<escape>\\[\s\S]?)"
    r"|(?P<fence>```)"
    r"|(?P<tick>`)"
    r"|(?P<link>\[(?:\\.|[^\[\]\\\n])*\]\([^()\s]*\))"
    r"|(?P<angle><[^<>\s]+>)"
    r"|(?P<url>https?://[^\s<>\[\]()`*~|\\\"']*[^\s<>\[\]()`*~|\\\"'.,:;!?])"
    r"|(?P<emoji>:[A-Za-z0-9_+\-]+:)"
    r"|(?P<marker>\*\*|__|~~|\|\||\*|_)"
    r"|(?P<text>[^\\`\[<h:*_~|]+|[\s\S])"
)


def truncate_discord(text: str, limit: int) -> str:
    """`text` cut to `limit` UTF-16 units with an ellipsis, keeping the markdown whole.

    The cut never lands inside an escape, a masked link, a URL, a mention or an emoji;
    emphasis, strike, spoiler and code spans left open are closed after the ellipsis.
    """
    if utf16_len(text) <= limit:
        return text
    out: list[str] = []
    used = 0
    stack: list[str] = []  # open markers, innermost last
    pos = 0
    while pos < len(text):
        if stack and stack[-1] in ("```", "`"):
            # Inside code nothing is markdown: the content runs to the closing marker.
            closer = stack[-1]
            end = text.find(closer, pos)
            if end == pos:
                kind, token = "close", closer
            else:
                kind, token = "text", text[pos : end if end != -1 else len(text)]
        else:
            match = _DISCORD_TOKEN.match(text, pos)
            assert match is not None  # the text alternative matches any character
            kind, token = match.lastgroup or "text", match.group()
            if kind in ("fence", "tick", "marker"):
                if token in stack:
                    kind = "close"
                elif text.find(token, pos + len(token)) == -1:
                    kind = "text"  # nothing closes it later: a literal character
                else:
                    kind = "open"
        after = list(stack)
        if kind == "close":
            del after[len(after) - 1 - after[::-1].index(token)]
        elif kind == "open":
            after.append(token)
        size = utf16_len(token)
        if used + size + 1 + _closers_len(after) <= limit:
            out.append(token)
            used += size
            stack = after
            pos += len(token)
            continue
        if kind == "text":
            room = limit - used - 1 - _closers_len(stack)
            out.append(_prefix_within(token, room))
        break
    if out and not out[-1].startswith("\\"):
        out[-1] = out[-1].rstrip(" ")  # "see …" reads worse than "see…"
    return "".join(out) + ELLIPSIS + "".join(reversed(stack))


def _closers_len(stack: list[str]) -> int:
    return sum(len(marker) for marker in stack)


# --- Telegram HTML ---------------------------------------------------------------------

_TG_TOKEN = re.compile(
    r"(?P<tag><[^<>]*>)"
    r"|(?P<entity>&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);)"
    r"|(?P<text>[^<&]+|[<&])"
)
#: The only named entities Telegram understands; numeric ones all work.
_TG_NAMED_ENTITIES: Final = frozenset({"lt", "gt", "amp", "quot"})
_TG_HREF = re.compile(r"""\bhref\s*=\s*(["'])(?:https?|tg)://[^"']+\1""", re.IGNORECASE)
_TAG_NAME = re.compile(r"<\s*(/?)\s*([A-Za-z][A-Za-z0-9-]*)")


def _tg_tokens(markup: str) -> list[tuple[str, str]]:
    return [(m.lastgroup or "text", m.group()) for m in _TG_TOKEN.finditer(markup)]


#: Telegram makes a mention of "@" and 2-32 letters, digits or underscores (one that notifies
#: that member of a group); an invisible word joiner right after the "@" stops it.
WORD_JOINER: Final = "\u2060"
_TG_AT = re.compile("@(?!" + WORD_JOINER + ")")


def break_telegram_mentions(text: str) -> str:
    """`text` with a word joiner after every "@", so Telegram makes no mention of it."""
    return _TG_AT.sub("@" + WORD_JOINER, text)


def escape_telegram(text: str) -> str:
    """Untrusted text as Telegram HTML: no controls or bidi, mentions broken, escaped."""
    return html.escape(break_telegram_mentions(strip_controls(text)))


def break_telegram_html_mentions(markup: str) -> str:
    """Telegram HTML with a word joiner after every "@" of its text (`&#64;` included);
    tags, and so link targets, are left as they are."""
    out: list[str] = []
    for kind, token in _tg_tokens(markup):
        if kind == "text":
            out.append(break_telegram_mentions(token))
        elif kind == "entity" and html.unescape(token) == "@":
            out.append(token + WORD_JOINER)
        else:
            out.append(token)
    return "".join(out)


def telegram_visible_len(markup: str) -> int:
    """How long Telegram considers this HTML: text after entity parsing, in UTF-16 units."""
    total = 0
    for kind, token in _tg_tokens(markup):
        if kind == "entity":
            total += utf16_len(html.unescape(token))
        elif kind == "text":
            total += utf16_len(token)
    return total


def telegram_html_problems(markup: str) -> list[str]:
    """Why Telegram would refuse this HTML: unknown or unbalanced tags, unescaped < > &,
    named entities other than &lt; &gt; &amp; &quot;. Empty when it is fine."""
    problems: list[str] = []
    stack: list[str] = []
    for kind, token in _tg_tokens(markup):
        if kind == "text":
            problems.extend(f"unescaped {ch!r}" for ch in "<>&" if ch in token)
            continue
        if kind == "entity":
            if token[1] != "#" and token[1:-1] not in _TG_NAMED_ENTITIES:
                problems.append(f"unsupported entity {token}")
            continue
        match = _TAG_NAME.match(token)
        if match is None:
            problems.append(f"malformed tag {token!r}")
            continue
        closing, name = match.group(1) == "/", match.group(2).lower()
        if name not in TELEGRAM_TAGS:
            problems.append(f"unsupported tag <{name}>")
        elif not closing:
            stack.append(name)
            if name == "a" and not _TG_HREF.search(token):
                problems.append(f"link without an http(s) URL: {token}")
        elif not stack or stack[-1] != name:
            problems.append(f"unexpected </{name}>")
        else:
            stack.pop()
    problems.extend(f"unclosed <{name}>" for name in reversed(stack))
    return problems


def truncate_telegram(markup: str, limit: int) -> str:
    """Telegram HTML cut to `limit` visible characters (UTF-16 units) with an ellipsis.

    Never cuts inside a tag or an entity; tags left open are closed after the ellipsis.
    """
    if telegram_visible_len(markup) <= limit:
        return markup
    budget = limit - 1
    out: list[str] = []
    stack: list[str] = []
    used = 0
    for kind, token in _tg_tokens(markup):
        if kind == "tag":
            match = _TAG_NAME.match(token)
            if match is not None and not token.endswith("/>"):
                name = match.group(2).lower()
                if match.group(1) != "/":
                    stack.append(name)
                elif name in stack:
                    del stack[len(stack) - 1 - stack[::-1].index(name)]
            out.append(token)
            continue
        size = utf16_len(html.unescape(token)) if kind == "entity" else utf16_len(token)
        if used + size <= budget:
            out.append(token)
            used += size
            continue
        if kind == "text":
            out.append(_prefix_within(token, budget - used))
        break
    return "".join(out) + ELLIPSIS + "".join(f"</{name}>" for name in reversed(stack))
