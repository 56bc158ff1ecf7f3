"""The command line, end to end: `run` as a real process, `check` and `render` in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import aiohttp
import pytest

from bot.__main__ import main
from bot.events import NOTIFIED_KINDS

REPO = Path(__file__).resolve().parents[1]
KEY = "cli-test-key-8d1f"

CONFIG = f"""
[server]
host = "127.0.0.1"
port = 0

[storage]
path = "state/bot.sqlite3"

[[sources]]
name = "onliverec"
kind = "onliverec"
secret = "{KEY}"

[behaviour]
end_grace = "4s"

[[routes]]
match = "twitch/*"
"""


def live_event(event_id: str, kind: str, ts: str, **live_info: object) -> dict[str, object]:
    return {
        "id": event_id,
        "ts": ts,
        "type": kind,
        "data": {
            "platform": "twitch",
            "channel": "quinn",
            "url": "https://twitch.tv/quinn",
            "live_info": live_info,
        },
    }


class BotProcess:
    """`python -m bot run` in a subprocess, with its output collected as it arrives."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdout = ""
        self.stderr = ""
        self.url = ""
        self._readers = [
            asyncio.create_task(self._pump(proc.stdout, "stdout")),
            asyncio.create_task(self._pump(proc.stderr, "stderr")),
        ]

    async def _pump(self, stream: asyncio.StreamReader | None, name: str) -> None:
        assert stream is not None
        while line := await stream.readline():
            setattr(self, name, getattr(self, name) + line.decode())

    async def wait_for(self, name: str, pattern: str, timeout: float = 15) -> re.Match[str]:
        async with asyncio.timeout(timeout):
            while True:
                found = re.search(pattern, getattr(self, name))
                if found:
                    return found
                if self.proc.returncode is not None:
                    raise AssertionError(f"bot exited early:\n{self.stderr}")
                await asyncio.sleep(0.02)

    async def stop(self, timeout: float = 15) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self._readers)
        return code


async def start_bot(
    config: Path,
    *,
    line_limit: int = 8 * 1024 * 1024,
    wrapper: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """`python -m bot run -c config` as a subprocess, its stdout and stderr piped."""
    # A line longer than the reader's limit ends its pump; the pipe then fills, the bot
    # blocks writing to it and proc.wait() never returns. A webhook body is at most 1 MiB
    # by default, so no line of the bot's comes near 8 MiB unless a test raises the limit.
    # wrapper: a command the bot runs under (setpriv, to drop a capability); env: more
    # environment variables.
    return await asyncio.create_subprocess_exec(
        *wrapper,
        sys.executable,
        "-m",
        "bot",
        "run",
        "-c",
        str(config),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=line_limit,
        env={**os.environ, **env} if env else None,
    )


@contextlib.asynccontextmanager
async def running_bot(
    config: Path,
    *,
    line_limit: int = 8 * 1024 * 1024,
    wrapper: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[BotProcess]:
    proc = await start_bot(config, line_limit=line_limit, wrapper=wrapper, env=env)
    bot = BotProcess(proc)
    try:
        found = await bot.wait_for("stderr", r"listening on (http://127\.0\.0\.1:\d+)")
        bot.url = found.group(1)
        yield bot
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.gather(*bot._readers, return_exceptions=True)


async def post(url: str, payload: dict[str, object]) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/webhook/onliverec?key={KEY}", json=payload) as response,
    ):
        return response.status, await response.json()


async def test_run_notifies_on_console_and_remembers_across_restart(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(CONFIG)
    start = live_event(
        "s-1",
        "live_start",
        "2026-03-11T05:00:00Z",
        uname="Quinn",
        title="Any% speedrun",
        categories=["Celeste"],
    )

    async with running_bot(config) as bot:
        status, body = await post(bot.url, start)
        assert status == 202, body
        await bot.wait_for("stdout", r"Any% speedrun")
        again, body = await post(bot.url, start)
        assert (again, body["status"]) == (200, "duplicate")
        # Not routed (route matches twitch/* only): stored, not printed.
        other = {**start, "id": "y-1", "data": {**start["data"], "platform": "youtube"}}
        assert (await post(bot.url, other))[0] == 202
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{bot.url}/healthz") as response,
        ):
            health = await response.json()
        assert response.status == 200 and health["database"] == "ok"
        assert health["sinks"] == {"console": "running"}
        assert await bot.stop() == 0
    first_out = bot.stdout
    assert "Quinn" in first_out
    assert "Celeste" in first_out
    assert "https://twitch.tv/quinn" in first_out
    assert first_out.count("Any% speedrun") == 1
    assert "youtube" not in first_out
    assert KEY not in bot.stderr

    # The end waits out end_grace (4s) in the outbox; a restart in the middle of it
    # neither loses the notice nor prints it twice.
    async with running_bot(config) as bot:
        end = live_event("e-1", "live_end", "2026-03-11T07:13:00Z")
        status, _ = await post(bot.url, end)
        posted = time.monotonic()
        assert status == 202
        assert await bot.stop() == 0
    assert "2h 13m" not in bot.stdout

    async with running_bot(config) as bot:
        await bot.wait_for("stdout", r"2h 13m")
        assert time.monotonic() - posted >= 4.0  # not before the grace was over
        assert await bot.stop() == 0
    assert bot.stdout.count("2h 13m") == 1
    assert "Quinn" in bot.stdout
    assert KEY not in bot.stderr


async def test_run_with_a_bad_config_exits_non_zero_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(CONFIG.replace("port = 0", 'port = "eighty"'))
    proc = await start_bot(config)
    _out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 2  # a config mistake (1 is for runtime failures)
    assert "server.port" in err.decode()


def test_check_accepts_the_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(REPO / "bot.toml.example")]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "onliverec" in out


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (
            lambda c: c.replace("[server]", '[server]\ncolour = "red"'),
            "server.colour: unknown key",
        ),
        (lambda c: c.replace("port = 0", 'port = "80"'), "server.port"),
        (
            lambda c: c.replace(f'secret = "{KEY}"', 'secret_env = "NOPE_NOT_SET_XYZ"'),
            "sources[0].secret_env",
        ),
    ],
)
def test_check_names_the_key_of_each_config_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutation: object, expected: str
) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(mutation(CONFIG))  # type: ignore[operator]
    assert main(["check", "-c", str(config)]) == 2  # a config mistake
    assert expected in capsys.readouterr().err


def test_check_reports_a_template_syntax_error_with_name_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    templates = tmp_path / "my-templates" / "console"
    templates.mkdir(parents=True)
    (templates / "live_start.j2").write_text("Live!\n{{ streamer.name }\n")
    config = tmp_path / "bot.toml"
    config.write_text(CONFIG + '\n[templates]\ndir = "my-templates"\n')
    assert main(["check", "-c", str(config)]) == 2  # a config mistake
    err = capsys.readouterr().err
    assert "console/live_start.j2" in err
    assert "line 2" in err


@pytest.mark.parametrize("sink", ["console", "discord", "telegram"])
@pytest.mark.parametrize("kind", NOTIFIED_KINDS)
def test_render_previews_every_kind_for_every_sink(
    capsys: pytest.CaptureFixture[str], kind: str, sink: str
) -> None:
    assert main(["render", kind, "--sink", sink]) == 0
    out = capsys.readouterr().out
    assert out.strip()


def test_render_from_a_payload_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = tmp_path / "start.json"
    payload.write_text(
        json.dumps(
            live_event(
                "p",
                "live_start",
                "2026-03-11T05:00:00Z",
                uname="Payload Person",
                title="From a file",
            )
        )
    )
    assert main(["render", "--event", str(payload), "--sink", "telegram"]) == 0
    out = capsys.readouterr().out
    assert "From a file" in out and "Payload Person" in out


def test_render_refuses_an_unknown_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "went_live"]) == 2
    assert "unknown event kind" in capsys.readouterr().err
