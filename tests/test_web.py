"""The webhook HTTP contract, through aiohttp's test client against the real app."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL as YURL

from bot.app import Health, build_sources
from bot.config import Config
from bot.store import Store
from bot.store.process import PROCESS_ID
from bot.web import STATE_KEY, RedactingAccessLogger, redact_query, start_draining
from tests.conftest import SECRET, make_config
from tests.sqlite_file import run_sql
from tests.test_outbox import RecordingSink
from tests.waiting import store_health
from tests.webapp import dispatched, pipeline_app

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

LIVE_START = {
    "id": "evt-1",
    "ts": "2026-03-11T05:22:38Z",
    "type": "live_start",
    "data": {
        "platform": "twitch",
        "channel": "quinn",
        "url": "https://twitch.tv/quinn",
        "live_info": {"uname": "Quinn", "title": "Speedrun", "categories": ["Games"]},
    },
}
URL = f"/webhook/rec?key={SECRET}"


@pytest.fixture
async def app_parts(tmp_path: Path, store: Store) -> tuple[web.Application, Store]:
    config: Config = make_config(tmp_path, server={"port": 0, "max_body_bytes": 2048})
    app = pipeline_app(
        store,
        config,
        sources=build_sources(config),
        max_body_bytes=config.server.max_body_bytes,
        health=store_health(store),
    )
    return app, store


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory,
    aiohttp_server: Callable[..., Awaitable[Any]],
    app_parts: tuple[web.Application, Store],
) -> TestClient[Any, Any]:
    # The bot's own access logger: aiohttp's default would log each `?key=` secret.
    server = await aiohttp_server(app_parts[0], access_log_class=RedactingAccessLogger)
    return await aiohttp_client(server)


async def stored(store: Store) -> tuple[int, dict[str, int]]:
    return await store.count_events(), (await store.outbox_counts()).by_state


async def test_accepted_event_answers_202_after_it_is_stored(
    client: TestClient[Any, Any], app_parts: tuple[web.Application, Store]
) -> None:
    store = app_parts[1]
    response = await client.post(URL, json=LIVE_START)
    assert response.status == 202
    body = await response.json()
    assert body == {"status": "accepted", "id": "evt-1", "kind": "live_start"}
    assert await store.count_events() == 1  # stored before the answer...
    await dispatched(app_parts[0])  # ...and applied after it
    assert await stored(store) == (1, {"pending": 1})
    assert (await store.get_stream("twitch/quinn")).live


async def test_same_event_twice_is_200_duplicate_and_changes_nothing(
    client: TestClient[Any, Any], store: Store
) -> None:
    await client.post(URL, json=LIVE_START)
    response = await client.post(URL, json=LIVE_START)
    assert response.status == 200
    assert (await response.json())["status"] == "duplicate"
    assert await stored(store) == (1, {"pending": 1})


async def test_unknown_type_is_202_ignored_and_not_stored(
    client: TestClient[Any, Any], store: Store
) -> None:
    response = await client.post(URL, json={"id": "x", "type": "stream_exploded", "data": {}})
    assert response.status == 202
    assert await response.json() == {"status": "ignored"}
    assert await stored(store) == (0, {})


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # name, url, request kwargs, status, fragment of the error message
    ("no key", "/webhook/rec", {"json": LIVE_START}, 401, "credentials"),
    ("wrong key", "/webhook/rec?key=nope", {"json": LIVE_START}, 401, "credentials"),
    ("unknown source", f"/webhook/nobody?key={SECRET}", {"json": LIVE_START}, 404, "nobody"),
    ("no such path", "/hooks", {"json": LIVE_START}, 404, "POST /webhook/"),
    ("form body", URL, {"data": {"a": "b"}}, 415, "application/json"),
    (
        "text body",
        URL,
        {"data": "hi", "headers": {"Content-Type": "text/plain"}},
        415,
        "text/plain",
    ),
    (
        "not json",
        URL,
        {"data": b"{nope", "headers": {"Content-Type": "application/json"}},
        400,
        "invalid JSON",
    ),
    (
        "empty",
        URL,
        {"data": b"", "headers": {"Content-Type": "application/json"}},
        400,
        "empty body",
    ),
    (
        "bad utf-8",
        URL,
        {"data": b'{"type": "\xff"}', "headers": {"Content-Type": "application/json"}},
        400,
        "UTF-8",
    ),
    (
        "NaN",
        URL,
        {"data": b'{"type": NaN}', "headers": {"Content-Type": "application/json"}},
        400,
        "NaN",
    ),
    (
        "deep",
        URL,
        {"data": b"[" * 100 + b"]" * 100, "headers": {"Content-Type": "application/json"}},
        400,
        "nested",
    ),
    ("array", URL, {"json": [1, 2]}, 422, "object"),
    ("no type", URL, {"json": {"id": "a", "data": {}}}, 422, "type"),
    (
        "bad field",
        URL,
        {"json": {**LIVE_START, "data": {**LIVE_START["data"], "channel": []}}},
        422,
        "data.channel",
    ),
    (
        "too large",
        URL,
        {"data": b"{" + b" " * 4096 + b"}", "headers": {"Content-Type": "application/json"}},
        413,
        "too large",
    ),
]


@pytest.mark.parametrize(
    ("name", "url", "kwargs", "status", "fragment"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
async def test_bad_requests_get_a_json_4xx_and_store_nothing(
    client: TestClient[Any, Any],
    store: Store,
    name: str,
    url: str,
    kwargs: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    response = await client.post(url, **kwargs)
    assert response.status == status
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert fragment in error
    assert SECRET not in error
    assert await stored(store) == (0, {})


async def test_schema_errors_name_the_field(client: TestClient[Any, Any]) -> None:
    bad = {**LIVE_START, "data": {**LIVE_START["data"], "live_info": {"categories": "x"}}}
    response = await client.post(URL, json=bad)
    assert response.status == 422
    assert (await response.json())["field"] == "data.live_info.categories"


async def test_oversized_chunked_body_without_content_length_is_413(
    client: TestClient[Any, Any], store: Store
) -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 1024

    response = await client.post(URL, data=chunks(), headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert "too large" in (await response.json())["error"]
    assert await stored(store) == (0, {})


async def test_missing_content_type_is_read_as_json(
    client: TestClient[Any, Any], store: Store
) -> None:
    response = await client.post(
        URL, data=json.dumps(LIVE_START).encode(), skip_auto_headers=["Content-Type"]
    )
    assert response.status == 202
    assert await store.count_events() == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_are_405_with_allow(client: TestClient[Any, Any], method: str) -> None:
    response = await client.request(method, URL)
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert "not allowed" in (await response.json())["error"]


async def test_healthz_reports_ok(client: TestClient[Any, Any]) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["database"] == "ok"


async def test_healthz_is_503_when_the_database_is_gone(
    client: TestClient[Any, Any], store: Store
) -> None:
    await store.close()
    response = await client.get("/healthz")
    assert response.status == 503
    assert (await response.json())["database"].startswith("error")


async def test_storage_failure_is_503_not_500(client: TestClient[Any, Any], store: Store) -> None:
    run_sql(store.path, "ALTER TABLE events RENAME TO events_gone")
    response = await client.post(URL, json=LIVE_START)
    assert response.status == 503
    assert response.headers["Retry-After"]
    assert "storage" in (await response.json())["error"]


def test_redact_query_masks_every_value() -> None:
    assert redact_query(YURL(f"/webhook/rec?key={SECRET}&x=1")) == "/webhook/rec?key=***&x=***"
    assert redact_query(YURL("/healthz")) == "/healthz"


async def test_the_key_never_reaches_a_log_line(
    aiohttp_client: ClientFactory,
    aiohttp_server: Callable[..., Awaitable[Any]],
    app_parts: tuple[web.Application, Store],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # The runner options the bot itself uses (bot.app), so this is the real access log.
    server = await aiohttp_server(app_parts[0], access_log_class=RedactingAccessLogger)
    client = await aiohttp_client(server)
    await client.post(URL, json=LIVE_START)
    await client.post(URL, json={"type": "nonsense-type"})
    await client.post(URL, data=b"{", headers={"Content-Type": "application/json"})
    await client.post("/webhook/rec?key=wrong-" + SECRET[:5], json=LIVE_START)
    access = [r for r in caplog.records if r.name == "aiohttp.access"]
    assert access, "the access log should have lines"
    assert any("key=***" in r.getMessage() for r in access)
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET[:5] not in record.getMessage()


async def test_one_log_line_per_accepted_webhook_and_routine_checks_at_debug(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert (await client.post(URL, json=LIVE_START)).status == 202
    assert (await client.get("/healthz")).status == 200
    assert (
        await client.post(URL, data=b"{", headers={"Content-Type": "application/json"})
    ).status == 400
    info = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO and r.name in ("aiohttp.access", "bot.web")
    ]
    # The accepted event is logged once, with who sent it; a refusal gets its access line.
    assert len([m for m in info if "accepted live_start" in m and "127.0.0.1" in m]) == 1
    assert [m for m in info if '"POST /webhook' in m] == [
        m for m in info if '"POST /webhook/rec?key=***" 400' in m
    ]
    assert len([m for m in info if '"POST /webhook' in m]) == 1
    assert not any("/healthz" in m for m in info)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any('"GET /healthz" 200' in m for m in debug)


async def test_readyz_says_whether_this_process_takes_webhooks_whatever_the_chats_do(
    aiohttp_client: ClientFactory,
    aiohttp_server: Callable[..., Awaitable[Any]],
    tmp_path: Path,
    store: Store,
) -> None:
    """A load balancer's check: a sink that is down (Discord unreachable) turns /healthz
    503 in every process at once, yet each still stores webhooks, so /readyz stays 200; it
    is 503 only while this process is stopping or its database does not answer."""
    down = RecordingSink()
    down.state = "connecting"
    health = Health(store=store, sinks={"discord": down}, stuck_after=300.0)
    config: Config = make_config(tmp_path, server={"port": 0})
    app = pipeline_app(
        store,
        config,
        sources=build_sources(config),
        max_body_bytes=config.server.max_body_bytes,
        health=health.report,
        readiness=health.readiness,
    )
    server = await aiohttp_server(app, access_log_class=RedactingAccessLogger)
    client = await aiohttp_client(server)
    assert (await client.get("/healthz")).status == 503
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["ready"] is True
    assert (await client.post(URL, json=LIVE_START)).status == 202

    start_draining(app)
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["why"] == "stopping"
    app[STATE_KEY].draining = False

    await store.close()
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["ready"] is False and body["why"].startswith("database unavailable")
    assert body["process"] == PROCESS_ID
