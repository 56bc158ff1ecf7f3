"""`python -m bot init`: the file it writes works, keeps its secrets private, never clobbers."""

from __future__ import annotations

import io
import logging
import os
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.config import read_config
from bot.init import InitOptions, default_host, run_init, running_in_container
from bot.logs import StderrHandler
from bot.sources.fastpix import SPEC as FASTPIX

PUBLIC = "https://bot.example.com"
FASTPIX_SECRET_ENV = str(FASTPIX.secret_env)


@pytest.fixture(autouse=True)
def _drop_installed_log_handler() -> Iterator[None]:
    """main() installs a stderr handler on the root logger; leave no trace for other tests."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(handler)


def init(path: Path, *flags: str) -> int:
    return main(["init", "-c", str(path), *flags])


def written(path: Path) -> dict:
    with path.open("rb") as file:
        return tomllib.load(file)


def expected_urls(config: dict, public: str) -> list[str]:
    """The URL a user pastes into each provider, from what the file says."""
    urls = []
    for source in config["sources"]:
        url = f"{public}/webhook/{source['name']}"
        urls.append(f"{url}?key={source['secret']}" if source["kind"] == "onliverec" else url)
    return urls


def scripted(answers: list[str]) -> tuple[Callable[[str], str], list[str]]:
    """An `ask` that answers from a list and records the prompts; EOF when it runs out."""
    prompts: list[str] = []
    remaining = iter(answers)

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        try:
            return next(remaining)
        except StopIteration:
            raise EOFError from None

    return ask, prompts


def test_flags_write_a_private_config_that_check_accepts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "bot.toml"
    caplog.set_level(logging.DEBUG)
    code = init(
        path,
        "--source",
        "onliverec",
        "--source",
        "livepeer,fastpix",
        "--discord",
        "--telegram",
        "--public-url",
        PUBLIC + "/",
        "--port",
        "9090",
    )
    assert code == 0
    out = capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    config = written(path)
    assert [(s["name"], s["kind"]) for s in config["sources"]] == [
        ("onliverec", "onliverec"),
        ("livepeer", "livepeer"),
        ("fastpix", "fastpix"),
    ]
    onliverec, livepeer, fastpix = config["sources"]
    assert len(onliverec["secret"]) >= 43 and len(livepeer["secret"]) >= 43
    assert onliverec["secret"] != livepeer["secret"]
    # FastPix makes its own signing secret: the bot must not invent one.
    assert fastpix == {"name": "fastpix", "kind": "fastpix", "secret_env": FASTPIX_SECRET_ENV}
    assert config["discord"] == {"token_env": "DISCORD_TOKEN"}
    assert config["telegram"] == {"token_env": "TELEGRAM_TOKEN"}
    assert config["server"]["port"] == 9090
    assert config["routes"] == [{"match": "*"}]

    for url in expected_urls(config, PUBLIC):
        assert url in out
    assert FASTPIX_SECRET_ENV in out and "Signing Secret" in out
    assert f'"sharedSecret": "{livepeer["secret"]}"' in out
    assert "DISCORD_TOKEN" in out and "invite the bot" in out
    assert "TELEGRAM_TOKEN" in out and "BotFather" in out
    assert "discord_channels" in out and "telegram_chats" in out
    assert f"python -m bot check -c {path}" in out
    # The secrets are shown once on the terminal, never logged.
    assert caplog.records == []

    monkeypatch.setenv(FASTPIX_SECRET_ENV, "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY=")
    assert main(["check", "-c", str(path)]) == 0
    assert "onliverec (onliverec), livepeer (livepeer), fastpix (fastpix)" in (
        capsys.readouterr().out
    )


def test_without_fastpix_the_written_file_loads_with_an_empty_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "conf" / "bot.toml"
    assert init(path, "--host", "0.0.0.0") == 0
    out = capsys.readouterr().out
    loaded = read_config(path, environ={})
    assert loaded.server.host == "0.0.0.0"
    assert [s.kind for s in loaded.sources] == ["onliverec"]
    assert not loaded.platforms["discord"].enabled and not loaded.platforms["telegram"].enabled
    assert loaded.storage.path == path.parent / "bot.sqlite3"
    # 0.0.0.0 is where to listen, not an address to send to.
    assert f"http://localhost:8080/webhook/onliverec?key={loaded.sources[0].secret}" in out


def test_as_a_process_with_stdin_not_a_terminal_it_asks_nothing(tmp_path: Path) -> None:
    # stdin is an open pipe nobody writes to: a read would hang until the timeout.
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "init"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
        out = proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.returncode is None:
            proc.kill()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    path = tmp_path / "bot.toml"
    config = written(path)
    assert [s["kind"] for s in config["sources"]] == ["onliverec"]
    # 127.0.0.1 on a machine; 0.0.0.0 in a container (a published port reaches no loopback).
    host = default_host(in_container=running_in_container())
    shown = "localhost" if host == "0.0.0.0" else host
    assert config["server"] == {"host": host, "port": 8080, "public_url": f"http://{shown}:8080"}
    assert expected_urls(config, f"http://{shown}:8080")[0] in out

    check = subprocess.run(
        [sys.executable, "-m", "bot", "check", "-c", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")},
    )
    assert check.returncode == 0, check.stderr
    assert "OK" in check.stdout


def test_each_run_makes_new_secrets(tmp_path: Path) -> None:
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    assert init(first, "--source", "onliverec,livepeer") == 0
    assert init(second, "--source", "onliverec,livepeer") == 0
    secrets_a = {s["secret"] for s in written(first)["sources"]}
    secrets_b = {s["secret"] for s in written(second)["sources"]}
    assert len(secrets_a | secrets_b) == 4


def test_an_existing_file_is_left_alone_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bot.toml"
    path.write_bytes(b"# my hand-written config\n")
    path.chmod(0o644)
    before = path.read_bytes()
    assert init(path, "--source", "livepeer") == 1
    captured = capsys.readouterr()
    assert "already exists" in captured.err and "--force" in captured.err
    assert path.read_bytes() == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert list(tmp_path.iterdir()) == [path]


def test_force_replaces_the_file_and_makes_it_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bot.toml"
    assert init(path) == 0
    old_secret = written(path)["sources"][0]["secret"]
    path.chmod(0o644)
    assert init(path, "--source", "livepeer", "--force") == 0
    config = written(path)
    assert [s["kind"] for s in config["sources"]] == ["livepeer"]
    assert config["sources"][0]["secret"] != old_secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    capsys.readouterr()
    assert main(["check", "-c", str(path)]) == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--source", "ustream"], "--source: unknown source 'ustream'"),
        (["--public-url", "ftp://bot.example.com"], "--public-url"),
        (["--public-url", "https://bot.example.com/?x=1"], "--public-url"),
        (["--port", "0"], "--port"),
        (["--host", "bad host"], "--host"),
    ],
)
def test_a_bad_flag_is_named_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    path = tmp_path / "bot.toml"
    assert init(path, *flags) == 2
    assert message in capsys.readouterr().err
    assert not path.exists()


def test_interactive_answers_choose_the_sources_and_chats(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    ask, prompts = scripted(
        [
            "livepeer ustream",  # not a source: asked again
            "livepeer, FastPix",
            "yes",  # Discord
            "",  # Telegram: the suggested "n"
            "0.0.0.0",
            "nine",  # not a port: asked again
            "9000",
            "",  # public URL: the suggestion
        ]
    )
    out = io.StringIO()
    assert run_init(InitOptions(config=path), ask=ask, out=out) == 0
    config = written(path)
    assert [s["kind"] for s in config["sources"]] == ["livepeer", "fastpix"]
    assert config["discord"] == {"token_env": "DISCORD_TOKEN"}
    assert "telegram" not in config
    # The public URL is kept: Telegram's webhook mode posts to it.
    assert config["server"] == {
        "host": "0.0.0.0",
        "port": 9000,
        "public_url": "http://localhost:9000",
    }
    assert len(prompts) == 8
    assert "unknown source 'ustream'" in out.getvalue()
    assert "http://localhost:9000/webhook/livepeer" in out.getvalue()
    assert "[http://localhost:9000]" in prompts[-1]


def test_twitch_asks_for_the_client_id_and_derives_the_callback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bot.toml"
    ask, prompts = scripted(["twitch", "abc123clientid", "n", "n", "", "", PUBLIC])
    out = io.StringIO()
    assert run_init(InitOptions(config=path), ask=ask, out=out) == 0
    assert "Client ID" in prompts[1]
    (source,) = written(path)["sources"]
    assert source["client_id"] == "abc123clientid"
    assert source["callback_url"] == f"{PUBLIC}/webhook/twitch"
    assert source["client_secret_env"] == "TWITCH_CLIENT_SECRET"
    # The EventSub secret the bot made fits Twitch's rule (10-100 ASCII characters).
    assert source["secret"].isascii() and 10 <= len(source["secret"]) <= 100
    assert "dev.twitch.tv/console" in out.getvalue()
    monkeypatch.setenv("TWITCH_CLIENT_SECRET", "from-the-twitch-console")
    assert main(["check", "-c", str(path)]) == 0
    assert "twitch (twitch)" in capsys.readouterr().out


def test_kick_asks_for_the_client_id_and_writes_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bot.toml"
    ask, prompts = scripted(["kick", "01KICKCLIENTID", "n", "n", "", "", PUBLIC])
    out = io.StringIO()
    assert run_init(InitOptions(config=path), ask=ask, out=out) == 0
    assert "Client ID" in prompts[1]
    (source,) = written(path)["sources"]
    assert source["client_id"] == "01KICKCLIENTID"
    assert source["client_secret_env"] == "KICK_CLIENT_SECRET"
    # Kick signs with its own key: no shared secret is made (check would refuse one).
    assert "secret" not in source and "secret_env" not in source
    # The URL to paste into the Kick app's settings, once per app.
    assert f"{PUBLIC}/webhook/kick" in out.getvalue()
    assert "kick.com/settings/developer" in out.getvalue()
    monkeypatch.setenv("KICK_CLIENT_SECRET", "from-the-kick-settings")
    assert main(["check", "-c", str(path)]) == 0
    assert "kick (kick)" in capsys.readouterr().out


def test_interactive_run_cut_short_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bot.toml"
    ask, _prompts = scripted(["onliverec", "n"])
    assert run_init(InitOptions(config=path), ask=ask, out=io.StringIO()) == 1
    assert "nothing written" in capsys.readouterr().err
    assert not path.exists()


def test_answer_flags_mean_no_questions_even_in_a_terminal(tmp_path: Path) -> None:
    def ask(prompt: str) -> str:
        raise AssertionError(f"asked {prompt!r} although flags were given")

    path = tmp_path / "bot.toml"
    options = InitOptions(config=path, telegram=True, public_url=PUBLIC)
    assert run_init(options, ask=ask, out=io.StringIO()) == 0
    config = written(path)
    assert config["telegram"] == {"token_env": "TELEGRAM_TOKEN"}
    assert [s["kind"] for s in config["sources"]] == ["onliverec"]


@pytest.mark.parametrize(
    ("in_container", "public_url", "host"),
    [
        (False, None, "127.0.0.1"),
        # A published port reaches the container's interface, never its loopback: with
        # 127.0.0.1 the bot and the image's HEALTHCHECK would be unreachable.
        (True, None, "0.0.0.0"),
        (True, "http://localhost:8080", "0.0.0.0"),
        # Providers reach a public URL from outside.
        (False, PUBLIC, "0.0.0.0"),
        (False, "http://192.168.1.20:8080", "127.0.0.1"),
    ],
)
def test_the_default_address_is_one_the_providers_and_the_health_check_can_reach(
    tmp_path: Path, in_container: bool, public_url: str | None, host: str
) -> None:
    path = tmp_path / "bot.toml"
    options = InitOptions(
        config=path, public_url=public_url, in_container=in_container, telegram=True
    )
    assert run_init(options, ask=None, out=io.StringIO()) == 0
    assert written(path)["server"]["host"] == host
    # --host always wins.
    explicit = InitOptions(
        config=path, host="127.0.0.1", in_container=True, public_url=PUBLIC, force=True
    )
    assert run_init(explicit, ask=None, out=io.StringIO()) == 0
    assert written(path)["server"]["host"] == "127.0.0.1"


def test_in_a_container_the_question_suggests_every_interface(tmp_path: Path) -> None:
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return ""  # take every suggestion

    path = tmp_path / "bot.toml"
    assert run_init(InitOptions(config=path, in_container=True), ask=ask, out=io.StringIO()) == 0
    assert any("Listen on which address" in p and "[0.0.0.0]" in p for p in prompts)
    assert written(path)["server"]["host"] == "0.0.0.0"
