"""The Telegram fake's webhooks: setWebhook's checks with Telegram's texts, getUpdates
refused while one is set, and updates POSTed to local HTTP servers standing behind the
public https URL (the fake plays the reverse proxy), resent until a 2xx.

Everything goes over real HTTP: aiohttp calls the fake's Bot API, and the fake posts to
aiohttp servers started here. No mocks."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from telegram import Bot

from tests.fakes.telegram_api import SECRET_TOKEN_HEADER, FakeTelegram, WebhookPost

PUBLIC = "https://bot.example"
HOOK = f"{PUBLIC}/telegram/abc?via=hook"
SECRET = "s3cret_TOKEN-1"
USER = 1001
OTHER = 1002
GROUP = -100777


@dataclass
class Received:
    at: float  # time.monotonic()
    path_qs: str
    headers: dict[str, str]
    update: dict[str, Any]


class Backend:
    """A plain-HTTP server in the place of the bot behind its proxy: records each POST and
    answers ``status``, or what ``answer`` says for the update; holds an answer while
    ``hold`` is set and not yet released."""

    def __init__(self) -> None:
        self.status = 200
        self.answer: Callable[[dict[str, Any]], int] | None = None
        self.reply_headers: dict[str, str] = {}
        self.received: list[Received] = []
        self.active = 0
        self.most_active = 0
        self.hold: asyncio.Event | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def ids(self) -> list[int]:
        return [r.update["update_id"] for r in self.received]

    async def wait_for(self, count: int, timeout: float = 5) -> None:
        """Until ``count`` POSTs have arrived (a hang fails fast)."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                await asyncio.sleep(0.01)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            received = Received(
                time.monotonic(), request.path_qs, dict(request.headers), json.loads(body)
            )
            self.received.append(received)
            if self.hold is not None:
                await self.hold.wait()
            update = self.received[-1].update
            status = self.answer(update) if self.answer else self.status
            return web.Response(status=status, headers=self.reply_headers)
        finally:
            self.active -= 1


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    # No setWebhook interval (tests set several in a row) and quick resends.
    async with FakeTelegram(
        set_webhook_interval=0, webhook_retry_delay=0.1, webhook_retry_cap=0.4
    ) as tg:
        tg.add_chat(USER, "private", first_name="Alice")
        tg.add_chat(OTHER, "private", first_name="Bob")
        tg.add_chat(GROUP, "supergroup", title="Streams")
        yield tg


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    server = Backend()
    await server.start()
    yield server
    if server.hold is not None:
        server.hold.set()
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as client:
        yield client


async def api(
    session: aiohttp.ClientSession, fake: FakeTelegram, method: str, **params: Any
) -> dict[str, Any]:
    """Call the fake's Bot API with a JSON body; the reply, its status checked against
    its error_code."""
    async with session.post(f"{fake.api_url}/bot{fake.token}/{method}", json=params) as reply:
        body: dict[str, Any] = await reply.json()
        assert reply.status == body.get("error_code", 200), body
        return body


async def info(session: aiohttp.ClientSession, fake: FakeTelegram) -> dict[str, Any]:
    body = await api(session, fake, "getWebhookInfo")
    result: dict[str, Any] = body["result"]
    return result


def ok_posts(fake: FakeTelegram) -> list[WebhookPost]:
    return [p for p in fake.webhook_posts if p.error is None]


# ---- setWebhook and getWebhookInfo -----------------------------------------------------


@pytest.mark.parametrize(
    ("params", "description"),
    [
        (
            {"url": "http://bot.example/telegram/abc"},
            "Bad Request: bad webhook: An HTTPS URL must be provided for webhook",
        ),
        (
            {"url": "https://bot.example:8080/telegram/abc"},
            "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443",
        ),
        (
            {"url": HOOK, "secret_token": "not allowed!"},
            "Bad Request: secret token contains unallowed characters",
        ),
        (
            {"url": HOOK, "secret_token": "a" * 257},
            "Bad Request: secret token is too long",
        ),
        (
            # The URL is read before the secret: a bad one is named first.
            {"url": "ftp://bot.example/telegram", "secret_token": "a" * 257},
            "Bad Request: invalid webhook URL specified",
        ),
        (
            {"url": "https://bot.example:0/telegram"},
            "Bad Request: invalid webhook URL specified",
        ),
        (
            {"url": "https://127.0.0.1/telegram"},
            "Bad Request: bad webhook: IP address 127.0.0.1 is reserved",
        ),
        (
            {"url": HOOK, "ip_address": "192.168.1.20"},
            "Bad Request: bad webhook: IP address 192.168.1.20 is reserved",
        ),
        (
            {"url": HOOK, "ip_address": "::1"},
            "Bad Request: bad webhook: IPv6-only addresses are not allowed",
        ),
    ],
)
async def test_set_webhook_refuses_what_telegram_refuses(
    fake: FakeTelegram,
    session: aiohttp.ClientSession,
    params: dict[str, Any],
    description: str,
) -> None:
    refused = await api(session, fake, "setWebhook", **params)
    assert refused == {"ok": False, "error_code": 400, "description": description}
    assert (await info(session, fake))["url"] == ""
    polled = await api(session, fake, "getUpdates", timeout=0)
    assert polled == {"ok": True, "result": []}, "no webhook is left set"


async def test_a_refused_set_webhook_removes_the_webhook_that_was_set(
    fake: FakeTelegram, session: aiohttp.ClientSession
) -> None:
    await api(session, fake, "setWebhook", url=HOOK)
    refused = await api(session, fake, "setWebhook", url="http://bot.example/other")
    assert refused["error_code"] == 400
    # Client.cpp closes the old webhook before it checks the new one.
    assert (await info(session, fake))["url"] == ""


async def test_set_webhook_answers_like_telegram_and_info_reports_it(
    fake: FakeTelegram, session: aiohttp.ClientSession
) -> None:
    longest = "Zz9_-" * 51 + "x"  # 256 characters, the most Telegram takes
    set_ = await api(
        session,
        fake,
        "setWebhook",
        url=HOOK,
        secret_token=longest,
        allowed_updates=["message", "callback_query"],
        max_connections=1000,
    )
    assert set_ == {"ok": True, "result": True, "description": "Webhook was set"}
    fake.push_message(USER, "waiting")
    await fake.wait_for_webhook_post()
    assert await info(session, fake) == {
        "url": HOOK,
        "has_custom_certificate": False,
        "pending_update_count": 1,  # nothing is routed to bot.example yet
        "last_error_date": pytest.approx(time.time(), abs=5),
        "last_error_message": "Connection refused",
        "max_connections": 100,  # clamped, as get_integer_arg clamps
        "ip_address": "<unknown>",
        "allowed_updates": ["message", "callback_query"],
    }

    again = await api(
        session,
        fake,
        "setWebhook",
        url=HOOK,
        secret_token=longest,
        allowed_updates=["message"],
        max_connections=100,
    )
    assert again == {"ok": True, "result": True, "description": "Webhook is already set"}
    assert (await info(session, fake))["allowed_updates"] == ["message"]

    deleted = await api(session, fake, "deleteWebhook")
    assert deleted == {"ok": True, "result": True, "description": "Webhook was deleted"}
    gone = await info(session, fake)
    assert gone == {
        "url": "",
        "has_custom_certificate": False,
        "pending_update_count": 1,
        "allowed_updates": ["message"],
    }
    again_deleted = await api(session, fake, "deleteWebhook")
    assert again_deleted["description"] == "Webhook is already deleted"


async def test_set_webhook_is_limited_to_one_a_second_even_when_nothing_changes(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeTelegram() as fake:
        assert (await api(session, fake, "setWebhook", url=HOOK))["ok"]
        limited = await api(session, fake, "setWebhook", url=HOOK)
        assert limited == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1},
        }
        # Deleting is not limited, and neither is setting after the second has passed.
        assert (await api(session, fake, "deleteWebhook"))["ok"]
        await asyncio.sleep(1.05)
        assert (await api(session, fake, "setWebhook", url=HOOK))["ok"]


async def test_python_telegram_bot_reads_the_webhook_info(fake: FakeTelegram) -> None:
    async with Bot(fake.token, base_url=f"{fake.api_url}/bot") as bot:
        assert await bot.set_webhook(HOOK, secret_token=SECRET, allowed_updates=["message"])
        webhook = await bot.get_webhook_info()
        assert webhook.url == HOOK
        assert webhook.max_connections == 40
        assert webhook.allowed_updates == ("message",)
        fake.push_message(USER, "dropped")
        assert (await bot.get_webhook_info()).pending_update_count == 1
        assert await bot.delete_webhook(drop_pending_updates=True)
        after = await bot.get_webhook_info()
        assert (after.url, after.pending_update_count) == ("", 0)


# ---- getUpdates while a webhook is set -----------------------------------------------------


async def test_get_updates_is_a_conflict_while_a_webhook_is_set(
    fake: FakeTelegram, session: aiohttp.ClientSession
) -> None:
    poll = asyncio.create_task(api(session, fake, "getUpdates", timeout=10))
    await fake.wait_for_call("getUpdates", answered=False)
    await api(session, fake, "setWebhook", url=HOOK)
    ended = await asyncio.wait_for(poll, 2)
    assert ended == {
        "ok": False,
        "error_code": 409,
        "description": "Conflict: terminated by setWebhook request",
    }

    refused = await api(session, fake, "getUpdates", timeout=0)
    assert refused == {
        "ok": False,
        "error_code": 409,
        "description": "Conflict: can't use getUpdates method while webhook is active; "
        "use deleteWebhook to delete the webhook first",
    }
    await api(session, fake, "deleteWebhook")
    assert (await api(session, fake, "getUpdates", timeout=0))["ok"]


# ---- delivery ------------------------------------------------------------------------


async def test_updates_are_posted_with_the_secret_in_order_and_filtered(
    fake: FakeTelegram, session: aiohttp.ClientSession, backend: Backend
) -> None:
    fake.route_webhooks(PUBLIC, [backend.url])
    before = fake.push_message(USER, "sent before the webhook")
    first = fake.updates[-1]["update_id"]
    await api(
        session, fake, "setWebhook", url=HOOK, secret_token=SECRET, allowed_updates=["message"]
    )
    fake.push_message(USER, "two")
    fake.push_update({"edited_message": dict(fake.updates[-1]["message"], edit_date=1)})
    fake.push_message(USER, "three")
    last = fake.updates[-1]["update_id"]
    await fake.wait_for_webhook_post(lambda p: p.update_id == last and p.error is None)

    assert backend.ids() == [first, first + 1, last], "in order, edited_message not asked for"
    assert [r.update["message"]["text"] for r in backend.received] == [
        "sent before the webhook",
        "two",
        "three",
    ]
    assert backend.received[0].update["message"]["message_id"] == before
    assert backend.most_active == 1, "a chat's updates go one at a time"
    for received in backend.received:
        assert received.path_qs == "/telegram/abc?via=hook"
        assert received.headers[SECRET_TOKEN_HEADER] == SECRET
        assert received.headers["Content-Type"] == "application/json"
        assert received.headers["Host"] == "bot.example"
        assert "User-Agent" not in received.headers
    assert list(backend.received[0].update) == ["update_id", "message"]
    assert (await info(session, fake))["pending_update_count"] == 0
    assert all(p.url == f"{backend.url}/telegram/abc?via=hook" for p in fake.webhook_posts)


async def test_no_secret_header_without_a_secret_token(
    fake: FakeTelegram, session: aiohttp.ClientSession, backend: Backend
) -> None:
    await api(session, fake, "setWebhook", url=f"{PUBLIC}:8443/hook")
    fake.route_webhooks(f"{PUBLIC}:8443", [backend.url])
    fake.push_message(USER, "hi")
    await fake.wait_for_webhook_post(lambda p: p.error is None)
    assert SECRET_TOKEN_HEADER not in backend.received[0].headers
    assert backend.received[0].headers["Host"] == "bot.example:8443"


async def test_a_401_is_resent_until_a_200_and_shown_in_webhook_info(
    fake: FakeTelegram, session: aiohttp.ClientSession, backend: Backend
) -> None:
    backend.status = 401
    fake.route_webhooks(PUBLIC, [backend.url])
    await api(session, fake, "setWebhook", url=HOOK, secret_token=SECRET)
    update_id = fake.push_update({"message": {"message_id": 1, "chat": {"id": USER}}})
    await fake.wait_for_webhook_post(lambda p: p.status == 401, start=1)

    meanwhile = await info(session, fake)
    assert meanwhile["pending_update_count"] == 1
    assert meanwhile["last_error_message"] == "Wrong response from the webhook: 401 Unauthorized"
    assert meanwhile["last_error_date"] == pytest.approx(time.time(), abs=5)

    backend.status = 200
    delivered = await fake.wait_for_webhook_post(lambda p: p.status == 200)
    assert delivered.update_id == update_id
    failed = fake.webhook_posts[:-1]
    assert len(failed) >= 2
    assert all(p.status == 401 for p in failed)
    assert failed[0].error == "Wrong response from the webhook: 401 Unauthorized"
    assert set(backend.ids()) == {update_id}, "the same update, resent"
    after = await info(session, fake)
    assert after["pending_update_count"] == 0
    # Telegram keeps the last error after later successes, until the webhook changes.
    assert after["last_error_message"] == "Wrong response from the webhook: 401 Unauthorized"
    await asyncio.sleep(0.3)
    assert len(fake.webhook_posts) == len(failed) + 1, "nothing more once delivered"


async def test_resends_come_at_once_then_after_doubling_delays_up_to_the_cap(
    session: aiohttp.ClientSession, backend: Backend
) -> None:
    backend.status = 502
    async with FakeTelegram(webhook_retry_delay=0.5, webhook_retry_cap=1.0) as fake:
        fake.route_webhooks(PUBLIC, [backend.url])
        await api(session, fake, "setWebhook", url=HOOK)
        fake.push_update({"message": {"message_id": 1, "chat": {"id": USER}}})
        await backend.wait_for(5, timeout=10)
        times = [r.at for r in backend.received]
    # WebhookActor::on_update_error: the first resend at once, then 0.5 s, 1 s, 1 s (capped).
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[0] < 0.4
    assert gaps[1] >= 0.49
    assert gaps[2] >= 0.99
    assert 0.99 <= gaps[3] < 1.7, "capped (doubled it would be 2 s)"
    assert fake.webhook_posts[0].error == "Wrong response from the webhook: 502 Bad Gateway"


async def test_a_retry_after_header_delays_even_the_first_resend(
    fake: FakeTelegram, session: aiohttp.ClientSession, backend: Backend
) -> None:
    backend.answer = lambda update: 503 if len(backend.received) == 1 else 200
    backend.reply_headers = {"Retry-After": "1"}
    fake.route_webhooks(PUBLIC, [backend.url])
    await api(session, fake, "setWebhook", url=HOOK)
    fake.push_message(USER, "later")
    await fake.wait_for_webhook_post(lambda p: p.ok, timeout=5)
    first, second = (r.at for r in backend.received)
    assert second - first >= 0.99
    assert [p.status for p in fake.webhook_posts] == [503, 200]


async def test_a_redirect_is_a_wrong_response_not_followed(
    fake: FakeTelegram, session: aiohttp.ClientSession, backend: Backend
) -> None:
    backend.answer = lambda update: 307 if len(backend.received) == 1 else 200
    backend.reply_headers = {"Location": f"{backend.url}/moved"}
    fake.route_webhooks(PUBLIC, [backend.url])
    await api(session, fake, "setWebhook", url=HOOK)
    fake.push_message(USER, "hi")
    await fake.wait_for_webhook_post(lambda p: p.ok)
    assert [(p.status, p.error) for p in fake.webhook_posts] == [
        (307, "Wrong response from the webhook: 307 Temporary Redirect"),
        (200, None),
    ]
    assert [r.path_qs for r in backend.received] == ["/telegram/abc?via=hook"] * 2


async def test_a_failing_chat_holds_back_its_own_updates_but_not_another_chats(
    fake: FakeTelegram, session: aiohttp.ClientSession, backend: Backend
) -> None:
    failing = {USER}
    backend.answer = lambda update: 500 if update["message"]["chat"]["id"] in failing else 200
    fake.route_webhooks(PUBLIC, [backend.url])
    await api(session, fake, "setWebhook", url=HOOK)
    fake.push_message(USER, "first in a failing chat")
    fake.push_message(USER, "second in it")
    fake.push_message(OTHER, "another chat")
    stuck, held, other = (u["update_id"] for u in fake.updates)
    await fake.wait_for_webhook_post(lambda p: p.update_id == other and p.ok)
    await fake.wait_for_webhook_post(lambda p: p.update_id == stuck, start=3)
    assert held not in backend.ids(), "a chat's second update waits for its first"
    assert all(p.status == 500 for p in fake.webhook_posts if p.update_id == stuck)

    failing.clear()
    await fake.wait_for_webhook_post(lambda p: p.update_id == held and p.ok)
    assert [p.update_id for p in fake.webhook_posts if p.ok] == [other, stuck, held]
    assert (await info(session, fake))["last_error_message"] == (
        "Wrong response from the webhook: 500 Internal Server Error"
    )


async def test_round_robin_over_two_backends_and_one_that_goes_away(
    fake: FakeTelegram, session: aiohttp.ClientSession, backend: Backend
) -> None:
    second = Backend()
    await second.start()
    try:
        routes = fake.route_webhooks(PUBLIC, [backend.url, second.url])
        assert fake.webhook_routes["https://bot.example:443"] is routes
        await api(session, fake, "setWebhook", url=HOOK)
        for text in ("1", "2", "3", "4"):
            fake.push_message(USER, text)
        ids = [u["update_id"] for u in fake.updates]
        await fake.wait_for_webhook_post(lambda p: p.update_id == ids[-1] and p.ok)
        assert backend.ids() == [ids[0], ids[2]]
        assert second.ids() == [ids[1], ids[3]]
    finally:
        await second.close()

    # Turn by turn: the first backend, the closed one, then (resent) the first again.
    mark = len(fake.webhook_posts)
    fake.push_message(USER, "5")
    fake.push_message(USER, "6")
    five, six = (u["update_id"] for u in fake.updates[-2:])
    await fake.wait_for_webhook_post(lambda p: p.update_id == six and p.ok, start=mark)
    path = "/telegram/abc?via=hook"
    assert [(p.update_id, p.url, p.status, p.error) for p in fake.webhook_posts[mark:]] == [
        (five, f"{backend.url}{path}", 200, None),
        (six, f"{second.url}{path}", None, "Connection refused"),
        (six, f"{backend.url}{path}", 200, None),
    ]
    assert (await info(session, fake))["last_error_message"] == "Connection refused"

    # A backend restarted on a new port: change the live list.
    third = Backend()
    await third.start()
    try:
        routes[:] = [third.url]
        mark = len(fake.webhook_posts)
        fake.push_message(USER, "7")
        await fake.wait_for_webhook_post(lambda p: p.ok, start=mark)
        assert [r.update["message"]["text"] for r in third.received] == ["7"]
    finally:
        await third.close()


async def test_a_url_no_route_covers_is_unreachable(
    fake: FakeTelegram, session: aiohttp.ClientSession, backend: Backend
) -> None:
    fake.route_webhooks(PUBLIC, [backend.url])
    await api(session, fake, "setWebhook", url="https://elsewhere.example/telegram")
    fake.push_message(USER, "lost")
    post = await fake.wait_for_webhook_post()
    assert (post.url, post.status, post.error) == (
        "https://elsewhere.example/telegram",
        None,
        "Connection refused",
    )
    assert backend.received == []
    assert (await info(session, fake))["pending_update_count"] == 1


async def test_deleting_the_webhook_returns_what_it_did_not_post_to_get_updates(
    fake: FakeTelegram, session: aiohttp.ClientSession, backend: Backend
) -> None:
    backend.status = 503
    fake.route_webhooks(PUBLIC, [backend.url])
    await api(session, fake, "setWebhook", url=HOOK)
    fake.push_message(USER, "one")
    fake.push_message(GROUP, "two", from_user_id=USER)
    await fake.wait_for_webhook_post(lambda p: p.status == 503)
    deleted = await api(session, fake, "deleteWebhook")
    assert deleted["description"] == "Webhook was deleted"
    posted = len(fake.webhook_posts)

    polled = await api(session, fake, "getUpdates", timeout=0)
    assert [u["message"]["text"] for u in polled["result"]] == ["one", "two"]
    assert [u["update_id"] for u in polled["result"]] == [u["update_id"] for u in fake.updates]
    await asyncio.sleep(0.5)  # longer than any resend delay here
    assert len(fake.webhook_posts) == posted, "nothing is posted once the webhook is gone"
    assert await info(session, fake) == {
        "url": "",
        "has_custom_certificate": False,
        "pending_update_count": 2,
    }


async def test_drop_pending_updates_drops_what_was_waiting(
    fake: FakeTelegram, session: aiohttp.ClientSession, backend: Backend
) -> None:
    fake.route_webhooks(PUBLIC, [backend.url])
    fake.push_message(USER, "old")
    await api(session, fake, "setWebhook", url=HOOK, drop_pending_updates=True)
    fake.push_message(USER, "new")
    await fake.wait_for_webhook_post(lambda p: p.ok)
    assert [r.update["message"]["text"] for r in backend.received] == ["new"]


async def test_a_post_under_way_is_cut_short_by_delete_and_by_close(
    session: aiohttp.ClientSession, backend: Backend
) -> None:
    backend.hold = asyncio.Event()
    async with FakeTelegram(set_webhook_interval=0, webhook_timeout=30) as fake:
        fake.add_chat(USER, "private")
        fake.route_webhooks(PUBLIC, [backend.url])
        await api(session, fake, "setWebhook", url=HOOK)
        fake.push_message(USER, "held")
        await backend.wait_for(1)
        started = time.monotonic()
        await api(session, fake, "deleteWebhook")
        assert time.monotonic() - started < 1, "deleteWebhook does not wait for the POST"
        assert (await info(session, fake))["pending_update_count"] == 1
        assert fake.webhook_posts == []

        await api(session, fake, "setWebhook", url=HOOK)
        await backend.wait_for(2)
        started = time.monotonic()
    assert time.monotonic() - started < 2, "close() does not wait for the POST"
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("fake-telegram")]
    assert leftovers == []
