"""The Twitch fake, driven by plain aiohttp clients and a tiny callback standing in for the bot."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.twitch_api import FakeTwitch, rfc3339_nano

SECRET = "eventsub-secret-for-the-fake-0123"
# "NOTE All timestamps are in RFC3339 format and use nanoseconds" (Go trims trailing zeros).
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


@dataclass
class Receiver:
    """A stand-in for the bot's webhook: verifies like the docs say, answers as told."""

    secret: str = SECRET
    challenge_mode: str = "right"  # right | json | wrong | reversed | status204 | html
    delay: float = 0.0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None

    def verified(self, headers: dict[str, str], body: bytes) -> bool:
        # The documented check, written independently of the fake's own signer.
        message = (
            headers["Twitch-Eventsub-Message-Id"] + headers["Twitch-Eventsub-Message-Timestamp"]
        ).encode() + body
        expected = "sha256=" + hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, headers["Twitch-Eventsub-Message-Signature"])

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        self.received.append((headers, body))
        if not self.verified(headers, body):
            return web.Response(status=403)
        sent = headers["Twitch-Eventsub-Message-Timestamp"][:26].rstrip("Z") + "+00:00"
        if datetime.now(UTC) - datetime.fromisoformat(sent) > timedelta(minutes=10):
            return web.Response(status=403)
        if self.delay:
            await asyncio.sleep(self.delay)
        if headers["Twitch-Eventsub-Message-Type"] != "webhook_callback_verification":
            return web.Response(status=204)
        challenge = json.loads(body)["challenge"]
        if self.challenge_mode == "json":
            return web.json_response({"challenge": challenge})
        if self.challenge_mode == "wrong":
            return web.Response(text=challenge + "\n", content_type="text/plain")
        if self.challenge_mode == "reversed":  # same length, other bytes
            return web.Response(text=challenge[::-1], content_type="text/plain")
        if self.challenge_mode == "status204":
            return web.Response(status=204, text=challenge, content_type="text/plain")
        if self.challenge_mode == "html":
            return web.Response(text=challenge, content_type="text/html")
        return web.Response(text=challenge, content_type="text/plain")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook/twitch", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/webhook/twitch"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwitch]:
    async with FakeTwitch(allow_insecure_callbacks=True, delivery_timeout=2.0) as tw:
        tw.add_user("quinn", display_name="Quinn", title="Old title", game="Celeste")
        tw.add_user("mika", display_name="Mika")
        yield tw


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    await rx.start()
    yield rx
    assert rx.runner is not None
    await rx.runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_token(http: aiohttp.ClientSession, fake: FakeTwitch) -> str:
    async with http.post(
        f"{fake.auth_url}/token",
        data={
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
            "grant_type": "client_credentials",
        },
    ) as resp:
        assert resp.status == 200
        return str((await resp.json())["access_token"])


async def helix(
    http: aiohttp.ClientSession,
    fake: FakeTwitch,
    method: str,
    path: str,
    token: str | None,
    *,
    params: Any = None,
    body: Any = None,
    client_id: str | None = None,
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Client-Id": client_id or fake.client_id}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.request(
        method, f"{fake.api_url}{path}", params=params, json=body, headers=headers
    ) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None), dict(resp.headers)


def subscription_body(
    fake: FakeTwitch, callback: str, sub_type: str = "stream.online", login: str = "quinn"
) -> dict[str, Any]:
    version = "2" if sub_type == "channel.update" else "1"
    return {
        "type": sub_type,
        "version": version,
        "condition": {"broadcaster_user_id": fake.user(login).id},
        "transport": {"method": "webhook", "callback": callback, "secret": SECRET},
    }


async def subscribe(
    http: aiohttp.ClientSession,
    fake: FakeTwitch,
    token: str,
    callback: str,
    sub_type: str = "stream.online",
    login: str = "quinn",
) -> str:
    status, body, _ = await helix(
        http,
        fake,
        "POST",
        "/eventsub/subscriptions",
        token,
        body=subscription_body(fake, callback, sub_type, login),
    )
    assert status == 202, body
    sub_id = str(body["data"][0]["id"])
    await fake.wait_for_verification(sub_id)
    return sub_id


# -- OAuth ---------------------------------------------------------------------------------


async def test_client_credentials_grant_issues_a_bearer_app_token(
    fake: FakeTwitch, http: aiohttp.ClientSession
) -> None:
    # Twitch accepts the parameters in the query string as well as in a form body.
    async with http.post(
        f"{fake.auth_url}/token",
        params={
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
            "grant_type": "client_credentials",
        },
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 5_000_000
    async with http.get(
        f"{fake.auth_url}/validate", headers={"Authorization": f"OAuth {body['access_token']}"}
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["client_id"] == fake.client_id


@pytest.mark.parametrize(
    ("client_id", "secret", "status", "message"),
    [
        ("someoneelse", None, 400, "invalid client"),
        (None, "wrong-secret", 403, "invalid client secret"),
    ],
)
async def test_wrong_credentials_are_refused_as_twitch_refuses_them(
    fake: FakeTwitch,
    http: aiohttp.ClientSession,
    client_id: str | None,
    secret: str | None,
    status: int,
    message: str,
) -> None:
    data = {
        "client_id": client_id or fake.client_id,
        "client_secret": secret or fake.client_secret,
        "grant_type": "client_credentials",
    }
    async with http.post(f"{fake.auth_url}/token", data=data) as resp:
        assert resp.status == status
        assert await resp.json() == {"status": status, "message": message}
    assert fake.tokens == {}


# -- Helix authorization -------------------------------------------------------------------


async def test_helix_answers_401_with_twitchs_error_bodies(
    fake: FakeTwitch, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    params = {"login": "quinn"}

    status, body, _ = await helix(http, fake, "GET", "/users", None, params=params)
    assert (status, body) == (
        401,
        {"error": "Unauthorized", "status": 401, "message": "OAuth token is missing"},
    )
    status, body, _ = await helix(
        http, fake, "GET", "/users", token, params=params, client_id="otherclient"
    )
    assert body["message"] == "Client ID and OAuth token do not match"
    status, body, _ = await helix(http, fake, "GET", "/users", "not-a-token", params=params)
    assert (status, body["message"]) == (401, "Invalid OAuth token")
    async with http.get(
        f"{fake.api_url}/users", params=params, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 401
        assert (await resp.json())["message"] == "Client ID is missing"

    status, _, _ = await helix(http, fake, "GET", "/users", token, params=params)
    assert status == 200
    fake.expire_tokens()
    status, body, _ = await helix(http, fake, "GET", "/users", token, params=params)
    assert (status, body["message"]) == (401, "Invalid OAuth token")
    fresh = await get_token(http, fake)
    fake.revoke_token(fresh)
    status, _, _ = await helix(http, fake, "GET", "/users", fresh, params=params)
    assert status == 401


async def test_rate_limit_next_answers_429_with_ratelimit_headers(
    fake: FakeTwitch, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    fake.rate_limit_next(path="/streams", reset_in=1)
    before = time.time()
    status, body, headers = await helix(
        http, fake, "GET", "/streams", token, params={"user_id": "1"}
    )
    assert status == 429
    assert body["status"] == 429
    assert headers["Ratelimit-Limit"] == "800"
    assert headers["Ratelimit-Remaining"] == "0"
    assert int(headers["Ratelimit-Reset"]) >= before + 1
    # Only the next call was limited; answers carry the headers with spare capacity.
    status, _, headers = await helix(http, fake, "GET", "/streams", token, params={"user_id": "1"})
    assert status == 200
    assert 0 < int(headers["Ratelimit-Remaining"]) < 800
    assert headers["Content-Type"] == "application/json; charset=utf-8"


async def test_fail_next_injects_any_helix_error(
    fake: FakeTwitch, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    fake.fail_next("/users", status=503)
    status, body, _ = await helix(http, fake, "GET", "/users", token, params={"login": "quinn"})
    assert (status, body["error"]) == (503, "Service Unavailable")
    status, _, _ = await helix(http, fake, "GET", "/users", token, params={"login": "quinn"})
    assert status == 200


# -- users, streams, channels, videos ------------------------------------------------------


async def test_get_users_leaves_unknown_logins_out_and_caps_at_100(
    fake: FakeTwitch, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    status, body, _ = await helix(
        http, fake, "GET", "/users", token, params=[("login", "quinn"), ("login", "ghost")]
    )
    assert status == 200
    assert [u["login"] for u in body["data"]] == ["quinn"]
    user = body["data"][0]
    assert user["id"] == fake.user("quinn").id
    assert user["display_name"] == "Quinn"
    assert user["profile_image_url"].startswith("https://")
    many = [("login", f"user{i}") for i in range(101)]
    status, _, _ = await helix(http, fake, "GET", "/users", token, params=many)
    assert status == 400
    status, _, _ = await helix(http, fake, "GET", "/users", token)
    assert status == 400
    request = fake.requests_to("/helix/users")[0]
    assert request.query == {"login": ["quinn", "ghost"]}
    assert request.headers["Authorization"] == f"Bearer {token}"


async def test_streams_list_only_live_channels_with_thumbnail_placeholders(
    fake: FakeTwitch, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    quinn = fake.user("quinn")
    params = [("user_id", quinn.id), ("user_id", fake.user("mika").id)]
    status, body, _ = await helix(http, fake, "GET", "/streams", token, params=params)
    assert (status, body) == (200, {"data": [], "pagination": {}})

    assert await fake.go_live("quinn", title="Any% run", game="Celeste") == []  # nobody subscribed
    status, body, _ = await helix(http, fake, "GET", "/streams", token, params=params)
    [stream] = body["data"]
    assert stream["user_id"] == quinn.id
    assert stream["type"] == "live"
    assert stream["title"] == "Any% run"
    assert stream["game_name"] == "Celeste"
    assert "{width}x{height}" in stream["thumbnail_url"]

    await fake.go_offline("quinn")
    status, body, _ = await helix(http, fake, "GET", "/streams", token, params=params)
    assert body["data"] == []
    status, body, _ = await helix(
        http, fake, "GET", "/videos", token, params={"user_id": quinn.id, "type": "archive"}
    )
    assert [v["stream_id"] for v in body["data"]] == [stream["id"]]
    status, _, _ = await helix(http, fake, "GET", "/streams", token, params={"type": "bogus"})
    assert status == 400


async def test_helix_lag_hides_a_new_stream_for_n_calls_or_seconds(
    fake: FakeTwitch, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    quinn = fake.user("quinn")
    await fake.go_live("quinn", helix_delay_calls=2)
    seen = []
    for _ in range(3):
        _, body, _ = await helix(
            http, fake, "GET", "/streams", token, params={"user_id": quinn.id}
        )
        seen.append(len(body["data"]))
    assert seen == [0, 0, 1]

    mika = fake.user("mika")
    await fake.go_live("mika", helix_delay=3600)
    _, body, _ = await helix(http, fake, "GET", "/streams", token, params={"user_id": mika.id})
    assert body["data"] == []


async def test_channels_carry_title_game_and_language_live_or_not(
    fake: FakeTwitch, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, fake)
    quinn = fake.user("quinn")
    status, body, _ = await helix(
        http, fake, "GET", "/channels", token, params={"broadcaster_id": quinn.id}
    )
    assert status == 200
    [channel] = body["data"]
    assert channel["title"] == "Old title"
    assert channel["game_name"] == "Celeste"
    assert channel["game_id"] == fake.games["Celeste"]
    assert channel["broadcaster_language"] == "en"
    await fake.update_channel("quinn", title="New title", game="Just Chatting", language="de")
    _, body, _ = await helix(
        http, fake, "GET", "/channels", token, params={"broadcaster_id": quinn.id}
    )
    assert (body["data"][0]["title"], body["data"][0]["broadcaster_language"]) == (
        "New title",
        "de",
    )
    status, _, _ = await helix(http, fake, "GET", "/channels", token)
    assert status == 400


# -- EventSub subscriptions ----------------------------------------------------------------


async def test_create_answers_202_pending_with_costs_then_the_right_answer_enables_it(
    fake: FakeTwitch, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    status, body, _ = await helix(
        http,
        fake,
        "POST",
        "/eventsub/subscriptions",
        token,
        body=subscription_body(fake, receiver.url),
    )
    assert status == 202
    [created] = body["data"]
    assert created["status"] == "webhook_callback_verification_pending"
    assert created["transport"] == {"method": "webhook", "callback": receiver.url}
    assert "secret" not in json.dumps(body)
    assert (created["cost"], body["total"], body["total_cost"], body["max_total_cost"]) == (
        1,
        1,
        1,
        10_000,
    )
    sub = await fake.wait_for_verification(created["id"])
    assert sub.status == "enabled"

    [(headers, raw)] = receiver.received
    assert headers["Twitch-Eventsub-Message-Type"] == "webhook_callback_verification"
    assert headers["Twitch-Eventsub-Subscription-Type"] == "stream.online"
    assert headers["Twitch-Eventsub-Subscription-Version"] == "1"
    assert headers["Twitch-Eventsub-Message-Retry"] == "0"
    assert TIMESTAMP.match(headers["Twitch-Eventsub-Message-Timestamp"])
    assert receiver.verified(headers, raw)
    payload = json.loads(raw)
    assert payload["subscription"]["id"] == created["id"]
    assert payload["subscription"]["status"] == "webhook_callback_verification_pending"


@pytest.mark.parametrize("mode", ["json", "wrong", "reversed", "status204", "html"])
async def test_a_challenge_answered_otherwise_fails_verification(
    fake: FakeTwitch, http: aiohttp.ClientSession, receiver: Receiver, mode: str
) -> None:
    receiver.challenge_mode = mode
    token = await get_token(http, fake)
    sub_id = await subscribe(http, fake, token, receiver.url)
    assert fake.subscriptions[sub_id].status == "webhook_callback_verification_failed"
    # A failed subscription gets no events.
    assert await fake.go_live("quinn") == []


async def test_html_challenge_answer_passes_when_only_twitchs_checks_apply(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.challenge_mode = "html"
    async with FakeTwitch(allow_insecure_callbacks=True, strict_challenge=False) as fake:
        fake.add_user("quinn")
        token = await get_token(http, fake)
        sub_id = await subscribe(http, fake, token, receiver.url)
        assert fake.subscriptions[sub_id].status == "enabled"


async def test_callbacks_must_be_https_on_443_unless_relaxed(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with FakeTwitch() as fake:
        fake.add_user("quinn")
        token = await get_token(http, fake)
        for callback in (receiver.url, "https://bot.example.com:8443/webhook/twitch"):
            status, body, _ = await helix(
                http,
                fake,
                "POST",
                "/eventsub/subscriptions",
                token,
                body=subscription_body(fake, callback),
            )
            assert status == 400, callback
            assert "HTTPS" in body["message"]
        # A public https callback passes; the fake never leaves 127.0.0.1, so unrouted it
        # cannot be verified, and routed (a TLS proxy in front of the bot) it is.
        sub_id = await subscribe(http, fake, token, "https://bot.example.com/webhook/twitch")
        assert fake.subscriptions[sub_id].status == "webhook_callback_verification_failed"
        assert "unreachable" in (fake.deliveries[-1].error or "")
        fake.route_callback(
            "https://bot.example.com", receiver.url.removesuffix("/webhook/twitch")
        )
        sub_id = await subscribe(
            http, fake, token, "https://bot.example.com/webhook/twitch", "stream.offline"
        )
        assert fake.subscriptions[sub_id].status == "enabled"
        assert receiver.received


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"secret": "short"}, "secret"),
        ({"secret": "x" * 101}, "secret"),
        ({"version": "2"}, "version"),
        ({"broadcaster_user_id": "999"}, "does not exist"),
        ({"method": "websocket"}, "method"),
    ],
)
async def test_create_validates_the_request(
    fake: FakeTwitch,
    http: aiohttp.ClientSession,
    receiver: Receiver,
    change: dict[str, str],
    message: str,
) -> None:
    token = await get_token(http, fake)
    body = subscription_body(fake, receiver.url)
    for key, value in change.items():
        if key in body:
            body[key] = value
        elif key in body["condition"]:
            body["condition"][key] = value
        else:
            body["transport"][key] = value
    status, answer, _ = await helix(
        http, fake, "POST", "/eventsub/subscriptions", token, body=body
    )
    assert status == 400
    assert message in answer["message"]
    assert fake.subscriptions == {}


async def test_a_duplicate_is_409_and_a_fourth_of_one_type_and_condition_429(
    fake: FakeTwitch, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    await subscribe(http, fake, token, receiver.url)
    status, body, _ = await helix(
        http,
        fake,
        "POST",
        "/eventsub/subscriptions",
        token,
        body=subscription_body(fake, receiver.url),
    )
    assert (status, body) == (
        409,
        {"error": "Conflict", "status": 409, "message": "subscription already exists"},
    )
    for n in (2, 3):
        await subscribe(http, fake, token, f"{receiver.url}?n={n}")
    status, _, _ = await helix(
        http,
        fake,
        "POST",
        "/eventsub/subscriptions",
        token,
        body=subscription_body(fake, f"{receiver.url}?n=4"),
    )
    assert status == 429


async def test_a_failed_subscription_does_not_conflict_with_a_new_one(
    fake: FakeTwitch, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    receiver.challenge_mode = "json"
    await subscribe(http, fake, token, receiver.url)
    receiver.challenge_mode = "right"
    sub_id = await subscribe(http, fake, token, receiver.url)
    assert fake.subscriptions[sub_id].status == "enabled"


async def test_listing_is_paginated_filtered_and_deletable(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with FakeTwitch(allow_insecure_callbacks=True, subscriptions_page_size=2) as fake:
        for login in ("quinn", "mika", "ana"):
            fake.add_user(login)
        token = await get_token(http, fake)
        ids = [
            await subscribe(http, fake, token, receiver.url, sub_type, login)
            for login in ("quinn", "mika")
            for sub_type in ("stream.online", "stream.offline")
        ]
        ids.append(await subscribe(http, fake, token, receiver.url, "channel.update", "ana"))

        seen, cursor, pages = [], None, 0
        while True:
            status, body, _ = await helix(
                http,
                fake,
                "GET",
                "/eventsub/subscriptions",
                token,
                params={"after": cursor} if cursor else None,
            )
            assert status == 200
            assert (body["total"], body["total_cost"], body["max_total_cost"]) == (5, 5, 10_000)
            seen += [s["id"] for s in body["data"]]
            pages += 1
            cursor = body["pagination"].get("cursor")
            if not cursor:
                break
        assert (seen, pages) == (ids, 3)  # oldest first

        _, body, _ = await helix(
            http,
            fake,
            "GET",
            "/eventsub/subscriptions",
            token,
            params={"user_id": fake.user("mika").id},
        )
        assert [s["id"] for s in body["data"]] == ids[2:4]
        _, body, _ = await helix(
            http, fake, "GET", "/eventsub/subscriptions", token, params={"type": "channel.update"}
        )
        assert [s["id"] for s in body["data"]] == ids[4:]
        status, _, _ = await helix(
            http,
            fake,
            "GET",
            "/eventsub/subscriptions",
            token,
            params={"type": "stream.online", "status": "enabled"},
        )
        assert status == 400  # the filters are mutually exclusive
        status, _, _ = await helix(
            http, fake, "GET", "/eventsub/subscriptions", token, params={"after": "@@@"}
        )
        assert status == 400

        status, body, _ = await helix(
            http, fake, "DELETE", "/eventsub/subscriptions", token, params={"id": ids[0]}
        )
        assert (status, body) == (204, None)
        assert ids[0] not in fake.subscriptions
        status, _, _ = await helix(
            http, fake, "DELETE", "/eventsub/subscriptions", token, params={"id": ids[0]}
        )
        assert status == 404
        status, _, _ = await helix(http, fake, "DELETE", "/eventsub/subscriptions", token)
        assert status == 400


# -- notifications and revocations ---------------------------------------------------------


async def test_go_live_sends_a_stream_online_signed_with_the_documented_hmac(
    fake: FakeTwitch, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    sub_id = await subscribe(http, fake, token, receiver.url)
    await subscribe(http, fake, token, receiver.url, "stream.online", "mika")  # another channel
    assert await fake.go_live("quinn", title="Ünïcode run", game="Celeste") == [204]

    headers, raw = receiver.received[-1]
    assert headers["Twitch-Eventsub-Message-Type"] == "notification"
    assert headers["Content-Type"] == "application/json"
    assert receiver.verified(headers, raw)
    payload = json.loads(raw)
    assert payload["subscription"]["id"] == sub_id
    assert payload["subscription"]["status"] == "enabled"
    event = payload["event"]
    quinn = fake.user("quinn")
    assert event["broadcaster_user_id"] == quinn.id
    assert event["broadcaster_user_login"] == "quinn"
    assert event["type"] == "live"
    assert set(event) == {
        "id",
        "broadcaster_user_id",
        "broadcaster_user_login",
        "broadcaster_user_name",
        "type",
        "started_at",
    }  # no title, game or thumbnail: those come from Helix
    assert fake.deliveries[-1].message_id == headers["Twitch-Eventsub-Message-Id"]


async def test_forged_and_stale_messages_are_refused_by_a_correct_receiver(
    fake: FakeTwitch, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    await subscribe(http, fake, token, receiver.url, "stream.offline")
    event = {
        "broadcaster_user_id": fake.user("quinn").id,
        "broadcaster_user_login": "quinn",
        "broadcaster_user_name": "Quinn",
    }
    assert await fake.notify("stream.offline", event, forge_signature=True) == [403]
    assert await fake.notify(
        "stream.offline", event, timestamp=fake.timestamp(seconds_ago=601)
    ) == [403]
    assert await fake.notify("stream.offline", event) == [204]


async def test_resend_keeps_the_message_id_and_raises_the_retry_count(
    fake: FakeTwitch, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    await subscribe(http, fake, token, receiver.url)
    await fake.go_live("quinn")
    first = fake.deliveries[-1]
    assert await fake.resend(first) == 204
    again = fake.deliveries[-1]
    assert (again.message_id, again.body, again.retry) == (first.message_id, first.body, 1)
    assert receiver.received[-1][0]["Twitch-Eventsub-Message-Retry"] == "1"
    # A duplicate online as Twitch has been seen to send it: same stream, new message id.
    assert await fake.notify("stream.online", first.payload["event"]) == [204]
    assert fake.deliveries[-1].message_id != first.message_id


async def test_channel_update_v2_fires_while_offline(
    fake: FakeTwitch, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    await subscribe(http, fake, token, receiver.url, "channel.update")
    assert await fake.update_channel("quinn", title="Tomorrow: 100%", game="Celeste") == [204]
    headers, raw = receiver.received[-1]
    assert headers["Twitch-Eventsub-Subscription-Version"] == "2"
    event = json.loads(raw)["event"]
    assert (event["title"], event["category_name"], event["language"]) == (
        "Tomorrow: 100%",
        "Celeste",
        "en",
    )
    assert event["category_id"] == fake.games["Celeste"]


async def test_revocation_sets_the_status_and_stops_events(
    fake: FakeTwitch, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, fake)
    sub_id = await subscribe(http, fake, token, receiver.url)
    assert await fake.revoke(sub_id, "notification_failures_exceeded") == 204
    headers, raw = receiver.received[-1]
    assert headers["Twitch-Eventsub-Message-Type"] == "revocation"
    assert receiver.verified(headers, raw)
    assert json.loads(raw) == {"subscription": fake.subscriptions[sub_id].to_json()}
    assert json.loads(raw)["subscription"]["status"] == "notification_failures_exceeded"
    assert await fake.go_live("quinn") == []
    _, body, _ = await helix(
        http,
        fake,
        "GET",
        "/eventsub/subscriptions",
        token,
        params={"status": "notification_failures_exceeded"},
    )
    assert [s["id"] for s in body["data"]] == [sub_id]
    # A revoked subscription no longer conflicts: the bot can subscribe again.
    assert fake.subscriptions[await subscribe(http, fake, token, receiver.url)].status == "enabled"
    with pytest.raises(ValueError, match="reason must be one of"):
        await fake.revoke(sub_id, "bored")


async def test_an_answer_slower_than_the_delivery_timeout_is_recorded(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with FakeTwitch(allow_insecure_callbacks=True, delivery_timeout=0.2) as fake:
        fake.add_user("quinn")
        token = await get_token(http, fake)
        await subscribe(http, fake, token, receiver.url)
        receiver.delay = 1.0
        assert await fake.go_live("quinn") == [None]
        [late] = fake.late_deliveries(limit=0.2)
        assert late.timed_out
        assert late.message_type == "notification"


def test_timestamps_are_rfc3339_with_go_style_nanoseconds() -> None:
    assert rfc3339_nano(1_573_899_072_634_234_626) == "2019-11-16T10:11:12.634234626Z"
    assert rfc3339_nano(1_573_899_072_500_000_000) == "2019-11-16T10:11:12.5Z"
    assert rfc3339_nano(1_573_899_072_000_000_000) == "2019-11-16T10:11:12Z"
