"""Session-card policy: which actions each chat takes, and how a card looks after an edit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.events import Event, LiveInfo
from bot.pipeline.cards import CardPolicy, card_actions, card_view

AT = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "on_change", "on_end", "has_card", "expected"),
    [
        ("live_start", "both", "both", False, ["post"]),
        ("error", "edit", "edit", True, ["post"]),
        ("title_change", "edit", "edit", True, ["edit"]),
        ("title_change", "post", "edit", True, ["post"]),
        ("category_change", "both", "edit", True, ["edit", "post"]),
        # No card to edit: the change is posted rather than lost.
        ("title_change", "edit", "edit", False, ["post"]),
        ("title_change", "both", "edit", False, ["post"]),
        ("live_end", "post", "edit", True, ["edit"]),
        ("live_end", "edit", "post", True, ["post"]),
        ("live_end", "edit", "both", True, ["edit", "post"]),
        ("live_end", "edit", "delete", True, ["delete"]),
        ("live_end", "edit", "edit", False, ["post"]),
        # Nothing to delete: nothing is posted either.
        ("live_end", "edit", "delete", False, []),
    ],
)
def test_card_actions(
    kind: str, on_change: str, on_end: str, has_card: bool, expected: list[str]
) -> None:
    policy = CardPolicy(on_change=on_change, on_end=on_end)
    assert card_actions(kind, policy, has_card=has_card) == expected


def event(kind: str, **fields: object) -> Event:
    return Event(
        source="rec",
        event_id="e",
        kind=kind,
        occurred_at=AT,
        received_at=AT,
        platform="twitch",
        channel="quinn",
        **fields,
    )  # type: ignore[arg-type]


def test_a_card_edited_for_a_change_still_looks_live_with_the_new_details() -> None:
    change = event("title_change", live=LiveInfo(title="New"), old_live=LiveInfo(title="Old"))
    card = card_view(change)
    assert card.kind == "live_start"
    assert card.live is not None and card.live.title == "New"
    assert card.old_live is None


def test_a_card_edited_at_the_end_looks_ended() -> None:
    end = event("live_end", live=LiveInfo(title="Final"))
    assert card_view(end) is end
