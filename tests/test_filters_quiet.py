"""Route filters and quiet hours as config reads them: RE2 title patterns, category globs,
quiet windows and time zones, each mistake named by its key."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.config import Config, Route, load_config
from bot.errors import ConfigError
from bot.events import LiveInfo
from bot.matching import PatternError, TitlePattern, category_matches
from bot.quiet import WindowError, is_quiet, parse_window


def load(route: dict[str, Any], behaviour: dict[str, Any] | None = None) -> Config:
    data: dict[str, Any] = {"routes": [{"match": "*", **route}]}
    if behaviour is not None:
        data["behaviour"] = behaviour
    return load_config(data, environ={}, base_dir=Path("."))


def route(**keys: Any) -> Route:
    return load(keys).routes[0]


def problems(route: dict[str, Any], behaviour: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(route, behaviour)
    return list(info.value.problems)


def live(title: str | None = None, *categories: str) -> LiveInfo:
    return LiveInfo(title=title, categories=categories)


# -- titles ----------------------------------------------------------------------------


async def test_a_catastrophic_pattern_on_a_hostile_title_returns_at_once() -> None:
    # `(a+)+$` takes Python's re exponential time on "aaaa...b"; RE2 is linear. The
    # guard is a generous ceiling for a hang, not a speed measurement.
    pattern = TitlePattern(r"(a+)+$")
    hostile = "a" * 100_000 + "b"
    found = await asyncio.wait_for(asyncio.to_thread(pattern.search, hostile), timeout=30)
    assert found is False
    assert pattern.search("aaaa") is True


def test_titles_match_anywhere_and_without_case() -> None:
    pattern = TitlePattern(r"any%|speedrun")
    assert pattern.search("Celeste ANY% attempts")
    assert pattern.search("SpeedRun Sunday")
    assert not pattern.search("Just vibing")
    assert not TitlePattern(r"(?-i)Speedrun").search("speedrun")


@pytest.mark.parametrize("bad", [r"(a)\1", r"(?=x)y", r"(?<!x)y", r"[unclosed"])
def test_what_re2_cannot_match_linearly_is_refused(bad: str) -> None:
    with pytest.raises(PatternError):
        TitlePattern(bad)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"title_match": r"(a)\1"}, "routes[0].title_match: is not a pattern the bot can match"),
        ({"title_exclude": "(?=x)"}, "routes[0].title_exclude: is not a pattern the bot can"),
        ({"title_match": ""}, "routes[0].title_match: must not be empty"),
        ({"title_match": 5}, "routes[0].title_match: expected a string, got integer"),
        ({"categories": []}, "routes[0].categories: must not be empty"),
        ({"categories": ["Celeste", 3]}, "routes[0].categories[1]: expected a string"),
        ({"exclude_categories": [""]}, "routes[0].exclude_categories[0]: must not be empty"),
        ({"silent": "yes"}, "routes[0].silent: expected a boolean"),
        ({"mention_everyone": 1}, "routes[0].mention_everyone: expected a boolean"),
        ({"quiet_hours": ["22-08"]}, "routes[0].quiet_hours[0]: '22-08' is not a window"),
        ({"quiet_hours": ["25:00-08:00"]}, "routes[0].quiet_hours[0]: '25:00' is not a time"),
        ({"quiet_hours": ["funday 22:00-08:00"]}, "routes[0].quiet_hours[0]: 'funday' is not"),
        ({"quiet_hours": ["08:00-08:00"]}, "routes[0].quiet_hours[0]: '08:00-08:00' is empty"),
        ({"quiet_hours": "22:00-08:00"}, "routes[0].quiet_hours: expected a list"),
        ({"timezone": "Mars/Olympus"}, "routes[0].timezone: 'Mars/Olympus' is not an IANA"),
    ],
)
def test_route_mistakes_are_named_by_key(keys: dict[str, Any], expected: str) -> None:
    found = problems(keys)
    assert any(p.startswith(expected) for p in found), found


def test_behaviour_mistakes_are_named_by_key() -> None:
    found = problems({}, {"quiet_hours": ["mon-xyz 22:00-08:00"], "timezone": "Berlin"})
    assert any(p.startswith("behaviour.quiet_hours[0]: 'mon-xyz' is not") for p in found), found
    assert any(p.startswith("behaviour.timezone: 'Berlin' is not an IANA") for p in found)


# -- categories ------------------------------------------------------------------------


def test_categories_are_globs_without_case() -> None:
    assert category_matches(["Just Chatting"], ["just chatting"])
    assert category_matches(["Celeste Classic"], ["celeste*"])
    assert not category_matches(["Slots"], ["Celeste", "Just Chatting"])
    assert not category_matches([], ["*"])


def test_a_route_wants_what_passes_every_filter() -> None:
    only = route(categories=["Celeste", "Just Chatting"], title_exclude="rerun")
    assert only.filters
    assert only.wants(live("Any% PB", "Celeste"))
    assert not only.wants(live("Any% PB (rerun)", "Celeste"))
    assert not only.wants(live("Spinning", "Slots"))
    assert not only.wants(live("No category yet"))  # unknown is not wanted
    assert not only.wants(None)
    excluding = route(exclude_categories=["slots", "casino*"])
    assert excluding.wants(live("anything", "Celeste"))
    assert excluding.wants(live("anything"))  # nothing to exclude
    assert not excluding.wants(live("x", "Casino Royale"))
    titled = route(title_match=r"\bany%")
    assert titled.wants(live("Celeste any% runs"))
    assert not titled.wants(live(None))
    assert not route().filters and route().wants(None)


# -- quiet hours -----------------------------------------------------------------------


def at(text: str, zone: str = "UTC") -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


def test_a_window_past_midnight_belongs_to_the_day_it_starts() -> None:
    friday_nights = [parse_window("fri 22:00-08:00")]
    assert is_quiet(friday_nights, None, at("2026-12-04T23:30"))  # Friday night
    assert is_quiet(friday_nights, None, at("2026-12-05T07:59"))  # Saturday morning
    assert not is_quiet(friday_nights, None, at("2026-12-05T08:00"))
    assert not is_quiet(friday_nights, None, at("2026-12-05T23:00"))  # Saturday night
    assert not is_quiet(friday_nights, None, at("2026-12-04T07:00"))  # Thursday's morning


def test_day_lists_ranges_and_wrapping_ranges() -> None:
    weekend = [parse_window("sat,sun 00:00-24:00")]
    assert is_quiet(weekend, None, at("2026-12-06T12:00"))  # Sunday
    assert not is_quiet(weekend, None, at("2026-12-07T12:00"))  # Monday
    long_weekend = [parse_window("FRI-MON 20:00-23:00")]
    assert is_quiet(long_weekend, None, at("2026-12-07T21:00"))  # Monday
    assert not is_quiet(long_weekend, None, at("2026-12-08T21:00"))  # Tuesday
    every_day = [parse_window(" 22:00 - 08:00 ")]
    assert is_quiet(every_day, None, at("2026-12-08T03:00"))


def test_quiet_hours_are_read_in_the_zone_across_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    nights = [parse_window("22:00-08:00")]
    # 21:30 UTC is 22:30 in Berlin in winter (UTC+1) but 23:30 in summer (UTC+2).
    assert is_quiet(nights, berlin, datetime(2026, 12, 3, 21, 30, tzinfo=UTC))
    assert is_quiet(nights, berlin, datetime(2026, 7, 3, 20, 30, tzinfo=UTC))  # 22:30 CEST
    assert not is_quiet(nights, berlin, datetime(2026, 12, 3, 20, 30, tzinfo=UTC))  # 21:30


def test_a_routes_quiet_hours_override_behaviours() -> None:
    config = load(
        {"quiet_hours": [], "timezone": "America/New_York"},
        {"quiet_hours": ["00:00-24:00"], "timezone": "Europe/Berlin"},
    )
    (own,) = config.routes
    noon = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert not own.quiet(noon, config.behaviour)  # [] means none, not [behaviour]'s
    inherited = load({}, {"quiet_hours": ["12:00-14:00"], "timezone": "Europe/Berlin"})
    assert inherited.routes[0].quiet(noon, inherited.behaviour)  # 13:00 in Berlin
    assert not inherited.routes[0].quiet(
        datetime(2026, 12, 3, 14, 0, tzinfo=UTC), inherited.behaviour
    )


@pytest.mark.parametrize("bad", ["24:00-08:00", "mon-fri", "noon-midnight", "22:60-23:00"])
def test_bad_windows_are_refused(bad: str) -> None:
    with pytest.raises(WindowError):
        parse_window(bad)
