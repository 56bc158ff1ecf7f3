"""OneLiveRec: every example in its webhook docs parses; auth; field-path schema errors."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.config import SourceConfig
from bot.errors import AuthError, SchemaError
from bot.sources.base import WebhookRequest, body_digest
from bot.sources.onliverec import OneLiveRecSource

RECEIVED = datetime(2026, 3, 11, 6, 0, tzinfo=UTC)

# The live_info example from the seed doc, verbatim.
LIVE_INFO = {
    "uid": "<USER ID>",
    "uname": "<USER NAME>",
    "avatar": "https://live.example.com/avatar.jpg",
    "title": "<TITLE>",
    "cover": "https://live.example.com/cover.jpg",
    "categories": ["<PRIMARY CATEGORY>", "<SECONDARY CATEGORY>"],
    "status": "live",
    "live_id": "<LIVE ID>",
    "start_time": "2026-03-11T05:22:38Z",
}

STREAM = {"platform": "<PLATFORM>", "channel": "<CHANNEL>"}

# Every example payload of ../shared/seeds/onliverec-webhooks.txt, as printed there
# (note that most omit `id` and `ts`), with the kind and streamer key each must give.
SEED_EXAMPLES: list[tuple[str, dict[str, Any], str | None, str | None]] = [
    ("app_launch", {"type": "app_launch"}, "app_launch", None),
    ("app_exit", {"type": "app_exit"}, "app_exit", None),
    (
        "live_start",
        {
            "type": "live_start",
            "data": {**STREAM, "url": "https://live.example.com", "live_info": {}},
        },
        "live_start",
        "<platform>/<CHANNEL>",
    ),
    (
        "live_end",
        {
            "type": "live_end",
            "data": {**STREAM, "url": "https://live.example.com", "live_info": {}},
        },
        "live_end",
        "<platform>/<CHANNEL>",
    ),
    (
        "video_file_create",
        {"type": "video_file_create", "data": {**STREAM, "path": "path/to/file.ts"}},
        "video_file_create",
        "<platform>/<CHANNEL>",
    ),
    (
        "video_file_finish",
        {
            "type": "video_file_finish",
            "data": {
                **STREAM,
                "path": "path/to/file.mp4",
                "filesize": 1073741824,
                "duration": 3600,
            },
        },
        "video_file_finish",
        "<platform>/<CHANNEL>",
    ),
    (
        "video_transmux_finish",
        {
            "type": "video_transmux_finish",
            "data": {**STREAM, "input": "path/to/input.file", "output": "path/to/output.file"},
        },
        "video_transmux_finish",
        "<platform>/<CHANNEL>",
    ),
    (
        "title_change",
        {"type": "title_change", "data": {**STREAM, "old_live_info": {}, "new_live_info": {}}},
        "title_change",
        "<platform>/<CHANNEL>",
    ),
    (
        "category_change",
        {"type": "category_change", "data": {**STREAM, "old_live_info": {}, "new_live_info": {}}},
        "category_change",
        "<platform>/<CHANNEL>",
    ),
    (
        "error",
        {"type": "error", "data": {**STREAM, "error": "Something went wrong"}},
        "error",
        "<platform>/<CHANNEL>",
    ),
    (
        "common structure",
        {
            "id": "398ea849-7c4b-45c4-bd2f-093df217266c",
            "ts": "2026-03-11T05:22:38.393477700Z",
            "type": "event_type",
            "data": {},
        },
        None,  # "event_type" is a placeholder, not a type: ignored
        None,
    ),
]


def source() -> OneLiveRecSource:
    return OneLiveRecSource(SourceConfig(name="rec", kind="onliverec", secret="k3y"))


def request(payload: Any, query: dict[str, str] | None = None) -> WebhookRequest:
    return WebhookRequest(
        query=query if query is not None else {"key": "k3y"},
        headers={},
        body=json.dumps(payload).encode(),
        received_at=RECEIVED,
    )


def parse(payload: dict[str, Any]) -> Any:
    return source().parse(payload, request(payload))


@pytest.mark.parametrize(
    ("name", "payload", "kind", "key"), SEED_EXAMPLES, ids=[e[0] for e in SEED_EXAMPLES]
)
def test_every_seed_example_parses(
    name: str, payload: dict[str, Any], kind: str | None, key: str | None
) -> None:
    event = parse(payload)
    if kind is None:
        assert event is None
        return
    assert event is not None
    assert event.kind == kind
    assert event.streamer_key == key
    assert event.source == "rec"
    # No id in the example: a content hash stands in, so a retry of the body dedupes.
    assert event.event_id == body_digest(json.dumps(payload).encode())
    assert event.occurred_at == RECEIVED


def test_live_start_with_full_live_info() -> None:
    payload = {
        "id": "e1",
        "ts": "2026-03-11T05:22:38.393477700Z",
        "type": "live_start",
        "data": {
            "platform": "Twitch",
            "channel": "quinn",
            "url": "https://twitch.tv/quinn",
            "live_info": LIVE_INFO,
        },
    }
    event = parse(payload)
    assert event.event_id == "e1"
    assert event.occurred_at == datetime(2026, 3, 11, 5, 22, 38, 393477, tzinfo=UTC)
    assert event.streamer_key == "twitch/quinn"
    assert event.display_name == "<USER NAME>"
    assert event.url == "https://twitch.tv/quinn"
    assert event.live.title == "<TITLE>"
    assert event.live.categories == ("<PRIMARY CATEGORY>", "<SECONDARY CATEGORY>")
    assert event.live.category == "<PRIMARY CATEGORY>"
    assert event.live.cover == "https://live.example.com/cover.jpg"
    assert event.live.avatar == "https://live.example.com/avatar.jpg"
    assert event.live.live_id == "<LIVE ID>"
    assert event.started_at == datetime(2026, 3, 11, 5, 22, 38, tzinfo=UTC)


def test_title_change_carries_old_and_new() -> None:
    old = {**LIVE_INFO, "title": "Old title"}
    new = {**LIVE_INFO, "title": "New title"}
    event = parse(
        {
            "id": "t1",
            "type": "title_change",
            "data": {**STREAM, "old_live_info": old, "new_live_info": new},
        }
    )
    assert event.old_live.title == "Old title"
    assert event.live.title == "New title"


def test_recording_details_are_kept() -> None:
    event = parse(SEED_EXAMPLES[5][1])
    assert event.details == {
        "path": "path/to/file.mp4",
        "filesize": 1073741824.0,
        "duration": 3600.0,
    }


@pytest.mark.parametrize(("field", "value"), [("filesize", 10**400), ("duration", float("-inf"))])
def test_a_number_no_float_holds_is_out_of_range(field: str, value: float) -> None:
    payload = copy.deepcopy(SEED_EXAMPLES[5][1])
    payload["data"][field] = value
    with pytest.raises(SchemaError) as info:
        parse(payload)
    assert info.value.path == f"data.{field}"
    assert info.value.message == f"data.{field}: is out of range"


def test_error_without_channel_is_the_recorders_own() -> None:
    event = parse({"id": "x", "type": "error", "data": {"error": "disk full"}})
    assert event.kind == "error"
    assert event.error == "disk full"
    assert event.streamer_key is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("live_id", None), ("start_time", None)],
)
def test_nullable_fields_may_be_null_or_missing(field: str, value: Any) -> None:
    info = {**LIVE_INFO, field: value}
    assert parse({"type": "live_start", "data": {**STREAM, "live_info": info}}) is not None
    del info[field]
    assert parse({"type": "live_start", "data": {**STREAM, "live_info": info}}) is not None


def test_numeric_channel_and_ids_are_accepted_as_strings() -> None:
    event = parse(
        {
            "id": 42,
            "type": "live_start",
            "data": {
                "platform": "bilibili",
                "channel": 123456,
                "live_info": {"uid": 99, "live_id": 7},
            },
        }
    )
    assert event.event_id == "42"
    assert event.streamer_key == "bilibili/123456"
    assert event.live.uid == "99"
    assert event.live.live_id == "7"


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda p: p.pop("type"), "type"),
        (lambda p: p.update(type=5), "type"),
        (lambda p: p.update(data=[]), "data"),
        (lambda p: p["data"].pop("platform"), "data.platform"),
        (lambda p: p["data"].update(channel=""), "data.channel"),
        (lambda p: p["data"].update(channel=True), "data.channel"),
        (lambda p: p["data"].update(url=3), "data.url"),
        (lambda p: p["data"].update(live_info="x"), "data.live_info"),
        (lambda p: p["data"]["live_info"].update(title=["a"]), "data.live_info.title"),
        (lambda p: p["data"]["live_info"].update(categories="Music"), "data.live_info.categories"),
        (
            lambda p: p["data"]["live_info"].update(categories=["ok", 3]),
            "data.live_info.categories[1]",
        ),
        (
            lambda p: p["data"]["live_info"].update(start_time="yesterday"),
            "data.live_info.start_time",
        ),
        (lambda p: p.update(ts="not a time"), "ts"),
        # Valid local times whose UTC instant falls outside years 1 to 9999.
        (lambda p: p.update(ts="9999-12-31T23:59:59-23:59"), "ts"),
        (
            lambda p: p["data"]["live_info"].update(start_time="0001-01-01T00:00:00+01:00"),
            "data.live_info.start_time",
        ),
        (lambda p: p.update(id=1.5), "id"),
    ],
)
def test_wrong_shapes_name_the_field(mutate: Any, path: str) -> None:
    payload = {
        "id": "e",
        "ts": "2026-03-11T05:22:38Z",
        "type": "live_start",
        "data": {**STREAM, "url": "https://x", "live_info": copy.deepcopy(LIVE_INFO)},
    }
    mutate(payload)
    with pytest.raises(SchemaError) as info:
        parse(payload)
    assert info.value.path == path


@pytest.mark.parametrize(
    "query", [{}, {"key": ""}, {"key": "k3"}, {"key": "k3y "}, {"KEY": "k3y"}]
)
def test_wrong_or_missing_key_is_refused(query: dict[str, str]) -> None:
    with pytest.raises(AuthError) as info:
        source().verify(request({"type": "app_launch"}, query))
    assert "k3y" not in str(info.value)


def test_right_key_is_accepted() -> None:
    source().verify(request({"type": "app_launch"}))


def test_repr_hides_the_secret() -> None:
    assert "k3y" not in repr(source())
