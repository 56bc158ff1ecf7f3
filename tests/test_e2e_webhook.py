"""kind = "webhook" through `python -m bot run`: Owncast and blrec start, retitle, end;
a wrong ?key= is refused with 401 and stores nothing; a custom sender that signs, through
a restart."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import aiohttp

from bot.sources.presets import blrec, owncast
from tests.test_cli import running_bot

KEY = "e2e-webhook-key-41c7"

CONFIG = f"""
[server]
host = "127.0.0.1"
port = 0

[storage]
path = "state/bot.sqlite3"

[behaviour]
end_grace = "0s"

[[sources]]
name = "owncast"
kind = "webhook"
preset = "owncast"
secret = "{KEY}"
channel = "aurora"
server_url = "https://live.example.com"

[[sources]]
name = "blrec"
kind = "webhook"
preset = "blrec"
secret = "{KEY}"

[[routes]]
match = ["owncast/*", "bilibili/*"]
"""


async def post(url: str, name: str, payload: Any, key: str = KEY) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/webhook/{name}?key={key}", json=payload) as response,
    ):
        return response.status, await response.json()


async def test_owncast_and_blrec_start_change_and_end(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(CONFIG)
    started = dict(owncast.SAMPLES["STREAM_STARTED"])
    async with running_bot(config) as bot:
        status, body = await post(bot.url, "owncast", started, key="not-the-key")
        assert (status, set(body)) == (401, {"error"})
        # Nothing was stored: the same event with the right key is new, not a duplicate.
        status, body = await post(bot.url, "owncast", started)
        assert (status, body["status"]) == (202, "accepted"), body
        await bot.wait_for("stdout", r"Late-night synth jam")
        assert (await post(bot.url, "owncast", started))[1]["status"] == "duplicate"
        retitled = dict(owncast.SAMPLES["STREAM_TITLE_UPDATED"])
        assert (await post(bot.url, "owncast", retitled))[0] == 202
        await bot.wait_for("stdout", r"Modular patching Q&A")
        assert (await post(bot.url, "owncast", dict(owncast.SAMPLES["STREAM_STOPPED"])))[0] == 202
        await bot.wait_for("stdout", r"2h 13m")

        began = copy.deepcopy(dict(blrec.SAMPLES["LiveBeganEvent"]))
        assert (await post(bot.url, "blrec", began))[0] == 202
        await bot.wait_for("stdout", r"深夜合成器即兴")
        # blrec retries a delivery with the same body: one card.
        assert (await post(bot.url, "blrec", began))[1]["status"] == "duplicate"
        change = dict(blrec.SAMPLES["RoomChangeEvent"])
        assert (await post(bot.url, "blrec", change))[0] == 202
        await bot.wait_for("stdout", r"模块合成器答疑")
        assert (await post(bot.url, "blrec", dict(blrec.SAMPLES["LiveEndedEvent"])))[0] == 202
        await bot.wait_for("stdout", r"2h 13m[\s\S]*2h 13m")
        assert await bot.stop() == 0
    assert bot.stdout.count("Late-night synth jam") >= 1
    assert "https://live.bilibili.com/21452505" in bot.stdout
    assert KEY not in bot.stderr


CUSTOM_SECRET = "custom-hmac-secret-9a1e"
CUSTOM = f"""
[server]
host = "127.0.0.1"
port = 0

[storage]
path = "state/bot.sqlite3"

[behaviour]
end_grace = "0s"

[[sources]]
name = "myrecorder"
kind = "webhook"
preset = "custom"
secret = "{CUSTOM_SECRET}"
signature_header = "X-Recorder-Signature"
platform_value = "twitch"
[sources.fields]
event_id = "id"
kind = "event"
channel = "data.user.login"
display_name = "data.user.name"
title = "data.title"
category = "data.game"
started_at = "data.started"
[sources.kinds]
"stream.up" = "live_start"
"stream.down" = "live_end"
"stream.changed" = "stream_update"

[[routes]]
match = "twitch/*"
"""


def recorder_event(event_id: str, event: str, **data: Any) -> dict[str, Any]:
    user = {"login": "quinn", "name": "Quinn"}
    return {"id": event_id, "event": event, "data": {"user": user, **data}}


async def post_signed(
    url: str, payload: Any, *, secret: str = CUSTOM_SECRET, prefix: str = "sha256="
) -> tuple[int, Any]:
    body = json.dumps(payload).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Recorder-Signature": prefix + digest}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/webhook/myrecorder", data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_a_custom_signed_sender_through_a_restart(tmp_path: Path) -> None:
    """The custom preset end to end: its field map and kind table, its HMAC header (a
    forged one refused with nothing stored), and a stream that outlives a restart."""
    config = tmp_path / "bot.toml"
    config.write_text(CUSTOM)
    up = recorder_event(
        "e-1",
        "stream.up",
        title="Any% <@&123> run",
        game="Celeste",
        started="2026-11-16T10:00:00Z",
    )
    async with running_bot(config) as bot:
        status, body = await post_signed(bot.url, up, secret="not-the-secret")
        assert (status, set(body)) == (401, {"error"})
        status, body = await post_signed(bot.url, up)
        assert (status, body["status"]) == (202, "accepted"), body
        await bot.wait_for("stdout", r"Any% <@&123> run")
        changed = recorder_event("e-2", "stream.changed", title="Boss fight", game="Celeste")
        assert (await post_signed(bot.url, changed, prefix=""))[0] == 202  # bare hex too
        await bot.wait_for("stdout", r"Boss fight")
        # A kind the table does not name: answered, stored as nothing.
        status, body = await post_signed(bot.url, recorder_event("e-3", "stream.raid"))
        assert (status, body["status"]) == (202, "ignored")
        assert await bot.stop() == 0

    async with running_bot(config) as bot:
        # The sender retries its start after the restart: still one card.
        assert (await post_signed(bot.url, up))[1]["status"] == "duplicate"
        down = recorder_event("e-4", "stream.down")
        assert (await post_signed(bot.url, down))[0] == 202
        # The end counts from the start stored in the first run; the title is the last.
        found = await bot.wait_for("stdout", r"Quinn ended the stream[\s\S]*?duration: (\S+)")
        assert found.group(1) != "0s"
        assert await bot.stop() == 0
    assert "Boss fight" in bot.stdout
    assert CUSTOM_SECRET not in bot.stderr
