"""A route's own template folder (`[[routes]] templates`): its files win over
`[templates] dir` and the built-ins for that route's chats, and `check` reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.__main__ import main
from bot.config import load_config
from bot.errors import ConfigError
from bot.registry import message_formats
from bot.render import Renderer
from bot.samples import sample_event, sample_events
from bot.sinks import console
from tests.test_cli import running_bot

KEY = "route-templates-key-1"


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")


def test_a_missing_folder_is_named_by_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            {"routes": [{"match": "*", "templates": "nowhere"}]}, environ={}, base_dir=tmp_path
        )
    assert any(
        p.startswith("routes[0].templates: directory") and "does not exist" in p
        for p in info.value.problems
    )


def test_a_routes_folder_wins_over_the_bots_and_the_built_ins(tmp_path: Path) -> None:
    shared, own = tmp_path / "shared", tmp_path / "own"
    write(
        shared, "console/live_start.j2", "{% block text %}SHARED {{ streamer.name }}{% endblock %}"
    )
    write(shared, "console/live_end.j2", "{% block text %}SHARED END{% endblock %}")
    write(own, "console/live_start.j2", "{% block text %}OWN {{ streamer.name }}{% endblock %}")
    renderer = Renderer(formats=message_formats(), user_dir=shared, route_dirs=[own])
    start, end = sample_event("live_start"), sample_event("live_end")
    assert renderer.render(console.FORMAT, start).text.startswith("SHARED")
    assert renderer.render(console.FORMAT, start, templates=str(own)).text.startswith("OWN")
    # What the route's folder does not have comes from [templates] dir.
    assert renderer.render(console.FORMAT, end, templates=str(own)).text == "SHARED END"
    # A folder no longer configured (a delivery queued before a reload): the bot's own.
    gone = str(tmp_path / "gone")
    assert renderer.render(console.FORMAT, start, templates=gone).text.startswith("SHARED")


def test_check_reads_every_routes_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    own = tmp_path / "own"
    write(own, "discord/live_start.j2", "{% block content %}{{ streamer.name }{% endblock %}")
    renderer = Renderer(formats=message_formats(), route_dirs=[own])
    problems = renderer.check(sample_events())
    assert problems and "live_start.j2" in problems[0]
    config = tmp_path / "bot.toml"
    config.write_text(
        f'[[sources]]\nname = "rec"\nkind = "onliverec"\nsecret = "{KEY}"\n'
        '[[routes]]\nmatch = "*"\ntemplates = "own"\n'
    )
    assert main(["check", "-c", str(config)]) != 0
    captured = capsys.readouterr()
    assert "live_start.j2" in captured.out + captured.err


async def test_a_route_with_its_own_templates_through_run(tmp_path: Path) -> None:
    own = tmp_path / "quinns"
    write(
        own,
        "console/live_start.j2",
        "{% block text %}QUINN'S OWN CARD: {{ live.title }}{% endblock %}",
    )
    config = tmp_path / "bot.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = 0

[storage]
path = "state/bot.sqlite3"

[[sources]]
name = "rec"
kind = "onliverec"
secret = "{KEY}"

[[routes]]
match = "twitch/quinn"
templates = "quinns"
"""
    )
    payload: dict[str, Any] = {
        "id": "t1",
        "type": "live_start",
        "data": {"platform": "twitch", "channel": "quinn", "live_info": {"title": "Any%"}},
    }
    import aiohttp  # noqa: PLC0415

    async with running_bot(config) as bot:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{bot.url}/webhook/rec?key={KEY}", json=payload) as response,
        ):
            assert response.status == 202
        await bot.wait_for("stdout", r"QUINN'S OWN CARD: Any%")
        assert await bot.stop() == 0
