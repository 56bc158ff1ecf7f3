"""FastPix source: base64 HMAC signatures, and every documented type's mapping."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot import events as ev
from bot.config import SourceConfig
from bot.errors import AuthError, SchemaError
from bot.registry import KNOWN_KINDS
from bot.sources.base import WebhookRequest
from bot.sources.fastpix import KIND_BY_TYPE, FastPixSource, decode_secret
from tests.test_cli import running_bot

KEY = bytes(range(7, 39))  # what the dashboard's Signing Secret decodes to
SECRET = base64.b64encode(KEY).decode()
NOW = datetime(2024, 4, 2, 12, 0, 0, tzinfo=UTC)
HEADER = "FastPix-Signature"


def make_source(**changes: Any) -> FastPixSource:
    fields: dict[str, Any] = {"name": "fp", "kind": "fastpix", "secret": SECRET, **changes}
    return FastPixSource(SourceConfig(**fields))


def signature(body: bytes, key: bytes = KEY) -> str:
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


def req(body: bytes, headers: dict[str, str] | None = None) -> WebhookRequest:
    return WebhookRequest(query={}, headers=headers or {}, body=body, received_at=NOW)


def parse(payload: Any) -> Any:
    return make_source().parse(payload, req(json.dumps(payload).encode()))


# -- payloads ------------------------------------------------------------------------

# Copied verbatim from seeds/fastpix-live-webhooks.txt (first video.live_stream.created).
SEED_CREATED_AUDIO_ONLY = json.loads("""
{
"type": "video.live_stream.created",
"request_id": null,
"object": {
"type": "live",
"id": "a2ae2143-62a1-4eee-b888-4f1406148481"
},
"id": "8fa0e3ea-3d5c-4712-8428-803b532bbc33",
"environment": {
"name": "Development",
"id": "7c07598b-c27b-42e6-8b31-a334da54c387"
},
"data": {
"test": false,
"streamId": "a2ae2143-62a1-4eee-b888-4f1406148481",
"status": "idle",
"audioOnly": true,
"streamKey": "FP_TRgf4CswLZ9UcHH3yTxQ",
"maxResolution": "1080p",
"createdAt": "2024-04-02T11:17:52.460858Z",
"reconnectWindow": 60,
"latencyMode": "standard",
"maxDuration": 43200,
"playbackId": [
{
"id": "55d5b68e-508a-4adf-a01a-9420005ee796",
"accessPolicy": "public"
}
]
},
"createdAt": "2024-04-02T11:17:52.722812836Z",
"attempts": [],
"accessor_source": null,
"accessor": null
}
""")

# Copied verbatim from seeds/fastpix-live-webhooks.txt (second video.live_stream.created).
SEED_CREATED = json.loads("""
{
"type": "video.live_stream.created",
"request_id": null,
"object": {
"type": "live",
"id": "3dda81f7-c3c8-4090-b19c-ddc8bc885a8d"
},
"id": "26c7a1a4-d049-4046-b54b-7967354949f0",
"environment": {
"name": "Development",
"id": "43a59a2d-6d5f-41c2-ba36-f4e5a8b15829"
},
"data": {
"test": false,
"streamId": "3dda81f7-c3c8-4090-b19c-ddc8bc885a8d",
"status": "idle",
"audioOnly": false,
"streamKey": "FP_pbeAbQF5LUxPAdUseA0u",
"maxResolution": "1080p",
"createdAt": "2024-04-02T12:15:24.001028Z",
"reconnectWindow": 60,
"latencyMode": "standard",
"maxDuration": 43200,
"playbackId": [
{
"id": "c2677bb8-8db8-4786-ab8a-55bfb14e9994",
"accessPolicy": "public"
}
]
},
"createdAt": "2024-04-02T12:15:24.416436Z",
"attempts": null,
"accessor_source": null,
"accessor": null
}
""")

STREAM_ID = "a0ba2bf6-fe6b-441c-a9be-bf910d223218"
PLAYBACK = "c2677bb8-8db8-4786-ab8a-55bfb14e9994"
WATCH = f"https://play.fastpix.com/?playbackId={PLAYBACK}"
HLS = f"https://stream.fastpix.com/{PLAYBACK}.m3u8"
# Values the docs call credentials; none may reach an Event.
CREDENTIALS = (
    "FP_sEcReTsTrEaMkEy",
    "srt-secret-value",
    "srt-playback-secret",
    "live_1012464221_DuM8",
)


def reference(etype: str, data: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A payload shaped by the field tables of seeds/fastpix-live-event-reference.txt
    (type, webhookId, object, workspace, data, created_at, attempts); the reference
    shows tables, not JSON, so these are built from them."""
    return {
        "type": etype,
        "id": f"evt-{etype}",
        "webhookId": "wh-1",
        "object": {"name": "live", "id": STREAM_ID},
        "workspace": {"name": "production", "id": "ws-1"},
        "data": data,
        "created_at": "2023-12-06T09:12:28.808Z",
        "attempts": [],
        **top,
    }


def stream_data(**changes: Any) -> dict[str, Any]:
    """`data` of a live-stream event as the reference tables list it (with its secrets)."""
    return {
        "test": False,
        "streamId": STREAM_ID,
        "status": "active",
        "audioOnly": False,
        "streamKey": CREDENTIALS[0],
        "srtSecert": CREDENTIALS[1],
        "maxResolution": "1080p",
        "createdAt": "2023-12-06T09:12:28.808Z",
        "reconnectWindow": 60,
        "maxDuration": 500,
        "enableRecording": True,
        "mediapolicy": "public",
        "metadata": {
            "livestream_name": "Tech today",
            "title": "Building a bot",
            "category": "IRL",
        },
        "lowLatency": False,
        "playback_ids": [{"id": PLAYBACK, "accessPolicy": "public"}],
        "srtPlaybackResponse": {
            "srtPlaybackStreamId": "playf21f7c0b45108a04f051692e83af2943",
            "srtPlaybackSecert": CREDENTIALS[2],
        },
        **changes,
    }


def simulcast_data(**changes: Any) -> dict[str, Any]:
    return {
        "simulcastId": "314a486a-3dc7-4cf5-9fcc-1708a4683f21",
        "livestreamId": STREAM_ID,
        "rtmpUrl": "rtmp://hyd01.contribute.live-video.net/app/live_1012464221_DuM8",
        "streamKey": CREDENTIALS[3],
        "metadata": {"livestream_name": "Tech-Connect Summit"},
        **changes,
    }


LIVE_KEY = f"fastpix/{STREAM_ID}"

# (case id, payload, expected attributes; "details" is a subset check)
PARSE_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "seed created (audio only)",
        SEED_CREATED_AUDIO_ONLY,
        {
            "kind": "video.live_stream.created",
            "event_id": "8fa0e3ea-3d5c-4712-8428-803b532bbc33",
            "streamer_key": "fastpix/a2ae2143-62a1-4eee-b888-4f1406148481",
            "occurred_at": datetime(2024, 4, 2, 11, 17, 52, 722812, tzinfo=UTC),
            "url": "https://play.fastpix.com/?playbackId=55d5b68e-508a-4adf-a01a-9420005ee796",
            "details": {"status": "idle", "workspace": "Development", "test": False},
        },
    ),
    (
        "seed created",
        SEED_CREATED,
        {
            "kind": "video.live_stream.created",
            "event_id": "26c7a1a4-d049-4046-b54b-7967354949f0",
            "streamer_key": "fastpix/3dda81f7-c3c8-4090-b19c-ddc8bc885a8d",
            "display_name": None,
            "title": None,
            "url": WATCH,
            "details": {"playback_id": PLAYBACK, "hls_url": HLS},
        },
    ),
    (
        "active is live_start with title and category from metadata",
        reference("video.live_stream.active", stream_data()),
        {
            "kind": ev.LIVE_START,
            "event_id": "evt-video.live_stream.active",
            "streamer_key": LIVE_KEY,
            "display_name": "Tech today",
            "title": "Building a bot",
            "categories": ("IRL",),
            "status": "live",
            "url": WATCH,
            "occurred_at": datetime(2023, 12, 6, 9, 12, 28, 808000, tzinfo=UTC),
            "details": {"type": "video.live_stream.active", "workspace": "production"},
        },
    ),
    (
        "active with the stream id as data.id (as its table shows)",
        reference(
            "video.live_stream.active",
            {**{k: v for k, v in stream_data().items() if k != "streamId"}, "id": STREAM_ID},
        ),
        {"kind": ev.LIVE_START, "streamer_key": LIVE_KEY},
    ),
    (
        "title falls back to livestream_name",
        reference("video.live_stream.active", stream_data(metadata={"livestream_name": "Show"})),
        {"display_name": "Show", "title": "Show", "categories": ()},
    ),
    (
        "idle is live_end",
        reference("video.live_stream.idle", stream_data(status="idle")),
        {"kind": ev.LIVE_END, "streamer_key": LIVE_KEY, "status": "offline"},
    ),
    (
        "disabled ends the stream only if it is live",
        reference("video.live_stream.disabled", stream_data(status="disabled")),
        {
            "kind": ev.LIVE_END,
            "streamer_key": LIVE_KEY,
            "details": {"only_if_live": True, "reason": "disabled"},
        },
    ),
    (
        "deleted ends the stream only if it is live",
        reference("video.live_stream.deleted", stream_data(status="idle")),
        {"kind": ev.LIVE_END, "details": {"only_if_live": True, "reason": "deleted"}},
    ),
    (
        "idle is not only_if_live",
        reference("video.live_stream.idle", stream_data(status="idle")),
        {"details": {"only_if_live": None}},
    ),
    (
        "updated reports the whole state",
        reference(
            "video.live_stream.updated",
            stream_data(metadata={"title": "New title", "category": "Music"}),
        ),
        {
            "kind": ev.STREAM_UPDATE,
            "streamer_key": LIVE_KEY,
            "title": "New title",
            "categories": ("Music",),
            "status": "live",
        },
    ),
    (
        "updated without metadata says nothing about title or category",
        reference("video.live_stream.updated", stream_data(metadata=None)),
        {"kind": ev.STREAM_UPDATE, "title": None, "categories": ()},
    ),
    (
        "connected (its table shows data.id, playbackIds and a thumbnail)",
        reference(
            "video.live_stream.connected",
            {
                "thumbnail": "https://images.example/t.png",
                "id": STREAM_ID,
                "workspaceId": "ws-1",
                "metadata": {"key1": "value1"},
                "playbackIds": [
                    {"id": PLAYBACK, "accessPolicy": "public", "accessRestrictions": {}}
                ],
            },
        ),
        {
            "kind": "video.live_stream.connected",
            "streamer_key": LIVE_KEY,
            "cover": "https://images.example/t.png",
            "url": WATCH,
        },
    ),
    (
        "playback_ids as one object (as the tables show)",
        reference("video.live_stream.recording", stream_data(playback_ids={"id": PLAYBACK})),
        {"kind": "video.live_stream.recording", "url": WATCH},
    ),
    (
        "simulcast_target.created keeps the target's credentials out",
        reference("video.live_stream.simulcast_target.created", simulcast_data()),
        {
            "kind": "video.live_stream.simulcast_target.created",
            "streamer_key": LIVE_KEY,
            "live": None,
            "details": {"simulcast_id": "314a486a-3dc7-4cf5-9fcc-1708a4683f21"},
        },
    ),
    (
        "simulcast_target.deleted has only data.success; object names the stream",
        reference("video.live_stream.simulcast_target.deleted", {"success": True}),
        {"kind": "video.live_stream.simulcast_target.deleted", "streamer_key": LIVE_KEY},
    ),
    (
        "simulcast.broadcasting (the live-webhooks page's name)",
        reference("video.live_stream.simulcast.broadcasting", simulcast_data()),
        {"kind": "video.live_stream.simulcast.broadcasting", "streamer_key": LIVE_KEY},
    ),
    (
        "media.failed is an error about the media",
        reference(
            "video.media.failed",
            {"id": "media-1", "status": "failed", "error": {"message": "input URL unreachable"}},
            object={"type": "media", "id": "media-1"},
        ),
        {
            "kind": ev.ERROR,
            "streamer_key": None,
            "error": "FastPix media media-1 failed: input URL unreachable",
            "details": {"media_id": "media-1", "status": "failed"},
        },
    ),
    (
        "upload.failed without a reason",
        reference("video.upload.failed", {"id": "up-1"}, object={"type": "upload", "id": "up-1"}),
        {
            "kind": ev.ERROR,
            "error": "FastPix upload up-1 failed",
            "details": {"upload_id": "up-1"},
        },
    ),
    (
        "media.ready links a public playback id",
        reference(
            "video.media.ready",
            {"id": "media-2", "status": "ready", "playbackIds": [{"id": PLAYBACK}]},
            object={"type": "media", "id": "media-2"},
        ),
        {"kind": "video.media.ready", "url": WATCH, "details": {"media_id": "media-2"}},
    ),
    (
        "the capitalised Video.media.live_stream.created",
        reference(
            "Video.media.live_stream.created",
            {"id": "media-3", "liveStreamId": STREAM_ID},
            object={"type": "media", "id": "media-3"},
        ),
        {
            "kind": "video.media.live_stream.created",
            "streamer_key": LIVE_KEY,
            "details": {"type": "video.media.live_stream.created", "media_id": "media-3"},
        },
    ),
    (
        "no createdAt at all: received_at",
        {k: v for k, v in SEED_CREATED.items() if k != "createdAt"},
        {"occurred_at": NOW},
    ),
]


@pytest.mark.parametrize(
    ("payload", "expected"), [(p, e) for _, p, e in PARSE_CASES], ids=[c[0] for c in PARSE_CASES]
)
def test_parse(payload: dict[str, Any], expected: dict[str, Any]) -> None:
    event = parse(payload)
    assert event is not None
    assert event.source == "fp"
    assert event.platform == "fastpix"
    assert event.received_at == NOW
    for name, want in expected.items():
        if name == "details":
            assert {k: event.details.get(k) for k in want} == want
        elif name in ("title", "categories", "status", "cover"):
            assert event.live is not None
            assert getattr(event.live, name) == want, name
        else:
            assert getattr(event, name) == want, name


@pytest.mark.parametrize(
    "payload", [p for _, p, _ in PARSE_CASES], ids=[c[0] for c in PARSE_CASES]
)
def test_no_credentials_reach_the_event(payload: dict[str, Any]) -> None:
    event = parse(payload)
    text = repr(event) + json.dumps(event.to_json())
    for secret in (*CREDENTIALS, "FP_TRgf4CswLZ9UcHH3yTxQ", "FP_pbeAbQF5LUxPAdUseA0u", "rtmp://"):
        assert secret not in text


@pytest.mark.parametrize("etype", sorted(KIND_BY_TYPE))
def test_every_documented_type_is_an_event_of_a_known_kind(etype: str) -> None:
    event = parse(reference(etype, stream_data()))
    assert event is not None
    assert event.kind == KIND_BY_TYPE[etype]
    assert event.kind in KNOWN_KINDS
    if event.kind == ev.ERROR:
        assert event.error


def test_unknown_type_is_ignored() -> None:
    assert parse(reference("video.live_stream.exploded", stream_data())) is None


def test_no_secret_in_repr() -> None:
    assert SECRET not in repr(make_source())


# -- playback ids ----------------------------------------------------------------------

PLAYBACK_SHAPES: list[tuple[str, dict[str, Any], str | None, str | None]] = [
    # (case id, data fields, linked id, details["playback_id"])
    ("string", {"playbackId": "pb-s"}, "pb-s", "pb-s"),
    ("object", {"playback_ids": {"id": "pb-o"}}, "pb-o", "pb-o"),
    (
        "list of objects",
        {"playbackIds": [{"id": "pb-l", "accessPolicy": "public"}]},
        "pb-l",
        "pb-l",
    ),
    ("list of strings", {"playbackId": ["pb-1", "pb-2"]}, "pb-1", "pb-1"),
    (
        "public preferred over private",
        {"playbackIds": [{"id": "pb-p", "accessPolicy": "private"}, {"id": "pb-q"}]},
        "pb-q",
        "pb-q",
    ),
    (
        "private only: no link",
        {"playbackId": [{"id": "pb-x", "accessPolicy": "private"}]},
        None,
        "pb-x",
    ),
    ("none", {}, None, None),
    ("empty list", {"playbackId": []}, None, None),
]


@pytest.mark.parametrize(
    ("fields", "linked", "recorded"),
    [(f, link, rec) for _, f, link, rec in PLAYBACK_SHAPES],
    ids=[c[0] for c in PLAYBACK_SHAPES],
)
def test_playback_id_shapes(
    fields: dict[str, Any], linked: str | None, recorded: str | None
) -> None:
    data = {k: v for k, v in stream_data().items() if k != "playback_ids"} | fields
    event = parse(reference("video.live_stream.active", data))
    assert event.url == (f"https://play.fastpix.com/?playbackId={linked}" if linked else None)
    assert event.details.get("playback_id") == recorded


# -- schema errors ---------------------------------------------------------------------


def without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


ACTIVE = reference("video.live_stream.active", stream_data())

SCHEMA_CASES: list[tuple[str, Any, str]] = [
    ("body not an object", [ACTIVE], "body"),
    ("type missing", without(ACTIVE, "type"), "type"),
    ("type a number", {**ACTIVE, "type": 3}, "type"),
    ("id missing", without(ACTIVE, "id"), "id"),
    ("createdAt not a time", {**SEED_CREATED, "createdAt": "noon"}, "createdAt"),
    ("created_at a number", {**ACTIVE, "created_at": 1700000000}, "created_at"),
    ("data a list", {**ACTIVE, "data": []}, "data"),
    ("object a string", {**without(ACTIVE, "data"), "object": "live"}, "object"),
    (
        "start without any stream id",
        {**without(ACTIVE, "object"), "data": without(stream_data(), "streamId")},
        "data.streamId",
    ),
    (
        "update without any stream id",
        {
            **without(reference("video.live_stream.updated", {}), "object"),
            "data": {"metadata": {"title": "t"}},
        },
        "data.streamId",
    ),
    ("streamId a list", {**ACTIVE, "data": stream_data(streamId=[])}, "data.streamId"),
    ("status a number", {**ACTIVE, "data": stream_data(status=1)}, "data.status"),
    ("metadata a string", {**ACTIVE, "data": stream_data(metadata="x")}, "data.metadata"),
    (
        "metadata.title a number",
        {**ACTIVE, "data": stream_data(metadata={"title": 5})},
        "data.metadata.title",
    ),
    (
        "metadata.category a list",
        {**ACTIVE, "data": stream_data(metadata={"category": ["a"]})},
        "data.metadata.category",
    ),
    (
        "playback id a number",
        {**ACTIVE, "data": stream_data(playback_ids=[{"id": 5.5}])},
        "data.playback_ids[0].id",
    ),
    (
        "playback item a number",
        {**ACTIVE, "data": stream_data(playbackId=[7])},
        "data.playbackId[0]",
    ),
    (
        "playbackIds a boolean",
        {**ACTIVE, "data": stream_data(playbackIds=True)},
        "data.playbackIds",
    ),
    ("test not a boolean", {**ACTIVE, "data": stream_data(test="no")}, "data.test"),
    (
        "thumbnail a number",
        {**ACTIVE, "data": stream_data(thumbnail=1)},
        "data.thumbnail",
    ),
    (
        "simulcastId an object",
        reference("video.live_stream.simulcast_target.created", simulcast_data(simulcastId={})),
        "data.simulcastId",
    ),
    ("environment a list", {**SEED_CREATED, "environment": []}, "environment"),
]


@pytest.mark.parametrize(
    ("payload", "path"),
    [(p, path) for _, p, path in SCHEMA_CASES],
    ids=[c[0] for c in SCHEMA_CASES],
)
def test_schema_errors_name_the_path(payload: Any, path: str) -> None:
    with pytest.raises(SchemaError) as info:
        parse(payload)
    assert info.value.path == path


# -- signatures ----------------------------------------------------------------------

BODY = json.dumps(SEED_CREATED).encode()
GOOD = signature(BODY)


def test_correct_signature_is_accepted() -> None:
    make_source().verify(req(BODY, {HEADER: GOOD}))


def test_header_name_is_case_insensitive() -> None:
    make_source().verify(req(BODY, {"fastpix-signature": GOOD}))


def test_url_safe_secret_is_decoded() -> None:
    key = b"\xfb\xff" * 16  # encodes with + and / in standard base64
    secret = base64.urlsafe_b64encode(key).decode()
    assert "-" in secret or "_" in secret
    make_source(secret=secret).verify(req(BODY, {HEADER: signature(BODY, key)}))


URL_SAFE_KEY = b"\xfb\xff" * 16  # encodes with + and / in standard base64, and one =

# (case id, secret as pasted, the key it stands for)
PASTED_SECRETS: list[tuple[str, str, bytes]] = [
    ("padding dropped", SECRET.rstrip("="), KEY),
    ("padding dropped, whitespace around", f"  {SECRET.rstrip('=')}\n", KEY),
    ("too much padding", SECRET + "==", KEY),
    ("URL-safe", base64.urlsafe_b64encode(URL_SAFE_KEY).decode(), URL_SAFE_KEY),
    (
        "URL-safe, padding dropped",
        base64.urlsafe_b64encode(URL_SAFE_KEY).decode().rstrip("="),
        URL_SAFE_KEY,
    ),
    (
        "standard, padding dropped",
        base64.b64encode(URL_SAFE_KEY).decode().rstrip("="),
        URL_SAFE_KEY,
    ),
]


@pytest.mark.parametrize(
    ("secret", "key"), [c[1:] for c in PASTED_SECRETS], ids=[c[0] for c in PASTED_SECRETS]
)
def test_a_secret_pasted_without_padding_or_url_safe_is_decoded(
    caplog: pytest.LogCaptureFixture, secret: str, key: bytes
) -> None:
    assert decode_secret(secret) == key
    with caplog.at_level(logging.WARNING, logger="bot.sources.fastpix"):
        source = make_source(secret=secret)
    assert not caplog.records
    source.verify(req(BODY, {HEADER: signature(BODY, key)}))
    with pytest.raises(AuthError):
        source.verify(req(BODY, {HEADER: signature(BODY, secret.encode())}))


@pytest.mark.parametrize(
    "secret",
    [
        "abcde",  # 4n+1 digits: no byte string encodes to that
        "YR==",  # stray bits after the last byte: "a" is YQ==
        SECRET[:-3],  # cut short, so its last digit has stray bits too
        "a=b",
        "my hand-made secret!",
    ],
)
def test_a_secret_no_base64_encoder_writes_is_not_base64(secret: str) -> None:
    assert decode_secret(secret) is None


def test_secret_that_is_not_base64_is_used_raw(caplog: pytest.LogCaptureFixture) -> None:
    raw = "my hand-made secret!"
    with caplog.at_level(logging.WARNING, logger="bot.sources.fastpix"):
        source = make_source(secret=raw)
    assert "not base64" in caplog.text
    assert raw not in caplog.text
    source.verify(req(BODY, {HEADER: signature(BODY, raw.encode())}))


AUTH_FAILURES: list[tuple[str, WebhookRequest, str]] = [
    ("unsigned", req(BODY), SECRET),
    ("empty header", req(BODY, {HEADER: ""}), SECRET),
    ("tampered body", req(BODY.replace(b"idle", b"active"), {HEADER: GOOD}), SECRET),
    ("wrong secret", req(BODY, {HEADER: signature(BODY, b"other key")}), SECRET),
    (
        "signed with the secret's text, not its bytes",
        req(BODY, {HEADER: signature(BODY, SECRET.encode())}),
        SECRET,
    ),
    ("not base64", req(BODY, {HEADER: "not base64!"}), SECRET),
    ("hex digest", req(BODY, {HEADER: hmac.new(KEY, BODY, hashlib.sha256).hexdigest()}), SECRET),
    ("truncated digest", req(BODY, {HEADER: GOOD[:20]}), SECRET),
    ("two signatures", req(BODY, {HEADER: f"{GOOD},{GOOD}"}), SECRET),
    ("empty secret", req(BODY, {HEADER: signature(BODY, b"")}), ""),
]


@pytest.mark.parametrize(
    ("request_", "secret"),
    [(r, s) for _, r, s in AUTH_FAILURES],
    ids=[c[0] for c in AUTH_FAILURES],
)
def test_auth_failures(request_: WebhookRequest, secret: str) -> None:
    with pytest.raises(AuthError) as info:
        make_source(secret=secret).verify(request_)
    assert info.value.message == AuthError().message


# -- through the real process --------------------------------------------------------------


async def test_the_running_bot_accepts_webhooks_for_an_unpadded_or_url_safe_secret(
    tmp_path: Path,
) -> None:
    unpadded = SECRET.rstrip("=")
    url_safe = base64.urlsafe_b64encode(URL_SAFE_KEY).decode().rstrip("=")
    config = tmp_path / "bot.toml"
    config.write_text(f"""
[server]
host = "127.0.0.1"
port = 0

[storage]
path = "bot.sqlite3"

[[sources]]
name = "fp"
kind = "fastpix"
secret = "{unpadded}"

[[sources]]
name = "fp2"
kind = "fastpix"
secret = "{url_safe}"

[[routes]]
match = "*"
""")
    async with running_bot(config) as bot, aiohttp.ClientSession() as session:
        for name, key, title in (("fp", KEY, "Unpadded"), ("fp2", URL_SAFE_KEY, "URL-safe")):
            payload = reference(
                "video.live_stream.active",
                stream_data(
                    streamId=f"stream-{name}",
                    metadata={"livestream_name": title, "title": f"{title} works"},
                ),
            )
            body = json.dumps(payload).encode()
            async with session.post(
                f"{bot.url}/webhook/{name}",
                data=body,
                headers={"Content-Type": "application/json", HEADER: signature(body, key)},
            ) as response:
                assert response.status == 202, await response.text()
            await bot.wait_for("stdout", f"title: +{title} works")
        assert await bot.stop() == 0
    assert "not base64" not in bot.stderr
    assert "authentication failed" not in bot.stderr
    assert unpadded not in bot.stderr and url_safe not in bot.stderr
