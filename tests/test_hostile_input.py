"""Hostile input at the webhook: slow and truncated bodies, bad-secret floods, lone
surrogates, out-of-range numbers and times, bad Content-Encoding, fuzzing.

Everything here is answered with a 4xx (or a 2xx for a well-formed event), never a 5xx;
nothing is stored for a refused request, and every 2xx event is stored.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import json
import logging
import random
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from babel.dates import format_date

from bot.app import build_sources
from bot.events import Event
from bot.store import Store
from bot.web import AuthFailureLog, RedactingAccessLogger
from tests.conftest import SECRET, make_config
from tests.test_app import FASTPIX_KEY, FASTPIX_SECRET, LIVEPEER_SECRET
from tests.test_cli import KEY as CLI_KEY
from tests.test_cli import running_bot
from tests.waiting import store_health
from tests.webapp import dispatched, pipeline_app

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
MAX_BODY = 4096
JSON = {"Content-Type": "application/json"}
BODY_TIMEOUT = 0.3


@pytest.fixture
async def app_parts(tmp_path: Path, store: Store) -> tuple[web.Application, Store]:
    return await make_app(tmp_path, store, MAX_BODY), store


async def make_app(tmp_path: Path, store: Store, max_body: int) -> web.Application:
    """The bot's web app for the three sources, storing into `store`."""
    config = make_config(
        tmp_path,
        server={"port": 0, "max_body_bytes": max_body},
        sources=[
            {"name": "rec", "kind": "onliverec", "secret": SECRET},
            {"name": "lp", "kind": "livepeer", "secret": LIVEPEER_SECRET},
            {"name": "fp", "kind": "fastpix", "secret": FASTPIX_SECRET},
        ],
    )
    return pipeline_app(
        store,
        config,
        sources=build_sources(config),
        max_body_bytes=max_body,
        health=store_health(store),
        body_timeout=BODY_TIMEOUT,
    )


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory,
    aiohttp_server: Any,
    app_parts: tuple[web.Application, Store],
) -> TestClient[Any, Any]:
    server = await aiohttp_server(app_parts[0], access_log_class=RedactingAccessLogger)
    return await aiohttp_client(server)


async def stored(store: Store) -> tuple[int, int]:
    deliveries = sum((await store.outbox_counts()).by_state.values())
    return await store.count_events(), deliveries


def onliverec(event_id: str = "h-1") -> dict[str, Any]:
    return {
        "id": event_id,
        "ts": "2026-03-11T05:22:38Z",
        "type": "live_start",
        "data": {
            "platform": "twitch",
            "channel": "quinn",
            "url": "https://twitch.tv/quinn",
            "live_info": {
                "uname": "Quinn",
                "title": "Speedrun",
                "categories": ["Games"],
                "cover": "https://img.example/c.jpg",
            },
        },
    }


def livepeer(event_id: str = "lp-1") -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "id": event_id,
        "webhookId": "wh",
        "createdAt": now,
        "timestamp": now,
        "event": "stream.started",
        "stream": {"id": "stream-1", "kind": "stream", "name": "Show", "playbackId": "pb1"},
    }


def fastpix(event_id: str = "fp-1") -> dict[str, Any]:
    return {
        "type": "video.live_stream.active",
        "id": event_id,
        "object": {"name": "live", "id": "fp-stream"},
        "createdAt": "2026-03-11T05:22:38Z",
        "data": {
            "streamId": "fp-stream",
            "status": "active",
            "metadata": {"livestream_name": "Tech Today", "title": "T", "category": "C"},
            "playbackIds": [{"id": "fp-play", "accessPolicy": "public"}],
        },
    }


VALID = {"rec": onliverec, "lp": livepeer, "fp": fastpix}


def signed(source: str, body: bytes) -> tuple[str, dict[str, str]]:
    """The URL and headers that authenticate `body` for a source."""
    if source == "rec":
        return f"/webhook/rec?key={SECRET}", {}
    if source == "lp":
        at = int(time.time() * 1000)
        digest = hmac.new(LIVEPEER_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return "/webhook/lp", {"Livepeer-Signature": f"t={at},v1={digest}"}
    if source == "fp":
        signature = base64.b64encode(hmac.new(FASTPIX_KEY, body, hashlib.sha256).digest())
        return "/webhook/fp", {"FastPix-Signature": signature.decode()}
    return f"/webhook/{source}", {}


async def raw_exchange(client: TestClient[Any, Any], data: bytes, *, close: bool) -> bytes:
    """Write raw bytes to the server; read its answer (or nothing, when we hang up)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(data)
        await writer.drain()
        if close:
            writer.close()
            await writer.wait_closed()
            return b""
        # Read one response: the server may linger on the socket before closing it.
        async with asyncio.timeout(5):
            answer = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in answer.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            return answer + await reader.readexactly(length)
    finally:
        writer.close()


def head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- slow and truncated bodies -------------------------------------------------------------


async def test_a_trickled_body_times_out_with_408_json_and_stores_nothing(
    client: TestClient[Any, Any],
    app_parts: tuple[web.Application, Store],
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = json.dumps(onliverec()).encode()
    path, headers = signed("rec", body)
    started = time.monotonic()
    answer = await raw_exchange(
        client,
        head(path, {**headers, "Content-Length": str(len(body))}) + body[:20],
        close=False,
    )
    assert time.monotonic() - started < BODY_TIMEOUT + 3
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408")
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {
        "error": "request body not received in time"
    }
    assert await stored(app_parts[1]) == (0, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_cut_off_midway_stores_nothing_and_the_server_carries_on(
    client: TestClient[Any, Any],
    app_parts: tuple[web.Application, Store],
    caplog: pytest.LogCaptureFixture,
    chunked: bool,
) -> None:
    body = json.dumps(onliverec()).encode()
    path, headers = signed("rec", body)
    if chunked:
        data = head(path, {**headers, "Transfer-Encoding": "chunked"})
        data += f"{len(body):x}\r\n".encode() + body[:30]
    else:
        data = head(path, {**headers, "Content-Length": str(len(body))}) + body[:30]
    await raw_exchange(client, data, close=True)
    await asyncio.sleep(0.1)
    assert await stored(app_parts[1]) == (0, 0)
    response = await client.post(path, data=body, headers={**headers, **JSON})
    assert response.status == 202
    assert (await stored(app_parts[1]))[0] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- bad-secret floods ---------------------------------------------------------------------


async def test_a_flood_of_bad_secrets_logs_a_bounded_number_of_lines(
    client: TestClient[Any, Any],
    app_parts: tuple[web.Application, Store],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    body = json.dumps(onliverec()).encode()
    wrong = "wrong-key-GUESS-771"
    for n in range(300):
        if n % 2:
            response = await client.post(f"/webhook/rec?key={wrong}{n}", data=body, headers=JSON)
        else:
            response = await client.post(
                "/webhook/lp", data=body, headers={**JSON, "Livepeer-Signature": f"t=1,v1={wrong}"}
            )
        assert response.status == 401
        assert await response.json() == {"error": "missing or invalid credentials"}
    assert await stored(app_parts[1]) == (0, 0)
    lines = [r.getMessage() for r in caplog.records]
    auth_lines = [line for line in lines if "authentication" in line]
    access_lines = [line for line in lines if '" 401 ' in line]
    assert 1 <= len(auth_lines) <= 10
    assert len(access_lines) <= 10
    assert len(lines) <= 25
    assert not any(wrong in line for line in lines)
    # Each logged line says which check failed, so the admin can fix the sender.
    reasons = {line.partition(": ")[2] for line in auth_lines if line.startswith("auth")}
    assert reasons == {
        "Livepeer-Signature is malformed (expected t=<ms>,v1=<hex>)",
        "the ?key= does not match this source's secret",
    }


async def test_a_refused_webhook_says_why_in_one_log_line_and_a_flood_is_summarised(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.web")
    response = await client.post("/webhook/rec?key=" + SECRET, data=b"{", headers=JSON)
    assert response.status == 400
    answered = (await response.json())["error"]
    response = await client.post("/webhook/nope", data=b"{}", headers=JSON)
    assert response.status == 404
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert lines == [
        f"webhook for rec from 127.0.0.1 refused (400): {answered}",
        "webhook for nope from 127.0.0.1 refused (404): unknown source 'nope'",
    ]
    assert not any(SECRET in r.getMessage() for r in caplog.records)
    for _ in range(100):
        await client.post("/webhook/nope", data=b"{}", headers=JSON)
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) <= 10


def test_auth_failure_log_summarises_what_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limiter = AuthFailureLog(burst=2, window=60.0, clock=lambda: now[0])
    assert [limiter.failed("rec", "10.0.0.1") for _ in range(5)] == [
        True,
        True,
        False,
        False,
        False,
    ]
    now[0] = 61.0
    assert limiter.failed("rec", "10.0.0.1") is True
    messages = [r.getMessage() for r in caplog.records]
    assert "3 more failed authentications were not logged in the last 61s" in messages
    assert messages.count("authentication failed for source rec from 10.0.0.1") == 3


# -- payloads that used to be 500s ---------------------------------------------------------


async def stored_event(store: Store, source: str, event_id: str) -> Event:
    """The stored event, as the bot will render it."""
    event = await store.find_event(source, event_id)
    assert event is not None, f"{source} {event_id!r} was not stored"
    return event


async def post_signed(
    client: TestClient[Any, Any], source: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    if source == "lp":
        body = dated_now(body)
    path, auth = signed(source, body)
    response = await client.post(path, data=body, headers={**JSON, **auth, **(headers or {})})
    return response.status, await response.json()


def dated_now(body: bytes) -> bytes:
    """A Livepeer body with its `timestamp` set to the moment of sending, as Livepeer does.

    The parametrized bodies are built when the tests are collected, which can be longer ago
    than the five minutes Livepeer's signature check allows.
    """
    payload = json.loads(body)
    payload["timestamp"] = int(time.time() * 1000)
    return json.dumps(payload).encode()


def with_changes(payload: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> bytes:
    change(payload)
    # ensure_ascii writes a lone surrogate as the `\ud83d` escape JavaScript sends.
    return json.dumps(payload).encode()


# (name, source, body, check of the stored event): each is accepted, with U+FFFD where the
# lone half of a UTF-16 pair was.
SURROGATE_CASES: list[tuple[str, str, bytes, Callable[[Event], Any]]] = [
    (
        "half an emoji in a title",
        "rec",
        with_changes(
            onliverec("sg-1"), lambda p: p["data"]["live_info"].update(title="Speedrun \ud83d")
        ),
        lambda e: e.live is not None and e.live.title == "Speedrun \ufffd",
    ),
    (
        "a low surrogate alone in the display name",
        "rec",
        with_changes(
            onliverec("sg-2"), lambda p: p["data"]["live_info"].update(uname="\ude00Quinn")
        ),
        lambda e: e.display_name == "\ufffdQuinn",
    ),
    (
        "in an object key",
        "rec",
        with_changes(
            onliverec("sg-3"),
            lambda p: p["data"]["live_info"].update(
                {"\ud83d": "x", "categories": ["Games \udfff"]}
            ),
        ),
        lambda e: e.live is not None and e.live.categories == ("Games \ufffd",),
    ),
    (
        "in the channel, so in the streamer key",
        "rec",
        with_changes(onliverec("sg-4"), lambda p: p["data"].update(channel="quinn\ud83d")),
        lambda e: e.streamer_key == "twitch/quinn\ufffd",
    ),
    (
        "a whole pair is one character, kept",
        "rec",
        with_changes(
            onliverec("sg-5"), lambda p: p["data"]["live_info"].update(title="GG \U0001f600")
        ),
        lambda e: e.live is not None and e.live.title == "GG \U0001f600",
    ),
    (
        "Livepeer stream name",
        "lp",
        with_changes(livepeer("sg-6"), lambda p: p["stream"].update(name="Show \udbff")),
        lambda e: e.display_name == "Show \ufffd",
    ),
    (
        "FastPix metadata title",
        "fp",
        with_changes(
            fastpix("sg-7"), lambda p: p["data"]["metadata"].update(title="T \ud800\ud800")
        ),
        lambda e: e.live is not None and e.live.title == "T \ufffd\ufffd",
    ),
]


@pytest.mark.parametrize(
    ("source", "body", "check"),
    [c[1:] for c in SURROGATE_CASES],
    ids=[c[0] for c in SURROGATE_CASES],
)
async def test_a_lone_surrogate_is_replaced_and_the_event_is_stored(
    client: TestClient[Any, Any],
    app_parts: tuple[web.Application, Store],
    caplog: pytest.LogCaptureFixture,
    source: str,
    body: bytes,
    check: Callable[[Event], Any],
) -> None:
    status, answer = await post_signed(client, source, body)
    assert status == 202, answer
    assert answer["status"] == "accepted"
    assert check(await stored_event(app_parts[1], source, answer["id"]))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_lone_surrogate_in_the_event_id_is_replaced_and_dedupes(
    client: TestClient[Any, Any],
    app_parts: tuple[web.Application, Store],
) -> None:
    body = json.dumps(onliverec("evt-\ud83d")).encode()
    status, answer = await post_signed(client, "rec", body)
    assert (status, answer["id"]) == (202, "evt-\ufffd")
    assert (await stored_event(app_parts[1], "rec", "evt-\ufffd")).event_id == "evt-\ufffd"
    # The retry of the same body is recognised as the same event.
    status, answer = await post_signed(client, "rec", body)
    assert (status, answer["status"]) == (200, "duplicate")


def rec_recording(**data: Any) -> dict[str, Any]:
    return {
        "id": "rf-1",
        "ts": "2026-03-11T05:22:38Z",
        "type": "video_file_finish",
        "data": {"platform": "twitch", "channel": "quinn", "path": "/r/1.flv", **data},
    }


# (name, source, body, field): out-of-range numbers and times are 422 naming the field.
OUT_OF_RANGE: list[tuple[str, str, bytes, str]] = [
    (
        "an integer wider than a float",
        "rec",
        json.dumps(rec_recording(filesize=10**400)).encode(),
        "data.filesize",
    ),
    (
        "a float past the largest double",
        "rec",
        json.dumps(rec_recording(duration="@")).encode().replace(b'"@"', b"-1e400"),
        "data.duration",
    ),
    (
        "epoch ms wider than a float",
        "lp",
        with_changes(livepeer("or-1"), lambda p: p.update(createdAt=2**1024)),
        "createdAt",
    ),
    (
        "epoch ms past year 9999",
        "lp",
        with_changes(livepeer("or-2"), lambda p: p.update(createdAt=253402300800000)),
        "createdAt",
    ),
    (
        "year 9999 with a negative offset",
        "rec",
        with_changes(onliverec("or-3"), lambda p: p.update(ts="9999-12-31T23:59:59-23:59")),
        "ts",
    ),
    (
        "year 1 with a positive offset",
        "rec",
        with_changes(
            onliverec("or-4"),
            lambda p: p["data"]["live_info"].update(start_time="0001-01-01T00:00:00+00:01"),
        ),
        "data.live_info.start_time",
    ),
    (
        "nanoseconds past the end of time",
        "fp",
        with_changes(
            fastpix("or-5"), lambda p: p.update(createdAt="9999-12-31T23:59:59.999999999-00:01")
        ),
        "createdAt",
    ),
]


@pytest.mark.parametrize(
    ("source", "body", "field"), [c[1:] for c in OUT_OF_RANGE], ids=[c[0] for c in OUT_OF_RANGE]
)
async def test_out_of_range_numbers_and_times_are_422_naming_the_field(
    client: TestClient[Any, Any],
    app_parts: tuple[web.Application, Store],
    caplog: pytest.LogCaptureFixture,
    source: str,
    body: bytes,
    field: str,
) -> None:
    status, answer = await post_signed(client, source, body)
    assert (status, answer.get("field")) == (422, field), answer
    assert "out of range" in answer["error"] or "not a valid time" in answer["error"]
    assert await stored(app_parts[1]) == (0, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_integer_too_long_to_read_is_400_saying_so(
    aiohttp_client: ClientFactory,
    aiohttp_server: Any,
    tmp_path: Path,
    store: Store,
) -> None:
    server = await aiohttp_server(
        await make_app(tmp_path, store, 65536), access_log_class=RedactingAccessLogger
    )
    client = await aiohttp_client(server)
    body = json.dumps(onliverec()).encode().replace(b'"h-1"', b"9" * 5000)
    status, answer = await post_signed(client, "rec", body)
    assert (status, answer) == (
        400,
        {"error": "invalid JSON: a number of 5000 digits is too long"},
    )
    assert await stored(store) == (0, 0)


@pytest.mark.parametrize(
    ("ts", "start_time"),
    [
        ("9999-12-31T23:59:59Z", None),
        ("9999-12-31T23:59:59.999999999+00:00", None),
        # Go's zero time.Time, which Go senders write for "not set".
        ("2026-03-11T05:22:38Z", "0001-01-01T00:00:00Z"),
        ("0001-01-01T23:59:00+23:59", "0001-01-01T00:00:00-00:00"),
    ],
)
async def test_times_at_the_edge_of_the_calendar_are_accepted(
    client: TestClient[Any, Any],
    app_parts: tuple[web.Application, Store],
    ts: str,
    start_time: str | None,
) -> None:
    payload = onliverec("edge")
    payload["ts"] = ts
    payload["data"]["live_info"]["start_time"] = start_time
    status, answer = await post_signed(client, "rec", json.dumps(payload).encode())
    assert (status, answer["status"]) == (202, "accepted"), answer
    event = await stored_event(app_parts[1], "rec", "edge")
    assert event.occurred_at.utcoffset() == timedelta(0)


# -- Content-Encoding ----------------------------------------------------------------------


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


def deflated(data: bytes, *, raw: bool = False) -> bytes:
    encoder = zlib.compressobj(wbits=-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    return encoder.compress(data) + encoder.flush()


PLAIN = json.dumps(onliverec("enc")).encode()

# (name, Content-Encoding, body): each decodes to PLAIN and is accepted.
ENCODED: list[tuple[str, str, bytes]] = [
    ("gzip", "gzip", gzipped(PLAIN)),
    ("x-gzip, its old name", "x-gzip", gzipped(PLAIN)),
    ("upper case", "GZIP", gzipped(PLAIN)),
    ("gzip in two members", "gzip", gzipped(PLAIN[:50]) + gzipped(PLAIN[50:])),
    ("deflate (zlib format)", "deflate", deflated(PLAIN)),
    ("deflate sent raw", "deflate", deflated(PLAIN, raw=True)),
    ("two codings, undone in reverse", "deflate, gzip", gzipped(deflated(PLAIN))),
    ("identity", "identity", PLAIN),
]


@pytest.mark.parametrize(
    ("encoding", "body"), [c[1:] for c in ENCODED], ids=[c[0] for c in ENCODED]
)
async def test_compressed_bodies_are_decoded(
    client: TestClient[Any, Any],
    app_parts: tuple[web.Application, Store],
    encoding: str,
    body: bytes,
) -> None:
    # The key is in the URL, so the body needs no signature over either form.
    response = await client.post(
        f"/webhook/rec?key={SECRET}", data=body, headers={**JSON, "Content-Encoding": encoding}
    )
    assert response.status == 202, await response.text()
    assert (await stored_event(app_parts[1], "rec", "enc")).live is not None


def gzip_bomb(size: int) -> bytes:
    """A small gzip body that inflates to `size` bytes of JSON."""
    encoder = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [encoder.compress(b'{"id": "bomb", "pad": "')]
    parts += [encoder.compress(b"x" * 65536) for _ in range(size // 65536)]
    return b"".join([*parts, encoder.compress(b'"}'), encoder.flush()])


# (name, Content-Encoding, body, status, error): each refused without storing anything.
BAD_ENCODINGS: list[tuple[str, str, bytes, int, str]] = [
    ("gzip header on a plain body", "gzip", PLAIN, 400, "body is not valid gzip data"),
    ("deflate header on a plain body", "deflate", PLAIN, 400, "body is not valid deflate data"),
    ("gzip cut short", "gzip", gzipped(PLAIN)[:-12], 400, "gzip body is truncated"),
    (
        "junk after the gzip stream",
        "gzip",
        gzipped(PLAIN) + b"junk",
        400,
        "body is not valid gzip data",
    ),
    (
        "junk after the deflate stream",
        "deflate",
        deflated(PLAIN) + b"junk",
        400,
        "unexpected data after the end of the deflate stream",
    ),
    ("an empty gzip body", "gzip", b"", 400, "empty body; expected a JSON object"),
    (
        "a bomb past max_body_bytes",
        "gzip",
        gzip_bomb(1_000_000),
        413,
        f"request body too large (limit {MAX_BODY} bytes)",
    ),
    (
        "brotli",
        "br",
        PLAIN,
        415,
        "Content-Encoding 'br' is not supported; send gzip, deflate or no encoding",
    ),
    (
        "zstd",
        "zstd",
        PLAIN,
        415,
        "Content-Encoding 'zstd' is not supported; send gzip, deflate or no encoding",
    ),
    (
        "unknown",
        "snappy",
        PLAIN,
        415,
        "Content-Encoding 'snappy' is not supported; send gzip, deflate or no encoding",
    ),
    (
        "too many layers",
        "gzip, gzip, gzip",
        gzipped(gzipped(gzipped(PLAIN))),
        415,
        "at most 2 content codings are supported, got 3",
    ),
]


@pytest.mark.parametrize(
    ("encoding", "body", "status", "error"),
    [c[1:] for c in BAD_ENCODINGS],
    ids=[c[0] for c in BAD_ENCODINGS],
)
async def test_bad_or_unknown_content_encoding_is_a_json_4xx_and_the_connection_lives_on(
    client: TestClient[Any, Any],
    app_parts: tuple[web.Application, Store],
    caplog: pytest.LogCaptureFixture,
    encoding: str,
    body: bytes,
    status: int,
    error: str,
) -> None:
    assert len(body) <= MAX_BODY  # refused for what it decodes to, not for its size
    for event_id in ("first", "again"):
        response = await client.post(
            f"/webhook/rec?key={SECRET}&n={event_id}",
            data=body,
            headers={**JSON, "Content-Encoding": encoding},
        )
        assert (response.status, await response.json()) == (status, {"error": error})
        if status == 415:
            assert response.headers["Accept-Encoding"] == "gzip, deflate"
    assert await stored(app_parts[1]) == (0, 0)
    response = await client.post(f"/webhook/rec?key={SECRET}", data=PLAIN, headers=JSON)
    assert response.status == 202
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- fuzzing -------------------------------------------------------------------------------

FUZZ_SEED = 20261123
FUZZ_CASES = 6000
# Lone halves of UTF-16 pairs (a reversed pair is two lone halves).
_SURROGATES = ["\ud800", "\ud83d", "\udc00", "x\udfff", "\ude00\ud83d", "Quinn \ud83d"]
_EDGE_TIMES = [
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999-00:01",
    "0001-01-01T00:00:00.000001+00:00:01",
    "9999-12-31",
    "0001-01-01T00:00",
]
_HUGE_NUMBERS = [
    2**64,
    -(2**70),
    10**20,
    2**1024,
    -(10**400),
    253402300799999,
    253402300800000,
    -62135596800000,
    -62135596800001,
    8.64e15,
    1e308,
    5e-324,
]
# Number literals json.dumps cannot write; they replace a placeholder string in the body.
_LITERALS = {"@@inf@@": b"1e400", "@@-inf@@": b"-1e999", "@@long@@": b"1" + b"0" * 600}
_STRINGS = [
    "",
    " ",
    "x" * 300,
    "\u0000",
    "💥",
    "<b>@everyone</b>",
    "{{ 7*7 }}",
    "2026-13-45",
    "2026-03-11T05:22:38Z",
    "-1",
    "NaN",
    "live_start",
    "stream.idle",
    "../../etc",
    "video.live_stream.idle",
    "\ud800",
    *_SURROGATES,
    *_EDGE_TIMES,
    *_LITERALS,
]

# The fields each source reads, where a hostile value goes deepest into the pipeline.
_FIELDS: dict[str, list[tuple[str, ...]]] = {
    "rec": [
        ("ts",),
        ("id",),
        ("data", "channel"),
        ("data", "platform"),
        ("data", "url"),
        ("data", "live_info", "title"),
        ("data", "live_info", "uname"),
        ("data", "live_info", "start_time"),
        ("data", "live_info", "categories"),
        ("data", "live_info", "live_id"),
        ("data", "filesize"),
        ("data", "duration"),
    ],
    "lp": [
        ("createdAt",),
        ("id",),
        ("stream", "id"),
        ("stream", "name"),
        ("stream", "playbackId"),
        ("stream", "parentId"),
        ("webhookId",),
    ],
    "fp": [
        ("createdAt",),
        ("id",),
        ("data", "streamId"),
        ("data", "metadata", "title"),
        ("data", "metadata", "livestream_name"),
        ("data", "metadata", "category"),
        ("object", "id"),
    ],
}


def hostile_leaf(rng: random.Random) -> Any:
    """A value of the kinds that used to be 500s: lone surrogates, huge numbers, edge times."""
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(["", "Speedrun ", "quinn"]) + rng.choice(_SURROGATES)
    if roll < 0.6:
        return rng.choice(_HUGE_NUMBERS)
    if roll < 0.85:
        return rng.choice(_EDGE_TIMES)
    if roll < 0.95:
        return rng.choice(list(_LITERALS))
    return [rng.choice(_SURROGATES)]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.55:
        return rng.choice(
            [
                None,
                True,
                False,
                0,
                -1,
                2**63,
                -(2**70),
                1.5,
                1e308,
                -0.0,
                rng.randint(-(10**6), 10**6),
                rng.choice(_STRINGS),
                hostile_leaf(rng),
                "".join(
                    chr(rng.choice([rng.randint(1, 0x2FFF), rng.randint(0xD800, 0xDFFF)]))
                    for _ in range(rng.randint(0, 20))
                ),
            ]
        )
    if roll < 0.8:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {
        rng.choice(["id", "type", "data", "x", "live_info", "title", "", "\ud83d"]): random_value(
            rng, depth + 1
        )
        for _ in range(rng.randint(0, 4))
    }


def mutate(rng: random.Random, payload: Any) -> Any:
    """Replace, drop or add one field somewhere in a copy of `payload`."""
    payload = json.loads(json.dumps(payload))
    node = payload
    while isinstance(node, dict) and node and rng.random() < 0.6:
        child = node[rng.choice(list(node))]
        if not isinstance(child, dict | list) or not child:
            break
        node = child if isinstance(child, dict) else child[0]
    if isinstance(node, dict) and node:
        key = rng.choice(list(node))
        action = rng.random()
        if action < 0.7:
            node[key] = random_value(rng)
        elif action < 0.85:
            del node[key]
        else:
            node[rng.choice(_STRINGS[:6])] = random_value(rng)
    elif isinstance(node, list):
        node.append(random_value(rng))
    return payload


def poke(rng: random.Random, payload: dict[str, Any], source: str) -> dict[str, Any]:
    """Set one or two of the fields `source` reads to hostile values."""
    for _ in range(rng.randint(1, 2)):
        *parents, leaf = rng.choice(_FIELDS[source])
        node = payload
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = hostile_leaf(rng)
    return payload


def encode(rng: random.Random, body: bytes) -> tuple[bytes, str | None]:
    """The body under a Content-Encoding: right, wrong, truncated or unknown."""
    roll = rng.random()
    if roll < 0.3:
        return gzipped(body), rng.choice(["gzip", "x-gzip", "GZIP"])
    if roll < 0.45:
        return deflated(body, raw=rng.random() < 0.5), "deflate"
    if roll < 0.55:
        return gzipped(deflated(body)), "deflate, gzip"
    if roll < 0.7:
        return body, rng.choice(["gzip", "deflate"])  # the label lies
    if roll < 0.8:
        data = gzipped(body)
        return data[: rng.randint(0, len(data) - 1)], "gzip"
    if roll < 0.9:
        return gzipped(body) + rng.randbytes(rng.randint(1, 8)), "gzip"
    return body, rng.choice(["br", "zstd", "compress", "gzip, gzip, gzip", "bogus"])


def fuzz_case(rng: random.Random, n: int) -> tuple[str, str, bytes, dict[str, str], bytes]:
    """Method, path, body as sent, headers, and the body as the bot should decode it."""
    source = rng.choices(["rec", "lp", "fp", "unknown"], weights=[10, 10, 10, 1])[0]
    event_id = f"fz-{n}" if rng.random() < 0.3 else "fz"
    if source == "rec" and rng.random() < 0.2:
        base = {**rec_recording(filesize=123, duration=4.5), "id": event_id}
    else:
        base = VALID.get(source, onliverec)(event_id)
    shape = rng.random()
    if shape < 0.35:
        payload = poke(rng, base, source) if source in _FIELDS else base
        body = json.dumps(payload, ensure_ascii=rng.random() < 0.8).encode(
            "utf-8", "surrogatepass"
        )
    elif shape < 0.6:
        body = json.dumps(mutate(rng, base), ensure_ascii=rng.random() < 0.5).encode(
            "utf-8", "surrogatepass"
        )
    elif shape < 0.67:
        body = rng.randbytes(rng.randint(0, 200))
    elif shape < 0.75:
        body = json.dumps(random_value(rng)).encode()
    elif shape < 0.85:
        text = json.dumps(base).encode()
        body = text[: rng.randint(0, len(text))]
    else:
        body = json.dumps(base).encode() + rng.choice([b"x" * MAX_BODY, b"]", b"\xff", b""])
    for placeholder, literal in _LITERALS.items():
        body = body.replace(json.dumps(placeholder).encode(), literal)
    # Signatures cover the body as decoded.
    path, headers = signed(source, body)
    if rng.random() < 0.1:
        path, headers = signed("unknown", body)[0].replace("unknown", source), {}
    content_type = rng.choices(
        ["application/json", "text/plain", None, "application/cloudevents+json"],
        weights=[12, 1, 1, 1],
    )[0]
    if content_type is not None:
        headers["Content-Type"] = content_type
    sent = body
    if rng.random() < 0.2:
        sent, coding = encode(rng, body)
        if coding is not None:
            headers["Content-Encoding"] = coding
    method = rng.choices(["POST", "GET", "PUT"], weights=[20, 1, 1])[0]
    return method, path, sent, headers, body


_LONE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


async def test_fuzzed_webhooks_never_get_a_5xx_and_every_2xx_event_is_stored(
    client: TestClient[Any, Any],
    app_parts: tuple[web.Application, Store],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = app_parts[1]
    rng = random.Random(FUZZ_SEED)
    statuses: dict[int, int] = {}
    reached: dict[str, int] = {}
    for n in range(FUZZ_CASES):
        method, path, sent, headers, body = fuzz_case(rng, n)
        await dispatched(app_parts[0])  # what the last case stored has been applied
        before = await stored(store)
        response = await client.request(
            method, path, data=sent, headers=headers, skip_auto_headers=["Content-Type"]
        )
        answer = await response.read()
        statuses[response.status] = statuses.get(response.status, 0) + 1
        case = (
            f"case {n}: {method} {path} {headers} {sent[:300]!r} -> {response.status} "
            f"{answer[:300]!r}"
        )
        assert response.status < 500, case
        reply = json.loads(answer)
        if response.status >= 400:
            assert "error" in reply, case
            assert await stored(store) == before, case
            if response.status == 422 and "out of range" in reply["error"]:
                reached["out of range"] = reached.get("out of range", 0) + 1
            if "Content-Encoding" in headers and response.status in (400, 415):
                reached["bad encoding"] = reached.get("bad encoding", 0) + 1
            continue
        if "id" in reply:
            source = path.split("/")[2].partition("?")[0]
            assert await store.find_event(source, reply["id"]) is not None, case
        if reply.get("status") == "accepted":
            assert (await stored(store))[0] > before[0], case
            if _LONE_ESCAPE.search(body):
                reached["surrogate accepted"] = reached.get("surrogate accepted", 0) + 1
            if "Content-Encoding" in headers:
                reached["encoded accepted"] = reached.get("encoded accepted", 0) + 1
    # The generator reaches every layer: refusals of each kind and real acceptances, and
    # each kind of input that once was a 500.
    for status in (200, 202, 400, 401, 404, 405, 413, 415, 422):
        assert statuses.get(status, 0) > 0, statuses
    for kind in ("out of range", "bad encoding", "surrogate accepted", "encoded accepted"):
        assert reached.get(kind, 0) > 0, reached
    # Every stored event reads back as the event it was.
    for row in range(1, await store.count_events() + 1):
        await store.load_event(row)
    health = await client.get("/healthz")
    assert health.status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- through the real process --------------------------------------------------------------

E2E_CONFIG = f"""
[server]
host = "127.0.0.1"
port = 0

[storage]
path = "state/bot.sqlite3"

[[sources]]
name = "rec"
kind = "onliverec"
secret = "{CLI_KEY}"

[behaviour]
end_grace = "0s"

[[routes]]
match = "*"
"""


async def test_the_running_bot_answers_former_500s_with_4xx_or_2xx_and_no_traceback(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(E2E_CONFIG)
    half_emoji = with_changes(
        onliverec("e2e-surrogate"),
        lambda p: p["data"]["live_info"].update(title="Speedrun \ud83d"),
    )
    wide_int = json.dumps({**rec_recording(filesize=10**400), "id": "e2e-int"}).encode()
    edge_time = with_changes(
        onliverec("e2e-time"), lambda p: p.update(ts="9999-12-31T23:59:59-23:59")
    )
    not_gzip = json.dumps(onliverec("e2e-gzip")).encode()
    # Times at the very edge that do parse go all the way to the console.
    last_second = with_changes(
        onliverec("e2e-last"),
        lambda p: (p.update(ts="9999-12-31T23:59:59Z"), p["data"].update(channel="future")),
    )
    go_zero = with_changes(
        onliverec("e2e-zero"),
        lambda p: (
            p["data"].update(channel="zero"),
            p["data"]["live_info"].update(start_time="0001-01-01T00:00:00Z"),
        ),
    )
    zero_end = json.dumps(
        {
            "id": "e2e-zero-end",
            "ts": "2026-03-11T07:00:00Z",
            "type": "live_end",
            "data": {"platform": "twitch", "channel": "zero"},
        }
    ).encode()

    async with running_bot(config) as bot, aiohttp.ClientSession() as session:

        async def send(body: bytes, **headers: str) -> tuple[int, dict[str, Any]]:
            async with session.post(
                f"{bot.url}/webhook/rec?key={CLI_KEY}",
                data=body,
                headers={**JSON, **headers},
            ) as response:
                return response.status, await response.json()

        status, answer = await send(half_emoji)
        assert (status, answer.get("status")) == (202, "accepted"), answer
        await bot.wait_for("stdout", "title: +Speedrun \ufffd")
        assert await send(wide_int) == (
            422,
            {"error": "data.filesize: is out of range", "field": "data.filesize"},
        )
        status, answer = await send(edge_time)
        assert (status, answer.get("field")) == (422, "ts"), answer
        assert await send(not_gzip, **{"Content-Encoding": "gzip"}) == (
            400,
            {"error": "body is not valid gzip data"},
        )
        # Decoding is the bot's own now; a real gzip body still goes through.
        status, answer = await send(gzip.compress(not_gzip), **{"Content-Encoding": "gzip"})
        assert (status, answer.get("id")) == (202, "e2e-gzip"), answer
        # The half emoji was stored: its retry is a duplicate, not a second notice.
        status, answer = await send(half_emoji)
        assert (status, answer.get("status")) == (200, "duplicate"), answer

        for body in (last_second, go_zero, zero_end):
            status, answer = await send(body)
            assert (status, answer.get("status")) == (202, "accepted"), answer
        # A start dated at the calendar's edge is stored as sent, but the stream is taken
        # to have started when the bot heard of it (a sender's clock is not trusted ahead).
        today = format_date(datetime.now(UTC), "medium", locale="en")  # "Dec 3, 2026"
        await bot.wait_for("stdout", rf"since: +{re.escape(today)}")
        # Go's zero time as a start means "not set": the duration counts from arrival.
        await bot.wait_for("stdout", r"ended the stream\n(.*\n)*? *duration: +\d+[sm]\b")
        async with session.get(f"{bot.url}/healthz") as response:
            assert response.status == 200
        assert await bot.stop() == 0
    assert not re.search(r"since:.*9999", bot.stdout)
    assert "Traceback" not in bot.stderr
    assert "unhandled error" not in bot.stderr
    assert " 500 " not in bot.stderr
    assert CLI_KEY not in bot.stderr
