"""kind = "webhook" through `python -m bot run`: Owncast and blrec start, retitle, end;
a wrong ?key= is refused with 401 and stores nothing."""

from __future__ import annotations

import copy
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
