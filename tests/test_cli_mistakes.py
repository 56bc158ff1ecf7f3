"""Ordinary mistakes through the real command line (#16): one line that says what and how
to fix it, exit code 2 for the config and 1 for the runtime, never a traceback, never a
secret; and `check` saying where each route posts."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.events import LiveInfo
from bot.samples import sample_event
from bot.store.sqlite import SQLiteStore
from bot.testcard import TEST_EVENT_PREFIX
from tests.test_cli import CONFIG, KEY

TOKEN = "123456789:AAF-cli-mistake-token-Zebra"
SECRET = "fastpix-signing-secret-Quokka-42"


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    for secret in (TOKEN, SECRET, KEY):
        assert secret not in output, output
    return done


def config(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "bot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


# -- config files ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "check", "deliveries", "test-send"])
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "bot.toml: file not found"),
        (b"\xff\xfe[server]\n", "bot.toml: not UTF-8 text"),
        (b"[server\nport = 1\n", "bot.toml: invalid TOML"),
    ],
    ids=["missing", "not-utf8", "not-toml"],
)
def test_an_unreadable_config_is_one_line_and_exit_code_2(
    tmp_path: Path, command: str, content: bytes | None, expected: str
) -> None:
    if content is not None:
        (tmp_path / "bot.toml").write_bytes(content)
    done = cli(command, "-c", "bot.toml", cwd=tmp_path)
    assert done.returncode == 2
    [line] = errors(done)
    assert expected in line


@pytest.mark.parametrize("command", ["run", "check", "deliveries", "test-send", "render"])
def test_a_secret_in_the_wrong_key_is_never_echoed_by_any_command(
    tmp_path: Path, command: str
) -> None:
    # A token pasted into token_env, a provider's secret into secret_env.
    text = (
        CONFIG
        + f"""
[telegram]
token_env = "{TOKEN}"

[[sources]]
name = "fp"
kind = "fastpix"
secret_env = "{SECRET}"
"""
    )
    config(tmp_path, text)
    args = [command, "-c", "bot.toml"] + (["live_start"] if command == "render" else [])
    done = cli(*args, cwd=tmp_path)  # asserts neither value appears anywhere
    assert done.returncode == 2
    lines = errors(done)
    assert any("telegram.token_env: must name an environment variable" in line for line in lines)
    assert any(
        "sources[1].secret_env: must name an environment variable" in line for line in lines
    )
    assert any("(not shown)" in line for line in lines)


# -- storage and the port ------------------------------------------------------------------


def test_a_storage_path_that_is_a_folder_is_refused_before_start(tmp_path: Path) -> None:
    (tmp_path / "state" / "bot.sqlite3").mkdir(parents=True)
    config(tmp_path)
    for command in ("run", "check"):
        done = cli(command, "-c", "bot.toml", cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        [line] = errors(done)
        assert "storage.path:" in line and "is a folder; name a file in it" in line


def test_a_storage_path_under_a_file_is_refused_before_start(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a folder")
    config(tmp_path)
    done = cli("run", "-c", "bot.toml", cwd=tmp_path)
    assert done.returncode == 2
    [line] = errors(done)
    assert "storage.path:" in line and "state is not a folder" in line


def test_a_database_from_a_newer_version_is_one_line_in_run_and_deliveries(
    tmp_path: Path,
) -> None:
    (tmp_path / "state").mkdir()
    database = tmp_path / "state" / "bot.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA user_version = 999")
    config(tmp_path)
    for command in ("run", "deliveries"):
        done = cli(command, "-c", "bot.toml", cwd=tmp_path)
        assert done.returncode == 1, (command, done.stderr)
        [line] = errors(done)
        assert "was written by a newer version of the bot (schema 999" in line
        assert "upgrade the bot" in line


def test_a_port_in_use_says_so_and_how_to_fix_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config(tmp_path, CONFIG.replace("port = 0", f"port = {port}"))
        done = cli("run", "-c", "bot.toml", cwd=tmp_path)
    assert done.returncode == 1
    [line] = errors(done)
    assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in line
    assert "set another [server] port" in line


# -- templates -----------------------------------------------------------------------------


def broken_override(tmp_path: Path) -> Path:
    (tmp_path / "tpl" / "console").mkdir(parents=True)
    (tmp_path / "tpl" / "console" / "live_start.j2").write_text("{{ streamer.name }\n")
    return config(tmp_path, CONFIG + '\n[templates]\ndir = "tpl"\n')


def test_run_refuses_to_start_on_a_broken_override(tmp_path: Path) -> None:
    broken_override(tmp_path)
    done = cli("run", "-c", "bot.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert any("console/live_start.j2 line 1" in line for line in errors(done)), done.stderr
    assert not (tmp_path / "state").exists(), "it stopped before opening anything"


def test_render_reads_bot_toml_here_and_fails_on_a_broken_override(tmp_path: Path) -> None:
    broken_override(tmp_path)
    done = cli("render", "live_start", cwd=tmp_path)  # no -c: ./bot.toml, as elsewhere
    assert done.returncode == 2
    assert "console/live_start.j2 line 1" in done.stderr
    assert done.stdout == "", "no built-in output passed off as the override's"
    (tmp_path / "tpl" / "console" / "live_start.j2").write_text("LIVE: {{ streamer.name }}\n")
    done = cli("render", "live_start", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("LIVE: ")


def test_render_suggests_the_kind_that_was_meant(tmp_path: Path) -> None:
    done = cli("render", "live_strat", cwd=tmp_path)
    assert done.returncode == 2
    assert errors(done) == ["error: unknown event kind 'live_strat'; did you mean 'live_start'?"]


# -- check: warnings, --strict, where each route posts -------------------------------------


def check_output(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    text = (
        CONFIG
        + """
[[routes]]
match = "kick/*"
discord_channels = ["123456789012345678"]
"""
    )
    config(tmp_path, text)
    (tmp_path / "tpl" / "discord").mkdir(parents=True)
    (tmp_path / "tpl" / "discord" / "live_started.j2").write_text("typo")
    path = tmp_path / "bot.toml"
    path.write_text(path.read_text() + '\n[templates]\ndir = "tpl"\n')
    return cli("check", "-c", "bot.toml", *flags, cwd=tmp_path, env=_without_tokens())


def _without_tokens() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "TELEGRAM_TOKEN")}


def test_check_warns_names_the_keys_and_says_where_each_route_posts(tmp_path: Path) -> None:
    done = check_output(tmp_path)
    assert done.returncode == 0  # warnings alone pass
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: routes[1].discord_channels: Discord is off")
    assert "templates: discord/live_started.j2: unused" in warnings[1]
    assert "did you mean live_start.j2?" in warnings[1]
    lines = done.stdout.splitlines()
    assert "bot.toml: OK with 2 warning(s)" in lines
    assert "    1. twitch/* -> console" in lines
    assert (
        "    2. kick/* -> console; Discord 123456789012345678: NOT POSTED (no [discord] section)"
        in lines
    )


def test_check_strict_fails_on_warnings(tmp_path: Path) -> None:
    done = check_output(tmp_path, "--strict")
    assert done.returncode == 2
    assert "--strict: failing on the warnings above" in done.stderr


# -- flags ----------------------------------------------------------------------------------


def test_version_and_log_level_after_the_command(tmp_path: Path) -> None:
    done = cli("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("streambot ")
    config(tmp_path)

    def deliveries(*flags: str) -> subprocess.CompletedProcess[str]:
        # A database of schema 0: opening it logs each migration at INFO.
        (tmp_path / "state").mkdir(exist_ok=True)
        for old in (tmp_path / "state").iterdir():
            old.unlink()
        sqlite3.connect(tmp_path / "state" / "bot.sqlite3").close()
        return cli(*flags, cwd=tmp_path)

    plain = deliveries("deliveries", "-c", "bot.toml")
    before = deliveries("--log-level", "warning", "deliveries", "-c", "bot.toml")
    after = deliveries("deliveries", "-c", "bot.toml", "--log-level", "warning")
    assert "migrated to schema 1" in plain.stderr
    assert before.returncode == after.returncode == plain.returncode == 0
    assert "migrated" not in before.stderr and "migrated" not in after.stderr
    refused = cli("check", "--log-level", "loud", cwd=tmp_path)
    assert refused.returncode == 2 and "invalid choice: 'loud'" in refused.stderr


async def test_render_event_last_shows_the_last_real_event_of_that_kind(tmp_path: Path) -> None:
    config(tmp_path)
    done = cli("render", "live_start", "--event", "last", cwd=tmp_path)
    assert done.returncode == 1 and "no database at" in done.stderr  # nothing ran yet
    (tmp_path / "state").mkdir()
    store = SQLiteStore(tmp_path / "state" / "bot.sqlite3")
    await store.open()
    sample = sample_event("live_start")
    try:
        async with store.transaction():
            for number, title in enumerate(("Older", "Speedrun night")):
                real = sample.with_changes(event_id=f"real-{number}", live=LiveInfo(title=title))
                await store.insert_event(real, notified=True)
            # A test card (/test) stored later is no real event.
            card = sample.with_changes(
                event_id=f"{TEST_EVENT_PREFIX}1", live=LiveInfo(title="Test card")
            )
            await store.insert_event(card, notified=True, dispatched=True)
    finally:
        await store.close()
    done = await asyncio.to_thread(cli, "render", "live_start", "--event", "last", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Speedrun night" in done.stdout and "Test card" not in done.stdout
    done = cli("render", "error", "--event", "last", cwd=tmp_path)
    assert done.returncode == 1 and "holds no error event yet" in done.stderr
    done = cli("render", "--event", "last", cwd=tmp_path)
    assert done.returncode == 2 and "needs an event kind" in done.stderr


CUSTOM_SOURCE = """
[[sources]]
name = "myrecorder"
kind = "webhook"
preset = "custom"
secret = "custom-preview-secret-1"

[sources.fields]
event_id = "id"
kind = "event"
platform = "data.site"
channel = "data.user.login"
title = "data.title"
url = "data.url"

[sources.kinds]
"stream.up" = "live_start"
"""


def test_render_previews_a_custom_webhook_body_with_the_configs_field_map(
    tmp_path: Path,
) -> None:
    config(tmp_path, CONFIG + CUSTOM_SOURCE)
    body = {
        "id": "u1",
        "event": "stream.up",
        "data": {
            "site": "twitch",
            "user": {"login": "quinn"},
            "title": "Custom preview",
            "url": "https://twitch.tv/quinn",
        },
    }
    (tmp_path / "body.json").write_text(json.dumps(body))
    args = ("render", "--event", "body.json", "--source", "myrecorder")
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Custom preview" in done.stdout and "twitch.tv/quinn" in done.stdout
    # A body the field map cannot read says which path, as the webhook's 422 would.
    del body["data"]["user"]
    (tmp_path / "body.json").write_text(json.dumps(body))
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 1 and "data.user" in done.stderr
    done = cli("render", "--event", "body.json", "--source", "nope", cwd=tmp_path)
    assert done.returncode == 2 and "there are: onliverec, myrecorder" in done.stderr


def test_init_for_a_webhook_source_writes_a_config_that_check_accepts(tmp_path: Path) -> None:
    done = cli("init", "--source", "webhook", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    checked = cli("check", "-c", "bot.toml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "webhook" in checked.stdout
