"""The assembled bot in-process (`bot.app.run`): signed webhooks in, console notices out."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import Running, run
from tests.conftest import make_config

LIVEPEER_SECRET = "lp-secret-4f7a"
FASTPIX_KEY = b"fastpix-signing-key-bytes-0123456"
FASTPIX_SECRET = base64.b64encode(FASTPIX_KEY).decode()


class Bot:
    def __init__(self, running: Running, console: io.StringIO) -> None:
        self.running = running
        self.console = console

    async def post(self, source: str, body: bytes, headers: dict[str, str]) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.running.base_url}/webhook/{source}",
                data=body,
                headers={"Content-Type": "application/json", **headers},
            ) as response,
        ):
            return response.status

    async def wait_for_console(self, text: str, count: int = 1) -> None:
        async with asyncio.timeout(5):
            while self.console.getvalue().count(text) < count:
                await asyncio.sleep(0.01)


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[Bot]:
    config = make_config(
        tmp_path,
        sources=[
            {"name": "lp", "kind": "livepeer", "secret": LIVEPEER_SECRET},
            {"name": "fp", "kind": "fastpix", "secret": FASTPIX_SECRET},
        ],
    )
    console = io.StringIO()
    stop = asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run(config, stop, on_ready=ready.set_result, console_stream=console)
    )
    running = await asyncio.wait_for(ready, 10)
    yield Bot(running, console)
    stop.set()
    await asyncio.wait_for(task, 10)


def blocks(console: str) -> list[str]:
    """The console's notices: it prints each as a block followed by a blank line."""
    return [block for block in console.split("\n\n") if block.strip()]


def livepeer(event: str, event_id: str, name: str, *, at_ms: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "id": event_id,
            "webhookId": "wh",
            "createdAt": at_ms,
            "timestamp": at_ms,
            "event": event,
            "stream": {"id": "stream-1", "kind": "stream", "name": name, "playbackId": "pb123"},
        }
    ).encode()
    digest = hmac.new(LIVEPEER_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Livepeer-Signature": f"t={at_ms},v1={digest}"}


def fastpix(
    kind: str, event_id: str, title: str, category: str, at: str
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "type": kind,
            "id": event_id,
            "object": {"name": "live", "id": "fp-stream"},
            "createdAt": at,
            "data": {
                "streamId": "fp-stream",
                "status": kind.rsplit(".", 1)[1],
                "metadata": {
                    "livestream_name": "Tech Today",
                    "title": title,
                    "category": category,
                },
                "playbackIds": [{"id": "fp-play", "accessPolicy": "public"}],
            },
        }
    ).encode()
    signature = base64.b64encode(hmac.new(FASTPIX_KEY, body, hashlib.sha256).digest())
    return body, {"FastPix-Signature": signature.decode()}


async def test_livepeer_start_and_idle_notify_start_and_end(bot: Bot) -> None:
    now_ms = int(time.time() * 1000)
    body, headers = livepeer("stream.started", "lp-1", "Morning show", at_ms=now_ms - 60_000)
    assert await bot.post("lp", body, headers) == 202
    await bot.wait_for_console("Morning show")
    # Livepeer retries a delivery it thinks failed: same id, same notice, once.
    assert await bot.post("lp", body, headers) == 200
    body, headers = livepeer("stream.idle", "lp-2", "Morning show", at_ms=now_ms)
    assert await bot.post("lp", body, headers) == 202
    await bot.wait_for_console("1m")
    notices = blocks(bot.console.getvalue())
    assert len(notices) == 2  # the retry printed nothing
    assert "Morning show is live" in notices[0]
    assert "https://lvpr.tv/?v=pb123" in notices[0]
    assert "ended" in notices[1] and "1m" in notices[1]


async def test_fastpix_active_updated_idle_notify_start_change_and_end(bot: Bot) -> None:
    steps = [
        ("video.live_stream.active", "fp-1", "Building a bot", "IRL", "2026-03-11T05:00:00Z"),
        ("video.live_stream.updated", "fp-2", "Shipping the bot", "IRL", "2026-03-11T05:30:00Z"),
        ("video.live_stream.idle", "fp-3", "Shipping the bot", "IRL", "2026-03-11T06:15:00Z"),
    ]
    for kind, event_id, title, category, at in steps:
        assert await bot.post("fp", *fastpix(kind, event_id, title, category, at)) == 202
    await bot.wait_for_console("1h 15m")
    start, change, end = blocks(bot.console.getvalue())
    assert "Building a bot" in start and "IRL" in start
    assert "Building a bot" in change and "Shipping the bot" in change
    assert "Shipping the bot" in end and "1h 15m" in end


@pytest.mark.parametrize(
    ("source", "make_headers"),
    [
        ("lp", lambda body: {}),
        ("lp", lambda body: {"Livepeer-Signature": "t=1,v1=00"}),
        ("lp", lambda body: {"Livepeer-Signature": "garbage"}),
        ("fp", lambda body: {}),
        (
            "fp",
            lambda body: {
                "FastPix-Signature": base64.b64encode(
                    hmac.new(b"wrong", body, hashlib.sha256).digest()
                ).decode()
            },
        ),
    ],
)
async def test_bad_signatures_are_401_and_store_nothing(
    bot: Bot, source: str, make_headers: Any
) -> None:
    body, _ = livepeer("stream.started", "x", "Nope", at_ms=int(time.time() * 1000))
    assert await bot.post(source, body, make_headers(body)) == 401
    assert await bot.running.store.count_events() == 0


async def test_tampered_body_is_401(bot: Bot) -> None:
    body, headers = livepeer("stream.started", "x", "Real", at_ms=int(time.time() * 1000))
    assert await bot.post("lp", body.replace(b"Real", b"Fake"), headers) == 401
    assert await bot.running.store.count_events() == 0


async def test_expired_livepeer_signature_is_401(bot: Bot) -> None:
    old = int(time.time() * 1000) - 10 * 60_000
    body, headers = livepeer("stream.started", "x", "Old", at_ms=old)
    assert await bot.post("lp", body, headers) == 401
    assert await bot.running.store.count_events() == 0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_the_webhooks_and_the_deliveries_they_caused(bot: Bot) -> None:
    body, headers = livepeer(
        "stream.started", "lp-m", "Metrics show", at_ms=int(time.time() * 1000)
    )
    assert await bot.post("lp", body, headers) == 202
    assert await bot.post("lp", body, headers) == 200
    assert await bot.post("lp", body, {}) == 401
    await bot.wait_for_console("Metrics show")
    async with asyncio.timeout(5):
        while (await bot.running.store.outbox_counts()).by_state.get("sent") != 1:
            await asyncio.sleep(0.01)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{bot.running.base_url}/metrics") as response,
    ):
        assert response.status == 200
        page = samples(await response.text())

    def webhooks(outcome: str, kind: str) -> float:
        key = (("kind", kind), ("outcome", outcome), ("source", "lp"))
        return page.get(("streambot_webhooks_total", key), 0.0)

    assert webhooks("accepted", "live_start") == 1
    assert webhooks("duplicate", "live_start") == 1
    assert webhooks("unauthorized", "unknown") == 1
    sent = (("action", "post"), ("outcome", "sent"), ("sink", "console"))
    assert page[("streambot_deliveries_total", sent)] == 1
    assert page[("streambot_delivery_seconds_count", (("sink", "console"),))] == 1
    assert page[("streambot_outbox_deliveries", (("state", "sent"),))] == 1
    assert page[("streambot_sink_up", (("sink", "console"),))] == 1


async def test_healthz_says_each_sinks_targets_were_checked(bot: Bot) -> None:
    async def targets() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{bot.running.base_url}/healthz") as response,
        ):
            assert response.status == 200
            report = await response.json()
            targets: dict[str, Any] = report["targets"]
            return targets

    async with asyncio.timeout(5):
        while (found := await targets())["console"]["checked"] is False:
            await asyncio.sleep(0.02)
    # The console takes everything: checked at start, nothing wrong.
    assert found["console"]["problems"] == {}
    assert found["console"]["checked"].endswith("+00:00")


async def test_a_reload_checks_every_target_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.preflight")
    config = make_config(tmp_path)
    stop, reload = asyncio.Event(), asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run(
            config,
            stop,
            on_ready=ready.set_result,
            console_stream=io.StringIO(),
            reload=reload,
            load_config=lambda: config,
        )
    )

    def checks() -> int:
        return caplog.text.count("preflight: console: 1 target(s) checked, 0 problem(s)")

    try:
        await asyncio.wait_for(ready, 10)
        async with asyncio.timeout(5):
            while checks() < 1:
                await asyncio.sleep(0.02)
        reload.set()  # what SIGHUP does
        async with asyncio.timeout(5):
            while checks() < 2:
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
