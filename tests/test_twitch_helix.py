"""The Twitch API client against the fake Twitch: tokens, batches, pages, and each failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.sources.twitch.helix import CredentialsRefused, Helix, HelixError
from tests.fakes.twitch_api import FakeTwitch

CALLBACK = "https://bot.example.com/webhook/twitch"
SECRET = "eventsub-helix-secret-12"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwitch]:
    async with FakeTwitch() as twitch:
        twitch.add_user("quinn", display_name="Quinn", title="Chill", game="Celeste")
        twitch.add_user("mika", display_name="Mika")
        yield twitch


@pytest.fixture
async def helix(fake: FakeTwitch) -> AsyncIterator[Helix]:
    client = client_for(fake)
    yield client
    await client.close()


def client_for(fake: FakeTwitch, **options: object) -> Helix:
    return Helix(
        client_id=fake.client_id,
        client_secret=str(options.pop("client_secret", fake.client_secret)),
        api_url=fake.api_url,
        auth_url=fake.auth_url,
        **options,  # type: ignore[arg-type]
    )


async def test_one_token_serves_many_calls_and_a_dead_one_is_replaced(
    fake: FakeTwitch, helix: Helix
) -> None:
    await asyncio.gather(helix.users(["quinn"]), helix.users(["mika"]), helix.channels(["1"]))
    assert len(fake.requests_to("/oauth2/token")) == 1
    fake.expire_tokens()
    users = await helix.users(["quinn"])
    assert users["quinn"].display_name == "Quinn"
    assert len(fake.requests_to("/oauth2/token")) == 2


async def test_refused_credentials_say_so_without_the_secret(fake: FakeTwitch) -> None:
    client = client_for(fake, client_secret="wrong-client-secret")
    try:
        with pytest.raises(CredentialsRefused) as info:
            await client.users(["quinn"])
    finally:
        await client.close()
    assert info.value.message == "invalid client secret"
    assert info.value.retryable is False
    assert "wrong-client-secret" not in str(info.value) + repr(client)


async def test_users_go_in_batches_of_100_and_unknown_logins_are_absent(
    fake: FakeTwitch, helix: Helix
) -> None:
    for number in range(150):
        fake.add_user(f"viewer{number}")
    wanted = [f"Viewer{number}" for number in range(150)] + ["nobody_at_all"]
    users = await helix.users(wanted)
    assert len(users) == 150 and "viewer149" in users and "nobody_at_all" not in users
    calls = fake.requests_to("/helix/users")
    assert [len(call.query["login"]) for call in calls] == [100, 51]


async def test_streams_and_channels_keyed_by_user_id(fake: FakeTwitch, helix: Helix) -> None:
    quinn = fake.user("quinn")
    await fake.go_live("quinn", title="Any%")
    streams = await helix.streams([quinn.id, fake.user("mika").id])
    assert list(streams) == [quinn.id]
    stream = streams[quinn.id]
    assert stream.title == "Any%" and stream.game_name == "Celeste"
    assert stream.thumbnail_url is not None and "{width}x{height}" in stream.thumbnail_url
    assert stream.started_at is not None
    channels = await helix.channels([quinn.id])
    assert channels[quinn.id].title == "Any%"


async def test_subscriptions_are_listed_across_pages(fake: FakeTwitch, helix: Helix) -> None:
    fake.subscriptions_page_size = 2
    made = []
    for login in ("quinn", "mika"):
        for sub_type, version in (("stream.online", "1"), ("stream.offline", "1")):
            made.append(
                await helix.create_subscription(
                    type=sub_type,
                    version=version,
                    broadcaster_user_id=fake.user(login).id,
                    callback=CALLBACK,
                    secret=SECRET,
                )
            )
    listed = await helix.subscriptions()
    assert [s.id for s in listed] == [s.id for s in made if s is not None]
    assert len(fake.requests_to("/helix/eventsub/subscriptions", "GET")) == 2


async def test_an_existing_subscription_is_none_and_delete_says_if_it_was_there(
    fake: FakeTwitch, helix: Helix
) -> None:
    args = {
        "type": "stream.online",
        "version": "1",
        "broadcaster_user_id": fake.user("quinn").id,
        "callback": CALLBACK,
        "secret": SECRET,
    }
    created = await helix.create_subscription(**args)
    assert created is not None and created.status == "webhook_callback_verification_pending"
    fake.subscriptions[created.id].status = "enabled"  # as if its challenge was answered
    assert await helix.create_subscription(**args) is None  # 409
    assert await helix.delete_subscription(created.id) is True
    assert await helix.delete_subscription(created.id) is False


async def test_a_rate_limit_is_waited_out(fake: FakeTwitch, helix: Helix) -> None:
    fake.rate_limit_next(1, reset_in=1)
    users = await helix.users(["quinn"])
    assert "quinn" in users
    assert [r.status for r in fake.requests_to("/helix/users")] == [429, 200]


async def test_a_rate_limit_too_long_to_wait_gives_up_at_once(fake: FakeTwitch) -> None:
    client = client_for(fake, max_rate_limit_wait=0.5)
    fake.rate_limit_next(1, reset_in=30)
    try:
        async with asyncio.timeout(2):
            with pytest.raises(HelixError) as info:
                await client.users(["quinn"])
    finally:
        await client.close()
    assert (info.value.status, info.value.retryable) == (429, True)


async def test_server_errors_are_retryable_and_client_errors_are_not(
    fake: FakeTwitch, helix: Helix
) -> None:
    fake.fail_next("/users", status=503)
    with pytest.raises(HelixError) as info:
        await helix.users(["quinn"])
    assert (info.value.status, info.value.retryable) == (503, True)
    fake.fail_next("/users", status=400, message="Malformed query params")
    with pytest.raises(HelixError) as info:
        await helix.users(["quinn"])
    assert info.value.retryable is False
    assert "Malformed query params" in info.value.message


async def _server(handler: web.RequestHandler) -> tuple[web.AppRunner, str]:  # type: ignore[type-arg]
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_no_answer_in_time_is_a_retryable_error() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    runner, url = await _server(slow)
    client = Helix(client_id="c", client_secret="s", api_url=url, auth_url=url, timeout=0.3)
    try:
        async with asyncio.timeout(3):
            with pytest.raises(HelixError) as info:
                await client.users(["quinn"])
        assert info.value.retryable is True
    finally:
        await client.close()
        await runner.cleanup()


async def test_an_answer_of_the_wrong_shape_is_an_error_not_a_crash() -> None:
    async def odd(request: web.Request) -> web.Response:
        if request.path.endswith("/token"):
            return web.json_response({"access_token": "t", "expires_in": 3600})
        return web.json_response({"data": [{"login": "quinn"}]})  # no id

    runner, url = await _server(odd)
    client = Helix(client_id="c", client_secret="s", api_url=url, auth_url=url)
    try:
        with pytest.raises(HelixError) as info:
            await client.users(["quinn"])
        assert "unexpected answer" in info.value.message
    finally:
        await client.close()
        await runner.cleanup()
