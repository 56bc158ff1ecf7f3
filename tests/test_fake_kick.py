"""The Kick fake, driven by plain aiohttp clients and a tiny webhook standing in for the bot."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.kick_api import FakeKick, ulid

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")  # Crockford base32: no I, L, O, U
HEADERS = (
    "Kick-Event-Message-Id",
    "Kick-Event-Subscription-Id",
    "Kick-Event-Signature",
    "Kick-Event-Message-Timestamp",
    "Kick-Event-Type",
    "Kick-Event-Version",
)
LIVESTREAM_EVENTS = [
    {"name": "livestream.status.updated", "version": 1},
    {"name": "livestream.metadata.updated", "version": 1},
]


def verifies(pem: str, headers: dict[str, str], body: bytes) -> bool:
    """The documented check, written independently of the fake's signer."""
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    signed = (
        f"{headers['Kick-Event-Message-Id']}.{headers['Kick-Event-Message-Timestamp']}.".encode()
        + body
    )
    try:
        key.verify(
            base64.b64decode(headers["Kick-Event-Signature"], validate=True),
            signed,
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature:
        return False
    return True


@dataclass
class Receiver:
    """A stand-in for the bot's webhook: records and answers ``status`` after ``delay``."""

    status: int = 200
    delay: float = 0.0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook/kick", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/webhook/kick"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    await rx.start()
    yield rx
    assert rx.runner is not None
    await rx.runner.cleanup()


@pytest.fixture
async def fake(receiver: Receiver) -> AsyncIterator[FakeKick]:
    async with FakeKick(webhook_url=receiver.url, delivery_timeout=1.0) as kick:
        kick.add_channel("aurora", username="Aurora", title="Old title", category="Celeste")
        kick.add_channel("mika", username="Mika")
        yield kick


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_token(http: aiohttp.ClientSession, fake: FakeKick) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
    }
    async with http.post(f"{fake.auth_url}/token", data=form) as resp:
        assert resp.status == 200
        return str((await resp.json())["access_token"])


async def kick(
    http: aiohttp.ClientSession,
    fake: FakeKick,
    method: str,
    path: str,
    token: str | None,
    *,
    params: Any = None,
    body: Any = None,
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with http.request(
        method, f"{fake.api_url}{path}", params=params, json=body, headers=headers
    ) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None), dict(resp.headers)


async def subscribe(
    http: aiohttp.ClientSession, fake: FakeKick, token: str, slug: str = "aurora"
) -> list[dict[str, Any]]:
    body = {
        "broadcaster_user_id": fake.channel(slug).user_id,
        "events": LIVESTREAM_EVENTS,
        "method": "webhook",
    }
    status, answer, _ = await kick(http, fake, "POST", "/events/subscriptions", token, body=body)
    assert status == 200, answer
    return list(answer["data"])


# -- OAuth ---------------------------------------------------------------------------------


async def test_client_credentials_grant_issues_a_bearer_app_token(
    fake: FakeKick, http: aiohttp.ClientSession
) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
    }
    async with http.post(f"{fake.auth_url}/token", data=form) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    status, _, _ = await kick(
        http, fake, "GET", "/channels", body["access_token"], params={"slug": "aurora"}
    )
    assert status == 200
    request = fake.requests_to("/oauth/token", "POST")[-1]
    assert request.form["grant_type"] == "client_credentials"


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"client_secret": "wrong"}, 401),
        ({"client_id": "someone-else"}, 401),
        ({"grant_type": None}, 400),
        ({"grant_type": "authorization_code"}, 400),
        ({"client_secret": None}, 400),
    ],
)
async def test_the_token_endpoint_refuses_bad_grants(
    fake: FakeKick, http: aiohttp.ClientSession, changes: dict[str, str | None], status: int
) -> None:
    form: dict[str, str | None] = {
        "grant_type": "client_credentials",
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        **changes,
    }
    data = {k: v for k, v in form.items() if v is not None}
    async with http.post(f"{fake.auth_url}/token", data=data) as resp:
        assert resp.status == status
        assert "error" in await resp.json()
    assert not fake.tokens


async def test_the_token_endpoint_takes_a_form_body_only(
    fake: FakeKick, http: aiohttp.ClientSession
) -> None:
    params = {
        "grant_type": "client_credentials",
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
    }
    async with http.post(f"{fake.auth_url}/token", params=params) as resp:
        assert resp.status == 400
        assert await resp.json() == {"error": "Invalid request"}
    async with http.post(f"{fake.auth_url}/token", json=params) as resp:
        assert resp.status == 400


async def test_api_calls_need_a_live_app_token_but_the_public_key_does_not(
    fake: FakeKick, http: aiohttp.ClientSession
) -> None:
    unauthorized = {"data": {}, "message": "Unauthorized"}
    params = {"slug": "aurora"}
    assert (await kick(http, fake, "GET", "/channels", None, params=params))[:2] == (
        401,
        unauthorized,
    )
    assert (await kick(http, fake, "GET", "/channels", "made-up", params=params))[0] == 401
    token = await get_token(http, fake)
    assert (await kick(http, fake, "GET", "/livestreams", token))[0] == 200
    fake.expire_tokens()
    assert (await kick(http, fake, "GET", "/livestreams", token))[:2] == (401, unauthorized)
    assert (await kick(http, fake, "GET", "/events/subscriptions", token))[0] == 401
    status, body, _ = await kick(http, fake, "GET", "/public-key", None)
    assert status == 200
    assert body["message"] == "OK"
    assert body["data"]["public_key"] == fake.public_key_pem
    assert fake.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert (await kick(http, fake, "GET", "/nowhere", await get_token(http, fake)))[0] == 404


# -- channels and livestreams --------------------------------------------------------------


async def test_channels_by_slug_or_id_leave_unknown_ones_out(
    fake: FakeKick, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    status, body, _ = await kick(
        http, fake, "GET", "/channels", token, params=[("slug", "aurora"), ("slug", "nobody")]
    )
    assert status == 200
    assert body["message"] == "OK"
    [channel] = body["data"]
    aurora = fake.channel("aurora")
    assert channel["broadcaster_user_id"] == aurora.user_id
    assert isinstance(channel["broadcaster_user_id"], int)
    assert channel["slug"] == "aurora"
    assert channel["stream_title"] == "Old title"
    assert channel["category"]["name"] == "Celeste"
    assert set(channel["category"]) == {"id", "name", "thumbnail"}
    assert {"banner_picture", "channel_description", "stream"} <= set(channel)
    assert channel["stream"]["is_live"] is False

    ids = [("broadcaster_user_id", str(c.user_id)) for c in fake.channels.values()]
    status, body, _ = await kick(http, fake, "GET", "/channels", token, params=ids)
    assert status == 200
    assert sorted(c["slug"] for c in body["data"]) == ["aurora", "mika"]


@pytest.mark.parametrize(
    "params",
    [
        [("slug", f"c{i}") for i in range(51)],
        [("broadcaster_user_id", str(i)) for i in range(51)],
        [("slug", "aurora"), ("broadcaster_user_id", "1")],
        [("broadcaster_user_id", "aurora")],
        [],
    ],
)
async def test_channels_refuse_bad_queries(
    fake: FakeKick, http: aiohttp.ClientSession, params: list[tuple[str, str]]
) -> None:
    token = await get_token(http, fake)
    status, body, _ = await kick(http, fake, "GET", "/channels", token, params=params)
    assert status == 400
    assert body["data"] == {}


async def test_fifty_slugs_are_fine(fake: FakeKick, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, fake)
    params = [("slug", "aurora")] + [("slug", f"c{i}") for i in range(49)]
    status, body, _ = await kick(http, fake, "GET", "/channels", token, params=params)
    assert status == 200
    assert len(body["data"]) == 1


async def test_livestreams_list_only_live_channels_in_the_documented_shape(
    fake: FakeKick, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    started = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    await fake.go_live("aurora", title="Speedrun", category="Hades", started_at=started)
    params = [("broadcaster_user_id", str(c.user_id)) for c in fake.channels.values()]
    status, body, _ = await kick(http, fake, "GET", "/livestreams", token, params=params)
    assert status == 200
    [stream] = body["data"]
    assert set(stream) >= {
        "broadcaster_user_id",
        "channel_id",
        "slug",
        "stream_title",
        "started_at",
        "thumbnail",
        "profile_picture",
        "category",
        "language",
        "has_mature_content",
        "viewer_count",
    }
    assert stream["broadcaster_user_id"] == fake.channel("aurora").user_id
    assert stream["slug"] == "aurora"
    assert stream["stream_title"] == "Speedrun"
    assert stream["category"]["name"] == "Hades"
    assert stream["started_at"] == "2026-01-01T00:00:00Z"
    status, body, _ = await kick(http, fake, "GET", "/channels", token, params={"slug": "aurora"})
    assert body["data"][0]["stream"]["is_live"] is True

    too_many = [("broadcaster_user_id", str(i)) for i in range(51)]
    assert (await kick(http, fake, "GET", "/livestreams", token, params=too_many))[0] == 400


async def test_the_listing_lags_a_start_and_an_end_by_polls(
    fake: FakeKick, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    user_id = fake.channel("aurora").user_id
    params = {"broadcaster_user_id": str(user_id)}

    async def listed() -> bool:
        _, body, _ = await kick(http, fake, "GET", "/livestreams", token, params=params)
        return bool(body["data"])

    await fake.go_live("aurora", listing_delay_polls=2)
    assert [await listed(), await listed(), await listed()] == [False, False, True]
    await fake.go_offline("aurora", listing_delay_polls=1)
    assert [await listed(), await listed()] == [True, False]
    assert len(fake.requests_to("/public/v1/livestreams", "GET")) == 5
    assert (await fake.wait_for_request("/public/v1/livestreams", count=5)).status == 200


async def test_a_lost_delivery_still_starts_the_stream(
    fake: FakeKick, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    await subscribe(http, fake, token)
    assert await fake.go_live("aurora", deliver=False) == []
    assert not receiver.received
    assert fake.channel("aurora").live
    _, body, _ = await kick(http, fake, "GET", "/livestreams", token)
    assert [s["slug"] for s in body["data"]] == ["aurora"]


# -- subscriptions -------------------------------------------------------------------------


async def test_subscriptions_are_created_listed_deduplicated_and_deleted(
    fake: FakeKick, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    aurora = fake.channel("aurora")
    made = await subscribe(http, fake, token)
    assert [(r["name"], r["version"]) for r in made] == [
        ("livestream.status.updated", 1),
        ("livestream.metadata.updated", 1),
    ]
    assert all(ULID.match(r["subscription_id"]) and "error" not in r for r in made)
    sub = await fake.wait_for_subscription("livestream.status.updated", aurora.user_id)
    assert sub.id == made[0]["subscription_id"]

    status, body, _ = await kick(http, fake, "GET", "/events/subscriptions", token)
    assert status == 200
    assert body["message"] == "OK"
    listed = body["data"][0]
    assert set(listed) == {
        "id",
        "app_id",
        "broadcaster_user_id",
        "event",
        "version",
        "method",
        "created_at",
        "updated_at",
    }
    assert listed["broadcaster_user_id"] == aurora.user_id
    assert listed["version"] == 1
    assert listed["method"] == "webhook"
    assert listed["app_id"] == fake.app_id

    # The same again answers the existing ids and makes none.
    assert [r["subscription_id"] for r in await subscribe(http, fake, token)] == [
        r["subscription_id"] for r in made
    ]
    assert len(fake.subscriptions) == 2

    await subscribe(http, fake, token, "mika")
    status, body, _ = await kick(
        http,
        fake,
        "GET",
        "/events/subscriptions",
        token,
        params={"broadcaster_user_id": str(aurora.user_id)},
    )
    assert len(body["data"]) == 2

    ids = [("id", made[0]["subscription_id"]), ("id", "01UNKNOWNUNKNOWNUNKNOWN000")]
    status, body, _ = await kick(http, fake, "DELETE", "/events/subscriptions", token, params=ids)
    assert (status, body) == (204, None)
    assert made[0]["subscription_id"] not in fake.subscriptions
    assert len(fake.subscriptions) == 3
    assert (await kick(http, fake, "DELETE", "/events/subscriptions", token))[0] == 400


async def test_an_unknown_event_or_version_is_an_error_item_and_no_subscription(
    fake: FakeKick, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    body = {
        "broadcaster_user_id": fake.channel("aurora").user_id,
        "events": [
            {"name": "stream.online", "version": 1},
            {"name": "livestream.status.updated", "version": 2},
            {"name": "livestream.status.updated", "version": 1},
        ],
        "method": "webhook",
    }
    status, answer, _ = await kick(http, fake, "POST", "/events/subscriptions", token, body=body)
    assert status == 200
    unknown, old_version, ok = answer["data"]
    assert unknown["error"] and "subscription_id" not in unknown
    assert old_version["error"] and "subscription_id" not in old_version
    assert ok["subscription_id"] and "error" not in ok
    assert [s.event for s in fake.subscriptions.values()] == ["livestream.status.updated"]


@pytest.mark.parametrize(
    "body",
    [
        {"events": LIVESTREAM_EVENTS, "method": "webhook"},
        {"broadcaster_user_id": "123456789", "events": LIVESTREAM_EVENTS, "method": "webhook"},
        {"broadcaster_user_id": 999, "events": LIVESTREAM_EVENTS, "method": "webhook"},
        {"broadcaster_user_id": 123456789, "events": [], "method": "webhook"},
        {"broadcaster_user_id": 123456789, "events": LIVESTREAM_EVENTS},
        {
            "broadcaster_user_id": 123456789,
            "events": [{"name": "livestream.status.updated", "version": "1"}],
            "method": "webhook",
        },
        [1, 2],
    ],
)
async def test_create_refuses_malformed_requests(
    fake: FakeKick, http: aiohttp.ClientSession, body: Any
) -> None:
    assert fake.channel("aurora").user_id == 123456789
    token = await get_token(http, fake)
    status, answer, _ = await kick(http, fake, "POST", "/events/subscriptions", token, body=body)
    assert status == 400
    assert answer["message"]
    assert not fake.subscriptions


async def test_create_refuses_bad_json(fake: FakeKick, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, fake)
    async with http.post(
        f"{fake.api_url}/events/subscriptions",
        data=b"{not json",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400


async def test_disabling_webhooks_drops_every_subscription(
    fake: FakeKick, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    await subscribe(http, fake, token)
    fake.disable_webhooks()
    assert not fake.subscriptions
    body = {"broadcaster_user_id": 123456789, "events": LIVESTREAM_EVENTS, "method": "webhook"}
    assert (await kick(http, fake, "POST", "/events/subscriptions", token, body=body))[0] == 400


# -- faults --------------------------------------------------------------------------------


async def test_rate_limit_next_answers_429_with_retry_after(
    fake: FakeKick, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    fake.rate_limit_next(2, retry_after=2.5, path="/livestreams")
    for _ in range(2):
        status, body, headers = await kick(http, fake, "GET", "/livestreams", token)
        assert status == 429
        assert headers["Retry-After"] == "3"
        assert body["message"]
    assert (await kick(http, fake, "GET", "/livestreams", token))[0] == 200


async def test_fail_next_injects_server_errors(
    fake: FakeKick, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    fake.fail_next("/events/subscriptions", 503)
    assert (await kick(http, fake, "GET", "/livestreams", token))[0] == 200
    assert (await kick(http, fake, "GET", "/events/subscriptions", token))[0] == 503
    assert (await kick(http, fake, "GET", "/events/subscriptions", token))[0] == 200


# -- deliveries ----------------------------------------------------------------------------


async def test_go_live_delivers_a_signed_status_update_with_the_six_headers(
    fake: FakeKick, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    made = await subscribe(http, fake, token)
    await subscribe(http, fake, token, "mika")  # another channel: not delivered
    started = datetime(2026, 3, 1, 9, 30, 0, tzinfo=UTC)
    assert await fake.go_live("aurora", title="Ünïcode run", started_at=started) == [200]

    [(headers, raw)] = receiver.received
    for name in HEADERS:
        assert headers[name], name
    assert headers["Content-Type"] == "application/json"
    assert ULID.match(headers["Kick-Event-Message-Id"])
    assert headers["Kick-Event-Subscription-Id"] == made[0]["subscription_id"]
    assert headers["Kick-Event-Type"] == "livestream.status.updated"
    assert headers["Kick-Event-Version"] == "1"
    stamp = datetime.fromisoformat(headers["Kick-Event-Message-Timestamp"])
    assert abs(datetime.now(UTC) - stamp) < timedelta(seconds=5)

    # The key from the API verifies it; a key the fake rotated to no longer does.
    _, body, _ = await kick(http, fake, "GET", "/public-key", None)
    assert verifies(body["data"]["public_key"], headers, raw)
    assert not verifies(body["data"]["public_key"], headers, raw + b" ")
    old = fake.public_key_pem
    fake.rotate_key()
    assert fake.public_key_pem != old
    assert not verifies(fake.public_key_pem, headers, raw)

    payload = json.loads(raw)
    assert payload == {
        "broadcaster": fake.channel("aurora").broadcaster_json(),
        "is_live": True,
        "title": "Ünïcode run",
        "started_at": "2026-03-01T20:30:00+11:00",  # the docs' examples' offset
        "ended_at": None,
    }
    assert set(payload["broadcaster"]) == {
        "is_anonymous",
        "user_id",
        "username",
        "is_verified",
        "profile_picture",
        "channel_slug",
        "identity",
    }
    delivery = fake.deliveries[-1]
    assert (delivery.status, delivery.body, delivery.url) == (200, raw, receiver.url)
    assert delivery.response_text == "ok"


async def test_go_offline_and_metadata_payloads(
    fake: FakeKick, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    await subscribe(http, fake, token)
    await fake.go_live("aurora")
    assert await fake.go_offline("aurora") == [200]
    live, ended = (json.loads(body) for _, body in receiver.received)
    assert ended["is_live"] is False
    assert ended["started_at"] == live["started_at"]
    assert ended["ended_at"] is not None
    assert await fake.update_metadata("aurora", title="New", category="Hades") == [200]
    headers, raw = receiver.received[-1]
    assert headers["Kick-Event-Type"] == "livestream.metadata.updated"
    metadata = json.loads(raw)["metadata"]
    assert metadata["title"] == "New"
    assert metadata["category"]["name"] == "Hades"
    assert set(metadata) == {"title", "language", "has_mature_content", "category"}
    assert set(metadata["category"]) == {"id", "name", "thumbnail"}
    assert fake.channel("aurora").title == "New"


async def test_a_forged_delivery_does_not_verify(
    fake: FakeKick, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    await subscribe(http, fake, token)
    payload = {"broadcaster": fake.channel("aurora").broadcaster_json(), "metadata": {}}
    await fake.send("livestream.metadata.updated", payload, forge=True)
    await fake.send("livestream.metadata.updated", payload)
    (forged_headers, forged), (headers, raw) = receiver.received
    assert not verifies(fake.public_key_pem, forged_headers, forged)
    assert verifies(fake.public_key_pem, headers, raw)


async def test_resend_keeps_the_id_body_and_timestamp(
    fake: FakeKick, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    await subscribe(http, fake, token)
    await fake.go_live("aurora")
    first = fake.deliveries[-1]
    assert await fake.resend(first) == 200
    again = fake.deliveries[-1]
    assert again.resent
    assert (again.message_id, again.timestamp, again.body) == (
        first.message_id,
        first.timestamp,
        first.body,
    )
    assert receiver.received[0] == receiver.received[1]
    # A stale message, as a replay looks.
    stale = fake.timestamp(seconds_ago=90_000)
    await fake.send("livestream.status.updated", first.payload, timestamp=stale)
    assert receiver.received[-1][0]["Kick-Event-Message-Timestamp"] == stale
    assert receiver.received[-1][0]["Kick-Event-Message-Id"] != first.message_id


async def test_one_delivery_per_subscription_and_none_without_one(
    fake: FakeKick, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    assert await fake.go_live("aurora") == []
    token = await get_token(http, fake)
    await subscribe(http, fake, token, "mika")
    await fake.go_live("mika")
    assert len(receiver.received) == 1
    assert receiver.received[0][0]["Kick-Event-Subscription-Id"] in fake.subscriptions


async def test_slow_missing_and_unreachable_webhooks_are_recorded(
    fake: FakeKick, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    await subscribe(http, fake, token)
    receiver.delay = 1.5
    assert await fake.go_live("aurora") == [None]
    assert fake.deliveries[-1].timed_out
    receiver.delay = 0.0
    fake.set_webhook_url("https://bot.example.com/webhook/kick")
    assert await fake.update_metadata("aurora") == [None]
    assert "loopback" in (fake.deliveries[-1].error or "")
    fake.set_webhook_url(None)
    assert await fake.update_metadata("aurora") == [None]
    assert fake.deliveries[-1].error


def test_ulids_are_26_crockford_characters_in_time_order() -> None:
    first, second = ulid(1_700_000_000_000), ulid(1_700_000_000_001)
    assert ULID.match(first) and ULID.match(second)
    assert first[:10] < second[:10]
    assert ulid(0).startswith("0000000000")
