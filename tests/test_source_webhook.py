"""kind = "webhook": the owncast, blrec and custom presets, both auth schemes, and the
config checks that name each bad key or entry."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot import events as ev
from bot.config import SourceConfig, load_config
from bot.errors import AuthError, ConfigError, SchemaError
from bot.registry import SOURCES
from bot.sources.base import WebhookRequest
from bot.sources.presets import blrec, owncast
from bot.sources.webhook import WebhookSource

SECRET = "webhook-test-secret-5b2e"
RECEIVED = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
SERVER = "https://live.example.com"

CUSTOM_FIELDS = {
    "event_id": "id",
    "kind": "event",
    "platform": "data.site",
    "channel": "data.user.login",
    "display_name": "data.user.name",
    "title": "data.title",
    "category": "data.game",
    "url": "data.url",
    "cover": "data.thumbnail",
    "avatar": "data.user.avatar",
    "started_at": "data.started",
}
CUSTOM_KINDS = {
    "stream.up": "live_start",
    "stream.down": "live_end",
    "stream.changed": "title_change",
}


def entry(**options: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"name": "hook", "kind": "webhook", "secret": SECRET}
    table.update(options)
    return {k: v for k, v in table.items() if v is not None}


OWNCAST = {"preset": "owncast", "channel": "aurora", "server_url": SERVER + "/"}
CUSTOM = {"preset": "custom", "fields": CUSTOM_FIELDS, "kinds": CUSTOM_KINDS}


def build(**options: Any) -> WebhookSource:
    config = load_config({"sources": [entry(**options)]}, environ={}, base_dir=Path("."))
    (source,) = config.sources
    return WebhookSource(source)


def problems(**options: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config({"sources": [entry(**options)]}, environ={}, base_dir=Path("."))
    return list(info.value.problems)


def req(payload: Any, *, query: dict[str, str] | None = None, **headers: str) -> WebhookRequest:
    body = json.dumps(payload).encode()
    return WebhookRequest(query=query or {}, headers=headers, body=body, received_at=RECEIVED)


def parse(source: WebhookSource, payload: dict[str, Any]) -> ev.Event | None:
    return source.parse(payload, req(payload))


# --- owncast ------------------------------------------------------------------------------


def test_owncast_stream_events_become_our_kinds() -> None:
    source = build(**OWNCAST)
    start = parse(source, dict(owncast.SAMPLES["STREAM_STARTED"]))
    assert start is not None
    assert (start.kind, start.streamer_key, start.event_id) == (
        ev.LIVE_START,
        "owncast/aurora",
        "WtokptnVR",
    )
    assert start.url == SERVER
    assert start.live is not None and start.live.title == "Late-night synth jam"
    assert start.live.cover == f"{SERVER}/thumbnail.jpg?t={int(start.occurred_at.timestamp())}"
    assert start.live.start_time == datetime(2026, 3, 11, 5, 22, 38, 979071, tzinfo=UTC)
    assert start.display_name == "Aurora Vale Live"

    update = parse(source, dict(owncast.SAMPLES["STREAM_TITLE_UPDATED"]))
    assert update is not None and update.kind == ev.STREAM_UPDATE
    assert update.live is not None and update.live.title == "Modular patching Q&A"
    stop = parse(source, dict(owncast.SAMPLES["STREAM_STOPPED"]))
    assert stop is not None and stop.kind == ev.LIVE_END
    assert stop.started_at == start.live.start_time


def test_owncast_empty_title_falls_back_to_the_server_name() -> None:
    # The shape of Owncast's own STREAM_STARTED example (v0.2.5 docs): no title set.
    payload = {
        "type": "STREAM_STARTED",
        "eventData": {
            "id": "WtokptnVR",
            "name": "Owncast",
            "streamTitle": "",
            "summary": "Welcome to your new Owncast server!",
            "timestamp": "2022-09-19T12:30:26.97907142+02:00",
        },
    }
    event = parse(build(**OWNCAST), payload)
    assert event is not None and event.live is not None
    assert event.live.title == "Owncast"
    assert event.occurred_at == datetime(2022, 9, 19, 10, 30, 26, 979071, tzinfo=UTC)


@pytest.mark.parametrize("etype", ["CHAT", "USER_JOINED", "FEDIVERSE_ENGAGEMENT_FOLLOW"])
def test_owncast_other_types_are_ignored(etype: str) -> None:
    assert parse(build(**OWNCAST), {"type": etype, "eventData": {"id": "x"}}) is None


def test_owncast_without_event_data_names_the_field() -> None:
    with pytest.raises(SchemaError) as info:
        parse(build(**OWNCAST), {"type": "STREAM_STARTED"})
    assert info.value.path == "eventData"


# --- blrec --------------------------------------------------------------------------------


def test_blrec_events_become_our_kinds_keyed_by_room() -> None:
    source = build(preset="blrec")
    start = parse(source, dict(blrec.SAMPLES["LiveBeganEvent"]))
    assert start is not None and start.live is not None
    assert (start.kind, start.streamer_key) == (ev.LIVE_START, "bilibili/21452505")
    assert start.event_id == "5f0c3a7e-1d2b-11f1-9a4c-000000000001"
    assert start.url == "https://live.bilibili.com/21452505"
    assert start.live.cover == "https://i0.hdslb.com/bfs/live/new_room_cover/3f2a9c.jpg"
    assert start.live.avatar == "https://i1.hdslb.com/bfs/face/8b1d3e.jpg"
    assert start.live.categories == ("虚拟主播",)
    assert start.live.start_time == datetime.fromtimestamp(1_773_206_558, UTC)
    assert start.occurred_at == datetime(2026, 3, 11, 5, 22, 40, 183250, tzinfo=UTC)
    assert start.display_name == "极光Vale"

    change = parse(source, dict(blrec.SAMPLES["RoomChangeEvent"]))
    assert change is not None and change.kind == ev.STREAM_UPDATE
    assert change.live is not None and change.live.title == "模块合成器答疑"
    assert change.live.categories == ("唱见电台", "虚拟主播")
    end = parse(source, dict(blrec.SAMPLES["LiveEndedEvent"]))
    assert end is not None and end.kind == ev.LIVE_END


def test_blrec_recording_events_are_ignored() -> None:
    payload = copy.deepcopy(dict(blrec.SAMPLES["LiveBeganEvent"]))
    payload["type"] = "RecordingStartedEvent"
    assert parse(build(preset="blrec"), payload) is None


def test_blrec_without_room_info_names_the_field() -> None:
    payload = {"type": "LiveBeganEvent", "id": "x", "date": "2026-03-11 13:22:40+08:00"}
    payload["data"] = {"user_info": {"name": "n"}}
    with pytest.raises(SchemaError) as info:
        parse(build(preset="blrec"), payload)
    assert info.value.path == "data.room_info"


# --- custom -------------------------------------------------------------------------------


def custom_body(event: str, **data: Any) -> dict[str, Any]:
    return {
        "id": f"evt-{event}",
        "event": event,
        "data": {
            "site": "twitch",
            "user": {"login": "quinn", "name": "Quinn", "avatar": "https://a.example/q.png"},
            "title": "Any% speedrun",
            "game": "Celeste",
            "url": "https://twitch.tv/quinn",
            "thumbnail": "https://t.example/q.jpg",
            "started": 1_773_206_558,
            **data,
        },
    }


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (custom_body("stream.up"), ev.LIVE_START),
        (custom_body("stream.changed", title="New title"), ev.TITLE_CHANGE),
        (custom_body("stream.down"), ev.LIVE_END),
        (custom_body("stream.paused"), None),
    ],
)
def test_custom_maps_fields_and_kinds(body: dict[str, Any], kind: str | None) -> None:
    event = parse(build(**CUSTOM), body)
    if kind is None:
        assert event is None
        return
    assert event is not None and event.live is not None
    assert (event.kind, event.streamer_key, event.event_id) == (
        kind,
        "twitch/quinn",
        body["id"],
    )
    assert event.live.title == body["data"]["title"]
    assert event.live.categories == ("Celeste",)
    assert event.live.start_time == datetime.fromtimestamp(1_773_206_558, UTC)
    assert (event.url, event.display_name) == ("https://twitch.tv/quinn", "Quinn")


def test_custom_platform_value_and_a_missing_channel() -> None:
    fields = {k: v for k, v in CUSTOM_FIELDS.items() if k != "platform"}
    source = build(preset="custom", fields=fields, kinds=CUSTOM_KINDS, platform_value="kick")
    event = parse(source, custom_body("stream.up"))
    assert event is not None and event.streamer_key == "kick/quinn"
    body = custom_body("stream.up")
    del body["data"]["user"]
    with pytest.raises(SchemaError) as info:
        parse(source, body)
    assert info.value.path == "data.user.login"


# --- auth ---------------------------------------------------------------------------------


def test_query_key_is_checked() -> None:
    source = build(**OWNCAST)
    payload = dict(owncast.SAMPLES["STREAM_STARTED"])
    source.verify(req(payload, query={"key": SECRET}))
    for query in ({}, {"key": "wrong"}):
        with pytest.raises(AuthError):
            source.verify(req(payload, query=query))


def _hmac(body: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(SECRET.encode(), body, getattr(hashlib, algorithm)).digest()


@pytest.mark.parametrize(
    ("algorithm", "encode"),
    [
        ("sha256", lambda d: d.hex()),
        ("sha256", lambda d: "sha256=" + d.hex()),
        ("sha256", lambda d: base64.b64encode(d).decode()),
        ("sha512", lambda d: "sha512=" + base64.b64encode(d).decode()),
    ],
)
def test_signature_header_in_hex_or_base64(algorithm: str, encode: Any) -> None:
    source = build(**CUSTOM, signature_header="X-Signature", signature_algorithm=algorithm)
    payload = custom_body("stream.up")
    request = req(payload)
    signed = WebhookRequest(
        query={},
        headers={"x-signature": encode(_hmac(request.body, algorithm))},
        body=request.body,
        received_at=RECEIVED,
    )
    source.verify(signed)
    tampered = WebhookRequest(
        query={}, headers=signed.headers, body=request.body + b" ", received_at=RECEIVED
    )
    with pytest.raises(AuthError):
        source.verify(tampered)
    # With a header configured the ?key= alone is not enough.
    with pytest.raises(AuthError):
        source.verify(req(payload, query={"key": SECRET}))


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "sources[0].preset: is required"),
        ({"preset": "kick"}, "sources[0].preset: must be one of blrec, custom, owncast"),
        ({"preset": "owncast", "server_url": SERVER}, "sources[0].channel: is required"),
        ({"preset": "owncast", "channel": "a"}, "sources[0].server_url: is required"),
        ({**OWNCAST, "channel": "a/b"}, "sources[0].channel: must be one word"),
        ({**OWNCAST, "server_url": "live.example.com"}, "sources[0].server_url: expected"),
        (
            {**OWNCAST, "signature_header": "X-Sig"},
            "sources[0].signature_header: Owncast cannot sign its webhooks",
        ),
        (
            {"preset": "blrec", "signature_header": "X-Sig"},
            "sources[0].signature_header: blrec signs nothing",
        ),
        ({"preset": "blrec", "channel": "x"}, "sources[0].channel: only preset owncast"),
        ({**OWNCAST, "fields": {}}, "sources[0].fields: only preset custom takes it"),
        (
            {**CUSTOM, "signature_header": "X-Sig", "signature_algorithm": "md5"},
            "sources[0].signature_algorithm: must be one of sha256, sha512",
        ),
        (
            {**CUSTOM, "signature_algorithm": "sha256"},
            "sources[0].signature_algorithm: has no effect without signature_header",
        ),
        (
            {**CUSTOM, "fields": {**CUSTOM_FIELDS, "titel": "data.title"}},
            "sources[0].fields.titel: unknown field",
        ),
        (
            {**CUSTOM, "fields": {**CUSTOM_FIELDS, "title": "data..title"}},
            "sources[0].fields.title: 'data..title' is not a dotted path",
        ),
        (
            {**CUSTOM, "fields": {**CUSTOM_FIELDS, "title": 3}},
            "sources[0].fields.title: expected a string, got",
        ),
        (
            {**CUSTOM, "kinds": {**CUSTOM_KINDS, "stream.raid": "raid"}},
            "sources[0].kinds.\"stream.raid\": 'raid' is not one of our kinds",
        ),
        ({"preset": "custom", "fields": CUSTOM_FIELDS}, "sources[0].kinds: is required"),
        ({"preset": "custom", "kinds": CUSTOM_KINDS}, "sources[0].fields: is required"),
        (
            {**CUSTOM, "platform_value": "twitch"},
            "sources[0].platform_value: set fields.platform or platform_value, not both",
        ),
        (
            {
                **CUSTOM,
                "fields": {k: v for k, v in CUSTOM_FIELDS.items() if k != "channel"},
            },
            "sources[0].fields.channel: is required",
        ),
        ({**CUSTOM, "fields": {"kind": "event"}}, "sources[0].fields.channel: is required"),
        ({"preset": "owncast", "tolerance": "5m"}, "sources[0].tolerance: unknown key"),
    ],
)
def test_bad_options_are_named_by_key(options: dict[str, Any], expected: str) -> None:
    found = problems(**options)
    assert any(problem.startswith(expected) for problem in found), found


def test_other_kinds_refuse_the_webhook_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            {"sources": [{"name": "r", "kind": "onliverec", "secret": "s", "preset": "owncast"}]},
            environ={},
            base_dir=Path("."),
        )
    assert info.value.problems == ["sources[0].preset: unknown key (only webhook sources take it)"]


def test_samples_and_previews_parse_without_a_config() -> None:
    # What `render --event FILE --source-kind webhook` builds: no preset, told by shape.
    source = SOURCES["webhook"].build(SourceConfig(name="webhook", kind="webhook", secret=""))
    for sample in SOURCES["webhook"].samples.values():
        assert source.parse(sample, req(sample)) is not None
    with pytest.raises(AuthError):
        source.verify(req({}, query={"key": ""}))
    with pytest.raises(SchemaError):
        source.parse({"event": "x"}, req({}))
