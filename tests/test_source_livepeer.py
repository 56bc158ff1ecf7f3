"""Livepeer source: signature and timestamp checks, and every event type's mapping."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot import events as ev
from bot.config import SourceConfig
from bot.errors import AuthError, SchemaError
from bot.registry import KNOWN_KINDS
from bot.sources.base import WebhookRequest
from bot.sources.livepeer import KIND_BY_TYPE, LivepeerSource

SECRET = "lp-webhook-secret-1234"
NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
SECRET_HEADER = "Livepeer-Signature"


def make_source(**changes: Any) -> LivepeerSource:
    fields: dict[str, Any] = {"name": "lp", "kind": "livepeer", "secret": SECRET, **changes}
    return LivepeerSource(SourceConfig(**fields))


def signature(body: bytes, *, secret: str = SECRET, t: int = NOW_MS) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def req(
    body: bytes, headers: dict[str, str] | None = None, received_at: datetime = NOW
) -> WebhookRequest:
    return WebhookRequest(query={}, headers=headers or {}, body=body, received_at=received_at)


def signed(payload: dict[str, Any], **sign_args: Any) -> WebhookRequest:
    body = json.dumps(payload).encode()
    return req(body, {SECRET_HEADER: signature(body, **sign_args)})


def body_with_time(stamp: Any = NOW_MS) -> dict[str, Any]:
    return {"id": "evt-1", "event": "stream.started", "timestamp": stamp, "stream": STREAM}


# -- payloads ------------------------------------------------------------------------

# Copied verbatim from seeds/livepeer-webhooks.txt ("Webhook events", stream.started).
SEED_STREAM_STARTED = json.loads("""
{
"id": "e7b8a281-8952-4791-b837-183cb95bbf32",
"event": "stream.started",
"stream": {
"lastSeen": 1624835029795,
"isActive": false,
"record": false,
"suspended": false,
"sourceSegments": 348005,
"transcodedSegments": 1392788,
"sourceSegmentsDuration": 781762.2160000018,
"transcodedSegmentsDuration": 3127919.1879999815,
"sourceBytes": 264901715475844,
"transcodedBytes": 65773596716,
"id": "e0f1ed4f-1359-420c-838f-ebce7633ec3c",
"kind": "stream",
"name": "test",
"region": "mdw",
"userId": "4ef34b74-9908-4d23-be05-58e2480e752a",
"profiles": [
{"fps": 0, "name": "240p0", "width": 426, "height": 240, "bitrate": 250000},
{"fps": 0, "name": "360p0", "width": 640, "height": 360, "bitrate": 800000},
{"fps": 0, "name": "480p0", "width": 854, "height": 480, "bitrate": 1600000},
{"fps": 0, "name": "720p0", "width": 1280, "height": 720, "bitrate": 3000000}
],
"createdAt": 1604415705270,
"ingestRate": 0,
"playbackId": "e0ebw4qldvlofow5",
"renditions": {},
"outgoingRate": 0
}
}
""")

# Copied verbatim from seeds/livepeer-webhooks.txt (stream.idle): the same stream object.
SEED_STREAM_IDLE = {**SEED_STREAM_STARTED, "event": "stream.idle"}

STREAM = SEED_STREAM_STARTED["stream"]
STREAM_ID = "e0f1ed4f-1359-420c-838f-ebce7633ec3c"
WATCH = "https://lvpr.tv/?v=e0ebw4qldvlofow5"


def envelope(event: str, **extra: Any) -> dict[str, Any]:
    """A delivery as livepeer/studio's webhook sender writes it (not shown in the seed):
    id, webhookId, createdAt (event time), timestamp (send time), event, stream, payload."""
    return {
        "id": f"evt-{event}",
        "webhookId": "wh-1",
        "createdAt": NOW_MS - 2000,
        "timestamp": NOW_MS,
        "event": event,
        "stream": STREAM,
        **extra,
    }


MULTISTREAM_TARGET = {"target": {"id": "ms-1", "name": "YouTube", "profile": "720p0"}}
TASK_FAILED = {
    "success": False,
    "task": {
        "id": "task-9",
        "type": "transcode",
        "snapshot": {"status": {"phase": "failed", "errorMessage": "input has no video"}},
    },
}
ASSET_FAILED = {
    "id": "asset-3",
    "snapshot": {"name": "vod.mp4", "status": {"phase": "failed", "errorMessage": "bad file"}},
}


def when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# (case id, payload, expected attributes; "details" is a subset check)
PARSE_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "seed stream.started",
        SEED_STREAM_STARTED,
        {
            "kind": ev.LIVE_START,
            "event_id": "e7b8a281-8952-4791-b837-183cb95bbf32",
            "streamer_key": f"livepeer/{STREAM_ID}",
            "display_name": "test",
            "url": WATCH,
            "title": "test",
            "status": "live",
            "occurred_at": NOW,  # the seed has no createdAt/timestamp: received_at
            "details": {"type": "stream.started", "playback_id": "e0ebw4qldvlofow5"},
        },
    ),
    (
        "seed stream.idle",
        SEED_STREAM_IDLE,
        {
            "kind": ev.LIVE_END,
            "streamer_key": f"livepeer/{STREAM_ID}",
            "display_name": "test",
            "url": WATCH,
            "title": "test",
            "status": "offline",
            "details": {"type": "stream.idle", "record": False},
        },
    ),
    (
        "createdAt is the event time, not the send timestamp",
        envelope("stream.started"),
        {"kind": ev.LIVE_START, "occurred_at": when(NOW_MS - 2000)},
    ),
    (
        "timestamp when there is no createdAt",
        {k: v for k, v in envelope("stream.idle").items() if k != "createdAt"},
        {"kind": ev.LIVE_END, "occurred_at": NOW},
    ),
    (
        "multistream.error names the target",
        envelope("multistream.error", payload=MULTISTREAM_TARGET),
        {
            "kind": ev.ERROR,
            "streamer_key": f"livepeer/{STREAM_ID}",
            "error": 'Multistreaming to target "YouTube" (720p0) failed',
            "details": {"target_name": "YouTube", "target_id": "ms-1"},
        },
    ),
    (
        "multistream.connected is recorded",
        envelope("multistream.connected", payload=MULTISTREAM_TARGET),
        {"kind": "multistream.connected", "error": None, "title": "test"},
    ),
    (
        "task.failed carries the task's error message",
        {**envelope("task.failed", payload=TASK_FAILED), "stream": None},
        {
            "kind": ev.ERROR,
            "streamer_key": None,
            "error": "Livepeer transcode task task-9 failed: input has no video",
            "details": {"task_id": "task-9", "task_type": "transcode"},
        },
    ),
    (
        "asset.failed carries the asset's error message",
        {k: v for k, v in envelope("asset.failed", payload=ASSET_FAILED).items() if k != "stream"},
        {
            "kind": ev.ERROR,
            "error": "Livepeer asset vod.mp4 failed: bad file",
            "details": {"asset_id": "asset-3", "asset_name": "vod.mp4"},
        },
    ),
    (
        "asset.updated nests the asset",
        envelope("asset.updated", payload={"asset": {"id": "asset-4", "snapshot": {}}}),
        {"kind": "asset.updated", "details": {"asset_id": "asset-4"}},
    ),
    (
        "recording.ready uses the shared recording_ready kind",
        envelope(
            "recording.ready",
            payload={
                "recordingUrl": "https://cdn.example/rec/index.m3u8",
                "mp4Url": "https://cdn.example/rec/video.mp4",
                "session": {"id": "sess-7"},
            },
        ),
        {
            "kind": "recording_ready",
            "live_id": "sess-7",
            "details": {
                "type": "recording.ready",
                "session_id": "sess-7",
                "mp4_url": "https://cdn.example/rec/video.mp4",
            },
        },
    ),
    (
        "a session object keys on its parent stream",
        envelope("recording.started", stream={**STREAM, "id": "sess-2", "parentId": STREAM_ID}),
        {
            "kind": "recording.started",
            "streamer_key": f"livepeer/{STREAM_ID}",
            "live_id": "sess-2",
        },
    ),
]


@pytest.mark.parametrize(
    ("payload", "expected"), [(p, e) for _, p, e in PARSE_CASES], ids=[c[0] for c in PARSE_CASES]
)
def test_parse(payload: dict[str, Any], expected: dict[str, Any]) -> None:
    event = make_source().parse(payload, req(json.dumps(payload).encode()))
    assert event is not None
    assert event.source == "lp"
    assert event.platform == "livepeer"
    assert event.received_at == NOW
    for name, want in expected.items():
        if name == "details":
            assert {k: event.details.get(k) for k in want} == want
        elif name in ("title", "status", "live_id"):
            assert event.live is not None
            assert getattr(event.live, name) == want, name
        else:
            assert getattr(event, name) == want, name


@pytest.mark.parametrize("etype", sorted(KIND_BY_TYPE))
def test_every_listed_type_is_an_event_of_a_known_kind(etype: str) -> None:
    payload = envelope(etype, payload={})
    event = make_source().parse(payload, req(b"{}"))
    assert event is not None
    assert event.kind == KIND_BY_TYPE[etype]
    assert event.kind in KNOWN_KINDS
    assert event.details["type"] == etype


def test_failure_types_are_errors_with_text() -> None:
    errors = sorted(t for t, kind in KIND_BY_TYPE.items() if kind == ev.ERROR)
    assert errors == ["asset.failed", "multistream.error", "task.failed"]
    for etype in errors:
        event = make_source().parse(envelope(etype, payload={}), req(b"{}"))
        assert event is not None
        assert event.error


def test_unknown_type_is_ignored() -> None:
    assert make_source().parse(envelope("stream.exploded"), req(b"{}")) is None


def test_no_secret_in_repr() -> None:
    assert SECRET not in repr(make_source())


# -- schema errors ---------------------------------------------------------------------


def without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


SCHEMA_CASES: list[tuple[str, Any, str]] = [
    ("body not an object", [1, 2], "body"),
    ("event missing", without(envelope("stream.started"), "event"), "event"),
    ("event not a string", {**envelope("stream.started"), "event": 5}, "event"),
    ("id missing", without(envelope("stream.started"), "id"), "id"),
    ("id a number", {**envelope("stream.started"), "id": 5}, "id"),
    ("createdAt a string", {**envelope("stream.idle"), "createdAt": "yesterday"}, "createdAt"),
    (
        "createdAt wider than a float",
        {**envelope("stream.idle"), "createdAt": 2**1024},
        "createdAt",
    ),
    ("createdAt infinite", {**envelope("stream.idle"), "createdAt": float("inf")}, "createdAt"),
    ("createdAt past 9999", {**envelope("stream.idle"), "createdAt": 2.6e14}, "createdAt"),
    ("start without stream", without(envelope("stream.started"), "stream"), "stream"),
    ("stream a string", {**envelope("stream.idle"), "stream": "s"}, "stream"),
    ("stream without id", envelope("stream.started", stream=without(STREAM, "id")), "stream.id"),
    ("stream.name a number", envelope("stream.idle", stream={**STREAM, "name": 1}), "stream.name"),
    (
        "stream.playbackId a list",
        envelope("stream.started", stream={**STREAM, "playbackId": []}),
        "stream.playbackId",
    ),
    ("payload a list", envelope("task.failed", payload=[]), "payload"),
    (
        "target name a number",
        envelope("multistream.error", payload={"target": {"name": 7}}),
        "payload.target.name",
    ),
    (
        "task error message a number",
        envelope(
            "task.failed",
            payload={"task": {"snapshot": {"status": {"errorMessage": 3}}}},
        ),
        "payload.task.snapshot.status.errorMessage",
    ),
]


@pytest.mark.parametrize(
    ("payload", "path"),
    [(p, path) for _, p, path in SCHEMA_CASES],
    ids=[c[0] for c in SCHEMA_CASES],
)
def test_schema_errors_name_the_path(payload: Any, path: str) -> None:
    with pytest.raises(SchemaError) as info:
        make_source().parse(payload, req(b"{}"))
    assert info.value.path == path


# -- signatures ----------------------------------------------------------------------


def test_correct_signature_is_accepted() -> None:
    make_source().verify(signed(body_with_time()))


def test_header_name_is_case_insensitive() -> None:
    body = json.dumps(body_with_time()).encode()
    make_source().verify(req(body, {"livepeer-signature": signature(body)}))


def test_any_matching_v1_and_extra_elements_are_accepted() -> None:
    body = json.dumps(body_with_time()).encode()
    good = signature(body).split(",")[1]
    for header in (
        f"t={NOW_MS}, v0=abc, v1={'0' * 64}, {good}, future=1",
        f"{good},v1={'0' * 64},t={NOW_MS}",
    ):
        make_source().verify(req(body, {SECRET_HEADER: header}))


def test_within_tolerance_is_accepted() -> None:
    stamp = NOW_MS - 4 * 60 * 1000
    make_source().verify(signed(body_with_time(stamp), t=stamp))


def test_signed_body_that_is_not_json_is_left_to_the_web_layer() -> None:
    # Authentic but unreadable: the web layer answers 400 when it parses the body.
    body = b"not json"
    make_source().verify(req(body, {SECRET_HEADER: signature(body)}))


BODY = json.dumps(body_with_time()).encode()
GOOD = signature(BODY)
DIGEST = GOOD.split("v1=")[1]
OLD = NOW_MS - 6 * 60 * 1000
FUTURE = NOW_MS + 6 * 60 * 1000

AUTH_FAILURES: list[tuple[str, WebhookRequest]] = [
    ("unsigned", req(BODY)),
    ("empty header", req(BODY, {SECRET_HEADER: ""})),
    ("tampered body", req(BODY.replace(b"stream.started", b"stream.idle"), {SECRET_HEADER: GOOD})),
    ("wrong secret", req(BODY, {SECRET_HEADER: signature(BODY, secret="other")})),
    ("garbage header", req(BODY, {SECRET_HEADER: "garbage"})),
    ("no t", req(BODY, {SECRET_HEADER: f"v1={DIGEST}"})),
    ("no v1", req(BODY, {SECRET_HEADER: f"t={NOW_MS}"})),
    ("t not a number", req(BODY, {SECRET_HEADER: f"t=now,v1={DIGEST}"})),
    ("t negative", req(BODY, {SECRET_HEADER: f"t=-{NOW_MS},v1={DIGEST}"})),
    ("t twice", req(BODY, {SECRET_HEADER: f"t={NOW_MS},t={NOW_MS},v1={DIGEST}"})),
    ("t absurdly long", req(BODY, {SECRET_HEADER: f"t={'9' * 400},v1={DIGEST}"})),
    ("v1 not hex", req(BODY, {SECRET_HEADER: f"t={NOW_MS},v1=not-hex"})),
    ("element without =", req(BODY, {SECRET_HEADER: f"t={NOW_MS},v1"})),
    ("digest as base64", req(BODY, {SECRET_HEADER: f"t={NOW_MS},v1=" + "A" * 44})),
    ("expired t", signed(body_with_time(OLD), t=OLD)),
    ("future t", signed(body_with_time(FUTURE), t=FUTURE)),
    ("t fresh, body timestamp old", signed(body_with_time(OLD))),
    ("body timestamp missing", signed(without(body_with_time(), "timestamp"))),
    ("body timestamp a string", signed(body_with_time(str(NOW_MS)))),
    ("body timestamp a boolean", signed(body_with_time(True))),
    (
        # Each within tolerance of the other, but the header's t is still too old.
        "t expired, body timestamp between",
        signed(body_with_time(NOW_MS - 3 * 60 * 1000), t=OLD),
    ),
    (
        "t and body timestamp disagree",
        signed(body_with_time(NOW_MS + 4 * 60 * 1000), t=NOW_MS - 4 * 60 * 1000),
    ),
]


@pytest.mark.parametrize(
    "request_", [r for _, r in AUTH_FAILURES], ids=[c[0] for c in AUTH_FAILURES]
)
def test_auth_failures(request_: WebhookRequest) -> None:
    with pytest.raises(AuthError) as info:
        make_source().verify(request_)
    # One message for every failure: nothing tells a prober which part was wrong.
    assert info.value.message == AuthError().message
    # The bot's own log is told which check failed, without the secret.
    assert info.value.reason and SECRET not in info.value.reason


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unsigned", "no Livepeer-Signature header"),
        ("garbage header", "Livepeer-Signature is malformed (expected t=<ms>,v1=<hex>)"),
        ("wrong secret", "the signature does not match the body (the secret here differs"),
        ("expired t", "the signature's time t is 6m old; tolerance 5m (a replay, or a clock"),
        ("future t", "the signature's time t is 6m ahead of this clock; tolerance 5m"),
        ("t fresh, body timestamp old", "the body's timestamp is 6m old; tolerance 5m"),
        ("body timestamp missing", "the signed body has no numeric timestamp"),
        ("t and body timestamp disagree", "the body's timestamp and the signature's time t"),
    ],
)
def test_the_log_is_told_which_check_failed(case: str, reason: str) -> None:
    request_ = dict(AUTH_FAILURES)[case]
    with pytest.raises(AuthError) as info:
        make_source().verify(request_)
    assert info.value.reason is not None and info.value.reason.startswith(reason)


def test_tolerance_comes_from_config() -> None:
    stamp = NOW_MS - 2 * 60 * 1000
    request = signed(body_with_time(stamp), t=stamp)
    make_source().verify(request)
    with pytest.raises(AuthError):
        make_source(options={"tolerance": timedelta(minutes=1)}).verify(request)


def test_empty_secret_accepts_nothing() -> None:
    with pytest.raises(AuthError):
        make_source(secret="").verify(signed(body_with_time(), secret=""))
