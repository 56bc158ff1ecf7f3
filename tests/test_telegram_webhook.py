"""Telegram's updates by webhook (`[telegram] updates = "webhook"`, issue 20): the config
that asks for it, the route's checks and what logs show of its secrets. The whole bot
against the fake Bot API posting to it is tests/test_e2e_telegram_webhook.py."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot.errors import ConfigError
from bot.sinks.telegram.webhook import SECRET_HEADER, SHOWN_PATH, Webhook
from bot.sources.base import WebhookRequest
from bot.web import RedactingAccessLogger, create_app
from tests.conftest import make_config

TOKEN = "123456:TEST-token-for-the-fake"


def problems(tmp_path: Path, **sections: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, **sections)
    return list(info.value.problems)


def test_webhook_mode_is_chosen_by_key_and_polling_stays_the_default(tmp_path: Path) -> None:
    polling = make_config(tmp_path, telegram={"token": TOKEN})
    assert polling.platforms["telegram"].updates == "polling"  # type: ignore[attr-defined]
    chosen = make_config(
        tmp_path,
        server={"host": "127.0.0.1", "port": 0, "public_url": "https://bot.example.com/"},
        telegram={"token": TOKEN, "updates": "webhook"},
    )
    assert chosen.server.public_url == "https://bot.example.com"  # no trailing slash
    assert chosen.platforms["telegram"].updates == "webhook"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("public_url", "updates", "expected"),
    [
        (
            None,
            "webhook",
            'telegram.updates: "webhook" needs [server] public_url, the https:// address',
        ),
        (
            "http://bot.example.com",
            "webhook",
            'server.public_url: Telegram posts updates (telegram.updates = "webhook") only to'
            " https:// addresses, got http://",
        ),
        (
            "https://bot.example.com:8080",
            "webhook",
            'server.public_url: Telegram posts updates (telegram.updates = "webhook") only to'
            " ports 443, 80, 88 or 8443, got 8080",
        ),
        ("https://bot.example.com", "push", "telegram.updates: must be one of polling, webhook"),
        ("bot.example.com", "polling", "server.public_url: expected an absolute http:// or"),
        ("https://bot.example.com/?x=1", "polling", "server.public_url: expected a base URL"),
    ],
)
def test_webhook_mistakes_are_named_by_key(
    tmp_path: Path, public_url: str | None, updates: str, expected: str
) -> None:
    server: dict[str, Any] = {"host": "127.0.0.1", "port": 0}
    if public_url is not None:
        server["public_url"] = public_url
    found = problems(tmp_path, server=server, telegram={"token": TOKEN, "updates": updates})
    assert any(problem.startswith(expected) for problem in found), found


def test_an_http_public_url_is_fine_while_telegram_polls(tmp_path: Path) -> None:
    """Only Telegram's webhook needs https; a public URL on its own is just an address."""
    config = make_config(
        tmp_path,
        server={"host": "127.0.0.1", "port": 0, "public_url": "http://10.0.0.5:8080"},
        telegram={"token": TOKEN},
    )
    assert config.server.public_url == "http://10.0.0.5:8080"


def test_every_process_derives_the_same_secrets_and_a_new_token_moves_them() -> None:
    one = Webhook.for_token(TOKEN, "https://bot.example.com")
    assert one == Webhook.for_token(TOKEN, "https://bot.example.com/")
    other = Webhook.for_token("654321:another-token", "https://bot.example.com")
    assert (other.path, other.secret_token) != (one.path, one.secret_token)
    assert one.url.startswith("https://bot.example.com/telegram/")
    assert one.shown_url == "https://bot.example.com" + SHOWN_PATH
    # setWebhook takes 1-256 characters of A-Z, a-z, 0-9, _ and -.
    assert one.secret_token.isalnum() and len(one.secret_token) == 64
    shown = repr(one)
    assert one.secret_token not in shown and one.path not in shown
    assert TOKEN not in one.url


# -- the route on the listener ----------------------------------------------------------------


class Taker:
    """What the sink does with a checked update: takes it, or not yet (not connected)."""

    def __init__(self) -> None:
        self.ready = True
        self.taken: list[dict[str, Any]] = []

    async def __call__(self, update: dict[str, Any]) -> bool:
        if self.ready:
            self.taken.append(update)
        return self.ready


async def no_health() -> dict[str, Any]:
    return {"ok": True}


@pytest.fixture
def webhook() -> Webhook:
    return Webhook.for_token(TOKEN, "https://bot.example.com")


@pytest.fixture
async def served(
    aiohttp_client: Any, aiohttp_server: Any, webhook: Webhook
) -> tuple[TestClient[Any, Any], Taker]:
    taker = Taker()
    app = create_app(
        sources={},
        intake=None,  # type: ignore[arg-type]  # no source: nothing is ever stored
        max_body_bytes=65536,
        health=no_health,
        platform_routes=[webhook.route(taker)],
    )
    server = await aiohttp_server(app, access_log_class=RedactingAccessLogger)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client, taker


UPDATE = {"update_id": 7, "message": {"message_id": 1, "text": "/help", "date": 0}}


async def test_an_update_with_the_secret_is_taken(
    served: tuple[TestClient[Any, Any], Taker], webhook: Webhook
) -> None:
    client, taker = served
    response = await client.post(
        webhook.path, json=UPDATE, headers={SECRET_HEADER: webhook.secret_token}
    )
    assert response.status == 200
    assert taker.taken == [UPDATE]


@pytest.mark.parametrize(
    ("headers", "body", "status", "error"),
    [
        ({}, UPDATE, 401, "missing or invalid credentials"),
        ({SECRET_HEADER: "a" * 64}, UPDATE, 401, "missing or invalid credentials"),
        (None, "not json", 400, "the body is not JSON"),
        (None, [1, 2], 422, "update: expected a JSON object (a Telegram Update)"),
        (None, {"update_id": "7"}, 422, "update_id: expected an integer"),
    ],
    ids=["no secret", "another secret", "not JSON", "not an object", "no update_id"],
)
async def test_a_wrong_post_is_a_json_4xx_and_nothing_is_taken(
    served: tuple[TestClient[Any, Any], Taker],
    webhook: Webhook,
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, str] | None,
    body: Any,
    status: int,
    error: str,
) -> None:
    client, taker = served
    sent = headers if headers is not None else {SECRET_HEADER: webhook.secret_token}
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    with caplog.at_level(logging.INFO):
        response = await client.post(
            webhook.path, data=data, headers={**sent, "Content-Type": "application/json"}
        )
    assert response.status == status
    answer = await response.json()
    assert answer["error"].startswith(error), answer
    assert taker.taken == []
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert webhook.path not in logged and webhook.secret_token not in logged
    assert SHOWN_PATH in logged  # the access log line, without the secret part
    if status == 401:
        assert "authentication failed for platform telegram from 127.0.0.1" in logged


async def test_an_update_before_the_sink_is_connected_is_503_so_telegram_sends_it_again(
    served: tuple[TestClient[Any, Any], Taker], webhook: Webhook
) -> None:
    client, taker = served
    taker.ready = False
    response = await client.post(
        webhook.path, json=UPDATE, headers={SECRET_HEADER: webhook.secret_token}
    )
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    taker.ready = True
    again = await client.post(
        webhook.path, json=UPDATE, headers={SECRET_HEADER: webhook.secret_token}
    )
    assert again.status == 200
    assert taker.taken == [UPDATE]


async def test_only_post_reaches_the_route_and_other_paths_are_not_it(
    served: tuple[TestClient[Any, Any], Taker], webhook: Webhook
) -> None:
    client, taker = served
    response = await client.get(webhook.path, headers={SECRET_HEADER: webhook.secret_token})
    assert response.status == 405 and response.headers["Allow"] == "POST"
    guessed = await client.post(
        "/telegram/" + "0" * 32, json=UPDATE, headers={SECRET_HEADER: webhook.secret_token}
    )
    assert guessed.status == 404
    assert "error" in await guessed.json()
    assert taker.taken == []


def test_checked_reads_the_header_case_insensitively(webhook: Webhook) -> None:
    request = WebhookRequest(
        query={},
        headers={SECRET_HEADER.lower(): webhook.secret_token},
        body=json.dumps(UPDATE).encode(),
        received_at=datetime.now(UTC),
    )
    assert webhook.checked(request) == UPDATE
