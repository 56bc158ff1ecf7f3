"""Route filters, silence, quiet hours and @everyone as the dispatch stage plans them:
which chats get a message, which get a late card, and what each row carries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.config import BehaviourConfig, Route, load_config
from bot.events import Event, LiveInfo
from bot.pipeline.dispatch import Dispatcher
from bot.store import DeliveryInfo, Store, Subscription

#: A Wednesday, 12:00 UTC.
NOON = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def routes(*tables: dict[str, Any], behaviour: dict[str, Any] | None = None) -> Any:
    data: dict[str, Any] = {
        "discord": {"token": "x" * 59},
        "routes": list(tables),
        "behaviour": {"end_grace": "0s", **(behaviour or {})},
    }
    return load_config(data, environ={}, base_dir=Path("."))


def dispatcher(
    store: Store, *tables: dict[str, Any], at: datetime = NOON, **behaviour: Any
) -> Dispatcher:
    config = routes(*tables, behaviour=behaviour)
    return Dispatcher(
        store=store,
        routes=config.routes,
        sinks=["console", "discord"],
        behaviour=config.behaviour,
        clock=at.timestamp,
    )


def event(
    kind: str, event_id: str, minutes: float = 0, channel: str = "quinn", **live: Any
) -> Event:
    moment = NOON + timedelta(minutes=minutes)
    return Event(
        source="rec",
        event_id=event_id,
        kind=kind,
        occurred_at=moment,
        received_at=moment,
        platform="twitch",
        channel=channel,
        live=LiveInfo(**live) if live else None,
    )


async def discord_rows(store: Store, row: int | None) -> list[DeliveryInfo]:
    assert row is not None
    return [r for r in await store.deliveries_for_event(row) if r.sink == "discord"]


CELESTE_ONLY = {
    "match": "*",
    "discord_channels": ["111111111111111111"],
    "mention_roles": ["222222222222222222"],
    "categories": ["celeste*"],
}


async def test_a_start_the_filters_leave_out_gets_no_message(store: Store) -> None:
    d = dispatcher(store, CELESTE_ONLY)
    start = await d.accept(event("live_start", "s", title="Slots!", categories=("Slots",)))
    assert await discord_rows(store, start.event_row) == []
    # The console follows the routes as the chats do: nothing printed either.
    assert await store.deliveries_for_event(start.event_row or 0) == []


async def test_a_switch_to_a_wanted_category_posts_the_sessions_card_with_the_pings(
    store: Store,
) -> None:
    d = dispatcher(store, CELESTE_ONLY)
    start = await d.accept(event("live_start", "s", title="Warm-up", categories=("Slots",)))
    change = await d.accept(event("category_change", "c", 5, categories=("Celeste",)))
    assert await discord_rows(store, change.event_row) == []  # no change notice...
    # ...but a card, the session's own, drawn from the change, with the route's pings.
    (card,) = await discord_rows(store, start.event_row)
    assert card.action == "post"
    assert card.options["view"] == change.event_row  # drawn as the stream is after it
    assert card.options["mention_roles"] == [222222222222222222]
    # A later change edits that card, as any card.
    retitle = await d.accept(event("title_change", "t", 9, title="PB attempts"))
    (edit,) = await discord_rows(store, retitle.event_row)
    assert (edit.action, edit.options["card"]) == ("edit", card.id)


async def test_a_switch_away_leaves_the_card_following_but_posts_nothing(store: Store) -> None:
    d = dispatcher(store, {**CELESTE_ONLY, "on_change": "both"})
    start = await d.accept(event("live_start", "s", title="Any%", categories=("Celeste",)))
    (card,) = await discord_rows(store, start.event_row)
    away = await d.accept(event("category_change", "c", 5, categories=("Slots",)))
    # on_change = "both" would post a notice too; the stream left the filter: edit only.
    rows = await discord_rows(store, away.event_row)
    assert [(r.action, r.options.get("card")) for r in rows] == [("edit", card.id)]
    end = await d.accept(event("live_end", "e", 60))
    assert [r.action for r in await discord_rows(store, end.event_row)] == ["edit"]


async def test_an_end_of_a_stream_a_chat_never_saw_is_not_announced(store: Store) -> None:
    d = dispatcher(store, {**CELESTE_ONLY, "on_end": "post"})
    await d.accept(event("live_start", "s", title="x", categories=("Slots",)))
    end = await d.accept(event("live_end", "e", 60))
    assert await discord_rows(store, end.event_row) == []


async def test_a_chat_gets_what_any_route_reaching_it_wants(store: Store) -> None:
    everything = {"match": "*", "discord_channels": ["111111111111111111"]}
    d = dispatcher(store, CELESTE_ONLY, everything)
    start = await d.accept(event("live_start", "s", title="x", categories=("Slots",)))
    (post,) = await discord_rows(store, start.event_row)
    # The filtering route did not pass, so its roles are not pinged.
    assert "mention_roles" not in post.options


async def test_title_filters_look_at_the_stream_as_it_is_after_the_event(store: Store) -> None:
    d = dispatcher(
        store,
        {"match": "*", "discord_channels": ["111111111111111111"], "title_exclude": "rerun"},
    )
    start = await d.accept(event("live_start", "s", title="Rerun: best of", categories=("X",)))
    assert await discord_rows(store, start.event_row) == []
    fresh = await d.accept(event("title_change", "t", 3, title="Live now"))
    assert [r.action for r in await discord_rows(store, start.event_row)] == ["post"]
    assert await discord_rows(store, fresh.event_row) == []


async def test_silent_routes_and_quiet_hours_send_silently_without_pings(store: Store) -> None:
    loud = {**CELESTE_ONLY, "categories": ["*"], "mention_everyone": True}
    d = dispatcher(store, loud)
    start = await d.accept(event("live_start", "s", title="x", categories=("Celeste",)))
    (post,) = await discord_rows(store, start.event_row)
    assert post.options == {"mention_roles": [222222222222222222], "mention_everyone": True}

    # The same route in its quiet hours (12:00 UTC is 13:00 in Berlin): silent, no pings.
    quiet = {**loud, "quiet_hours": ["13:00-14:00"], "timezone": "Europe/Berlin"}
    d = dispatcher(store, quiet)
    start = await d.accept(
        event("live_start", "s2", 120, "mika", title="y", categories=("Celeste",))
    )
    (post,) = await discord_rows(store, start.event_row)
    assert post.options == {"silent": True}

    # `silent` keeps the pings (they show, nobody's phone rings).
    d = dispatcher(store, {**loud, "silent": True})
    start = await d.accept(
        event("live_start", "s3", 240, "ada", title="z", categories=("Celeste",))
    )
    (post,) = await discord_rows(store, start.event_row)
    assert post.options["silent"] is True
    assert post.options["mention_roles"] == [222222222222222222]


async def test_behaviours_quiet_hours_apply_to_routes_without_their_own(store: Store) -> None:
    d = dispatcher(store, CELESTE_ONLY, quiet_hours=["wed 11:00-13:00"])
    start = await d.accept(event("live_start", "s", title="x", categories=("Celeste",)))
    (post,) = await discord_rows(store, start.event_row)
    assert post.options == {"silent": True}
    # Outside them (a Wednesday at 14:00): loud again.
    later = dispatcher(
        store, CELESTE_ONLY, at=NOON + timedelta(hours=2), quiet_hours=["wed 11:00-13:00"]
    )
    await later.accept(event("live_end", "e", 60))
    start = await later.accept(event("live_start", "s2", 180, title="x", categories=("Celeste",)))
    (post,) = await discord_rows(store, start.event_row)
    assert post.options == {"mention_roles": [222222222222222222]}


async def test_subscriptions_are_not_filtered(store: Store) -> None:
    d = dispatcher(store, CELESTE_ONLY)
    await store.add_subscription(
        Subscription("discord", "333333333333333333", "twitch/*"), now=NOON.timestamp()
    )
    start = await d.accept(event("live_start", "s", title="x", categories=("Slots",)))
    assert [r.target for r in await discord_rows(store, start.event_row)] == ["333333333333333333"]


async def test_everyone_is_pinged_on_live_start_only(store: Store) -> None:
    d = dispatcher(store, {**CELESTE_ONLY, "categories": ["*"], "mention_everyone": True})
    await d.accept(event("live_start", "s", title="x", categories=("Celeste",)))
    end = await d.accept(event("live_end", "e", 60))
    assert all(
        "mention_everyone" not in r.options for r in await discord_rows(store, end.event_row)
    )


def test_router_options_for_a_route_without_extras_are_unchanged() -> None:
    config = routes({"match": "*", "discord_channels": ["111111111111111111"]})
    (route,) = config.routes
    assert isinstance(route, Route) and not route.filters and not route.silent
    assert config.behaviour.quiet_hours == ()
    assert isinstance(config.behaviour, BehaviourConfig)


async def test_the_first_route_that_wants_the_stream_decides_the_chats_policy(
    store: Store,
) -> None:
    posting = {**CELESTE_ONLY, "on_end": "post"}  # filters Slots out
    editing = {"match": "*", "discord_channels": ["111111111111111111"], "on_end": "edit"}
    d = dispatcher(store, posting, editing)
    await d.accept(event("live_start", "s", title="x", categories=("Slots",)))
    end = await d.accept(event("live_end", "e", 60))
    assert [r.action for r in await discord_rows(store, end.event_row)] == ["edit"]


async def test_a_sessions_notices_carry_its_card_to_find_its_thread(store: Store) -> None:
    threaded = {**CELESTE_ONLY, "categories": ["*"], "thread": "per_stream", "on_change": "post"}
    d = dispatcher(store, threaded)
    start = await d.accept(event("live_start", "s", title="x", categories=("Celeste",)))
    (card,) = await discord_rows(store, start.event_row)
    assert card.options["thread"] == "per_stream"
    change = await d.accept(event("title_change", "t", 5, title="y"))
    (notice,) = await discord_rows(store, change.event_row)
    assert (notice.action, notice.options["card"]) == ("post", card.id)
