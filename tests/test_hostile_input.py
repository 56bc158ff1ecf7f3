"""Hostile input at the webhook: slow and truncated bodies, bad-secret floods, fuzzing.

Everything here is answered with a 4xx (or a 2xx for a well-formed event), never a 5xx,
and nothing is stored for a refused request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import build_sources, routes_from_config
from bot.dispatch import Dispatcher
from bot.store import Store
from bot.web import AuthFailureLog, RedactingAccessLogger, create_app
from tests.conftest import SECRET, make_config
from tests.test_app import FASTPIX_KEY, FASTPIX_SECRET, LIVEPEER_SECRET

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
MAX_BODY = 4096
JSON = {"Content-Type": "application/json"}
BODY_TIMEOUT = 0.3


@pytest.fixture
def app_parts(tmp_path: Path, store: Store) -> tuple[web.Application, Store]:
    config = make_config(
        tmp_path,
        server={"port": 0, "max_body_bytes": MAX_BODY},
        sources=[
            {"name": "rec", "kind": "onliverec", "secret": SECRET},
            {"name": "lp", "kind": "livepeer", "secret": LIVEPEER_SECRET},
            {"name": "fp", "kind": "fastpix", "secret": FASTPIX_SECRET},
        ],
    )
    dispatcher = Dispatcher(store=store, routes=routes_from_config(config), sinks=["console"])
    app = create_app(
        sources=build_sources(config),
        dispatcher=dispatcher,
        max_body_bytes=MAX_BODY,
        health=lambda: {"ok": store.check() == "ok", "database": store.check()},
        body_timeout=BODY_TIMEOUT,
    )
    return app, store


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, aiohttp_server: Any,
    app_parts: tuple[web.Application, Store],
) -> TestClient[Any, Any]:
    server = await aiohttp_server(app_parts[0], access_log_class=RedactingAccessLogger)
    return await aiohttp_client(server)


def stored(store: Store) -> tuple[int, int]:
    deliveries = store.conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    return store.count_events(), int(deliveries)


def onliverec(event_id: str = "h-1") -> dict[str, Any]:
    return {
        "id": event_id, "ts": "2026-03-11T05:22:38Z", "type": "live_start",
        "data": {"platform": "twitch", "channel": "quinn", "url": "https://twitch.tv/quinn",
                 "live_info": {"uname": "Quinn", "title": "Speedrun", "categories": ["Games"],
                               "cover": "https://img.example/c.jpg"}},
    }


def livepeer(event_id: str = "lp-1") -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "id": event_id, "webhookId": "wh", "createdAt": now, "timestamp": now,
        "event": "stream.started",
        "stream": {"id": "stream-1", "kind": "stream", "name": "Show", "playbackId": "pb1"},
    }


def fastpix(event_id: str = "fp-1") -> dict[str, Any]:
    return {
        "type": "video.live_stream.active", "id": event_id,
        "object": {"name": "live", "id": "fp-stream"}, "createdAt": "2026-03-11T05:22:38Z",
        "data": {"streamId": "fp-stream", "status": "active",
                 "metadata": {"livestream_name": "Tech Today", "title": "T", "category": "C"},
                 "playbackIds": [{"id": "fp-play", "accessPolicy": "public"}]},
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
                int(line.split(b":", 1)[1]) for line in answer.split(b"\r\n")
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
    client: TestClient[Any, Any], app_parts: tuple[web.Application, Store],
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = json.dumps(onliverec()).encode()
    path, headers = signed("rec", body)
    started = time.monotonic()
    answer = await raw_exchange(
        client, head(path, {**headers, "Content-Length": str(len(body))}) + body[:20],
        close=False,
    )
    assert time.monotonic() - started < BODY_TIMEOUT + 3
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408")
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {
        "error": "request body not received in time"}
    assert stored(app_parts[1]) == (0, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_cut_off_midway_stores_nothing_and_the_server_carries_on(
    client: TestClient[Any, Any], app_parts: tuple[web.Application, Store],
    caplog: pytest.LogCaptureFixture, chunked: bool,
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
    assert stored(app_parts[1]) == (0, 0)
    response = await client.post(
        path, data=body, headers={**headers, **JSON})
    assert response.status == 202
    assert stored(app_parts[1])[0] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- bad-secret floods ---------------------------------------------------------------------


async def test_a_flood_of_bad_secrets_logs_a_bounded_number_of_lines(
    client: TestClient[Any, Any], app_parts: tuple[web.Application, Store],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    body = json.dumps(onliverec()).encode()
    wrong = "wrong-key-GUESS-771"
    for n in range(300):
        if n % 2:
            response = await client.post(f"/webhook/rec?key={wrong}{n}", data=body,
                                         headers=JSON)
        else:
            response = await client.post(
                "/webhook/lp", data=body,
                headers={**JSON, "Livepeer-Signature": f"t=1,v1={wrong}"})
        assert response.status == 401
        assert await response.json() == {"error": "missing or invalid credentials"}
    assert stored(app_parts[1]) == (0, 0)
    lines = [r.getMessage() for r in caplog.records]
    auth_lines = [line for line in lines if "authentication" in line]
    access_lines = [line for line in lines if '" 401 ' in line]
    assert 1 <= len(auth_lines) <= 10
    assert len(access_lines) <= 10
    assert len(lines) <= 25
    assert not any(wrong in line for line in lines)


def test_auth_failure_log_summarises_what_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limiter = AuthFailureLog(burst=2, window=60.0, clock=lambda: now[0])
    assert [limiter.failed("rec", "10.0.0.1") for _ in range(5)] == [
        True, True, False, False, False]
    now[0] = 61.0
    assert limiter.failed("rec", "10.0.0.1") is True
    messages = [r.getMessage() for r in caplog.records]
    assert "3 more failed authentications were not logged in the last 61s" in messages
    assert messages.count("authentication failed for source rec from 10.0.0.1") == 3


# -- fuzzing -------------------------------------------------------------------------------

FUZZ_SEED = 20261123
FUZZ_CASES = 5000
_STRINGS = ["", " ", "x" * 300, "\u0000", "💥", "<b>@everyone</b>", "{{ 7*7 }}", "2026-13-45",
            "2026-03-11T05:22:38Z", "-1", "NaN", "live_start", "stream.idle", "../../etc",
            "video.live_stream.idle", "\ud800"]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.55:
        return rng.choice([
            None, True, False, 0, -1, 2**63, -(2**70), 1.5, 1e308, -0.0,
            rng.randint(-10**6, 10**6), rng.choice(_STRINGS),
            "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 20))),
        ])
    if roll < 0.8:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["id", "type", "data", "x", "live_info", "title", ""]):
            random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


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


def fuzz_case(rng: random.Random, n: int) -> tuple[str, str, bytes, dict[str, str]]:
    source = rng.choices(["rec", "lp", "fp", "unknown"], weights=[10, 10, 10, 1])[0]
    base = VALID.get(source, onliverec)(f"fz-{n}" if rng.random() < 0.3 else "fz")
    shape = rng.random()
    if shape < 0.6:
        body = json.dumps(mutate(rng, base), ensure_ascii=rng.random() < 0.5).encode(
            "utf-8", "surrogatepass")
    elif shape < 0.7:
        body = rng.randbytes(rng.randint(0, 200))
    elif shape < 0.8:
        body = json.dumps(random_value(rng)).encode()
    elif shape < 0.9:
        text = json.dumps(base).encode()
        body = text[: rng.randint(0, len(text))]
    else:
        body = json.dumps(base).encode() + rng.choice([b"x" * MAX_BODY, b"]", b"\xff", b""])
    path, headers = signed(source, body)
    if rng.random() < 0.1:
        path, headers = signed("unknown", body)[0].replace("unknown", source), {}
    content_type = rng.choices(
        ["application/json", "text/plain", None, "application/cloudevents+json"],
        weights=[12, 1, 1, 1])[0]
    if content_type is not None:
        headers["Content-Type"] = content_type
    method = rng.choices(["POST", "GET", "PUT"], weights=[20, 1, 1])[0]
    return method, path, body, headers


async def test_fuzzed_webhooks_never_get_a_5xx_and_refusals_store_nothing(
    client: TestClient[Any, Any], app_parts: tuple[web.Application, Store],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = app_parts[1]
    rng = random.Random(FUZZ_SEED)
    statuses: dict[int, int] = {}
    for n in range(FUZZ_CASES):
        method, path, body, headers = fuzz_case(rng, n)
        before = stored(store)
        response = await client.request(
            method, path, data=body, headers=headers, skip_auto_headers=["Content-Type"])
        answer = await response.read()
        statuses[response.status] = statuses.get(response.status, 0) + 1
        case = f"case {n}: {method} {path} {body[:200]!r} -> {response.status} {answer[:200]!r}"
        assert response.status < 500, case
        if response.status >= 400:
            assert "error" in json.loads(answer), case
            assert stored(store) == before, case
    # The generator reaches every layer: refusals of each kind and real acceptances.
    for status in (202, 400, 401, 404, 405, 413, 415, 422):
        assert statuses.get(status, 0) > 0, statuses
    health = await client.get("/healthz")
    assert health.status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
