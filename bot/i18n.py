"""The built-in languages: their message catalogs, and durations and dates as each writes them.

Every shipped template marks its text for translation (`{% trans %}`, `_()`); the
catalogs in `bot/locales/<locale>/LC_MESSAGES/messages.po` translate it, gettext-style, so
a translator works with the usual tools (`pybabel update`, Poedit, Weblate) and the
templates stay one set. English is the templates' own text. Durations, relative times and
dates come from CLDR through Babel, so "2h 13m" is "2 ч 13 мин" in Russian without anyone
translating a unit. docs/templates.md ("Languages") says how to add a language.
"""

from __future__ import annotations

import gettext
import io
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Final, Literal

from babel import Locale
from babel.dates import format_datetime, format_timedelta
from babel.lists import format_list
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from babel.units import format_unit

#: The languages the bot ships, as written in bot.toml (BCP 47). English is the default.
LOCALES: Final = ("en", "de", "es", "fr", "pt-BR", "ru", "ja")
DEFAULT_LOCALE: Final = "en"

CATALOGS_DIR: Final = Path(__file__).parent / "locales"
DOMAIN: Final = "messages"


def N_(message: str) -> str:
    """Marks `message` for the catalogs without translating it here: a template translates
    it when it shows it (`{{ _(command.help) }}`)."""
    return message


def parse_locale(text: str) -> str:
    """A built-in locale as bot.toml writes it ("pt-BR"), from "pt_BR", "pt-br" or "PT-BR";
    ValueError naming the ones there are otherwise, and the one for the same language
    ("pt" or "de-AT": "did you mean 'pt-BR'?", "'de'?")."""
    wanted = text.strip().replace("_", "-").lower()
    for tag in LOCALES:
        if tag.lower() == wanted:
            return tag
    language = wanted.partition("-")[0]
    same = [tag for tag in LOCALES if tag.lower().partition("-")[0] == language]
    hint = f"; did you mean {same[0]!r}?" if same else ""
    raise ValueError(f"{text!r} is not a built-in language (there are {', '.join(LOCALES)}){hint}")


@cache
def babel_locale(tag: str) -> Locale:
    """The CLDR locale of a built-in one ("pt-BR" -> pt_BR)."""
    return Locale.parse(tag, sep="-")


@cache
def translations(tag: str) -> gettext.NullTranslations:
    """The catalog of a built-in locale, read once; English (and a locale whose catalog is
    missing, which `tests/test_i18n.py` rules out for the shipped ones) translates nothing.

    Read from the .po text itself, compiled in memory: no build step, and no compiled
    file that could fall behind its source. Fuzzy entries are left out, as msgfmt does.
    """
    path = CATALOGS_DIR / tag.replace("-", "_") / "LC_MESSAGES" / f"{DOMAIN}.po"
    if tag == DEFAULT_LOCALE or not path.is_file():
        return gettext.NullTranslations()
    with path.open("rb") as source:
        catalog = read_po(source, locale=tag.replace("-", "_"))
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


# --- durations, relative times and dates ------------------------------------------------

_UNITS: Final = (
    ("duration-day", 86400),
    ("duration-hour", 3600),
    ("duration-minute", 60),
    ("duration-second", 1),
)


def format_duration(value: timedelta | float, tag: str, *, parts: int = 2) -> str:
    """ "2h 13m" in English, "2h, 13 Min." in German, "2 ч 13 мин" in Russian: the
    `parts` largest non-zero units in CLDR's narrow unit forms, joined as CLDR joins
    units. Truncated, not rounded: a stream 1h 59m 50s long streamed "1h 59m"."""
    total = int(value.total_seconds() if isinstance(value, timedelta) else value)
    locale = babel_locale(tag)
    amounts = []
    for unit, size in _UNITS:
        amount, total = divmod(total, size)
        if amount > 0:
            amounts.append(format_unit(amount, unit, length="narrow", locale=locale))
    if not amounts:
        return format_unit(0, "duration-second", length="narrow", locale=locale)
    return _join_units(amounts[:parts], locale)


def _join_units(items: list[str], locale: Locale) -> str:
    """Units as CLDR lists them ("2h 13m")."""
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return _unit_pattern(locale, "2").format(*items)
    result = _unit_pattern(locale, "start").format(items[0], items[1])
    for item in items[2:-1]:
        result = _unit_pattern(locale, "middle").format(result, item)
    return _unit_pattern(locale, "end").format(result, items[-1])


def _unit_pattern(locale: Locale, key: str) -> str:
    """One of CLDR's patterns for a list of units. Babel keeps only what a locale changes
    from its parents, and its format_list does not follow CLDR's fallback from a narrow
    unit list to the short one, so it is followed here: this locale's narrow, short and
    plain unit lists, then root's."""
    for source in (locale, Locale("root")):
        for style in ("unit-narrow", "unit-short", "unit"):
            try:
                patterns = source.list_patterns[style]
            except KeyError:
                continue
            if key in patterns:
                return str(patterns[key])
    return "{0} {1}"


#: Below this, a moment is "just now" rather than so many seconds ago.
JUST_NOW: Final = timedelta(seconds=45)


def relative_time(moment: datetime, now: datetime, tag: str) -> str:
    """ "5 minutes ago", "in 3 hours", "just now", in the locale's words (CLDR).

    Counted down to whole units, never rounded up: 1h 59m ago is "1 hour ago" (Babel
    would round that to two hours; handing it a whole number of units keeps it exact)."""
    seconds = (now - moment).total_seconds()
    if abs(seconds) < JUST_NOW.total_seconds():
        return translations(tag).gettext("just now")
    steps: tuple[tuple[Literal["day", "hour", "minute"], int], ...] = (
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
    )
    for unit, size in steps:
        if abs(seconds) >= size or unit == "minute":
            amount = max(1, int(abs(seconds) // size))
            break
    exact = timedelta(seconds=amount * size * (1 if seconds < 0 else -1))
    return format_timedelta(
        exact, granularity=unit, threshold=1, add_direction=True, locale=babel_locale(tag)
    )


def format_moment(moment: datetime, tag: str) -> str:
    """An absolute time in UTC as the locale writes a date and a time: "Mar 11, 2026,
    5:22 AM UTC", "11.03.2026, 05:22 UTC", "2026/03/11 5:22 UTC"."""
    locale = babel_locale(tag)
    # How CLDR puts a date and a time together ("{1}, {0}", with any quoted literals),
    # filled with its medium date and short time: one pattern, formatted once.
    pattern = (
        str(locale.datetime_formats["medium"])
        .replace("{1}", locale.date_formats["medium"].pattern)
        .replace("{0}", locale.time_formats["short"].pattern)
    )
    return format_datetime(moment, pattern, tzinfo=UTC, locale=locale) + " UTC"


def join_list(items: list[str], tag: str, *, style: Literal["standard", "or"] = "standard") -> str:
    """ "a, b and c" as the locale lists things ("a, b und c", "a、b、c"); `style` "or" for
    "a, b or c"."""
    return format_list(items, style=style, locale=babel_locale(tag)) if items else ""
