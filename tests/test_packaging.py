"""The container and service files, checked without Docker: what a user relies on holds."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath

import pytest

from bot.init import DISCORD_TOKEN_ENV, TELEGRAM_TOKEN_ENV

REPO = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments out."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation"
    return out


def arguments(keyword: str) -> list[str]:
    return [args for word, args in instructions() if word == keyword]


def exec_form(args: str) -> list[str]:
    """An instruction's JSON exec form, e.g. CMD ["python", ...]."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value)
    return value


def test_the_image_runs_the_bot_as_a_fixed_non_root_user() -> None:
    steps = instructions()
    words = [word for word, _ in steps]
    assert words.count("CMD") == 1
    before_cmd = steps[: words.index("CMD")]
    users = [args for word, args in before_cmd if word == "USER"]
    assert users, "no USER before CMD: the bot would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0
    assert group == "" or (group.isdigit() and int(group) != 0)
    # The uid USER names is the one the image creates (and the docs tell people to chown).
    created = " ".join(arguments("RUN"))
    assert f"--uid {user}" in created
    assert f"chown {user}:" in (REPO / "docs" / "deployment.md").read_text()


def test_the_config_and_database_live_in_the_declared_volume() -> None:
    cmd = exec_form(arguments("CMD")[0])
    assert cmd[:4] == ["python", "-m", "bot", "run"]
    config = PurePosixPath(cmd[cmd.index("-c") + 1])
    volumes = [PurePosixPath(v) for args in arguments("VOLUME") for v in exec_form(args)]
    assert any(config.is_relative_to(volume) for volume in volumes), (config, volumes)
    # `init` run in the container writes bot.toml (and the database beside it) to the
    # working directory by default.
    assert PurePosixPath(arguments("WORKDIR")[-1]) == config.parent
    assert arguments("FROM") == ["python:3.11-slim"]


def test_the_healthcheck_asks_healthz_on_the_exposed_port() -> None:
    (healthcheck,) = arguments("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "<HEALTHCHECK>", "exec")  # slim has no curl: it must be valid Python
    found = re.search(r"http://127\.0\.0\.1:(\d+)/healthz", argv[2])
    assert found is not None
    assert arguments("EXPOSE") == [found.group(1)]
    assert "--timeout=" in options


def test_pip_installs_without_a_cache_and_the_build_context_has_what_it_needs() -> None:
    installs = [args for args in arguments("RUN") if "pip install" in args]
    assert installs and all("--no-cache-dir" in args for args in installs)
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must_go in (".venv", ".git", "*.sqlite3", "*.sqlite3-*", "bench"):
        assert must_go in ignored
    copied = [
        source
        for args in arguments("COPY")
        for source in shlex.split(args)[:-1]
        if not source.startswith("--")
    ]
    assert copied
    for source in copied:
        assert (REPO / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    # hatchling refuses to build without the readme pyproject.toml names.
    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["readme"]
    assert readme in copied


def test_compose_uses_the_image_volume_port_and_every_variable_of_the_env_file() -> None:
    compose = (REPO / "compose.yaml").read_text()
    (volume,) = [v for args in arguments("VOLUME") for v in exec_form(args)]
    assert re.search(rf"^\s*- [\w-]+:{re.escape(volume)}\s*$", compose, re.M)
    (port,) = arguments("EXPOSE")
    assert re.search(rf'^\s*- "(?:[\d.]+:)?\d+:{port}"\s*$', compose, re.M)
    assert re.search(r"^\s*restart: unless-stopped\s*$", compose, re.M)
    # Whatever variables bot.toml names (a source's secret_env included), the container
    # gets them all from .env: a list of names here once left ONLIVEREC_SECRET out, and
    # the bot restarted in a loop. Optional, so the first `init` runs without a .env.
    assert re.search(
        r"^\s*env_file:\s*\n\s*- path: \.env\s*\n\s*required: false\s*$", compose, re.M
    )
    assert not re.search(r"^\s*environment:", compose, re.M), "variables come from .env only"
    # The docs' docker run passes the same file.
    deployment = (REPO / "docs" / "deployment.md").read_text()
    assert "--env-file .env" in deployment
    for name in (DISCORD_TOKEN_ENV, TELEGRAM_TOKEN_ENV):
        assert f"-e {name}" not in deployment


@pytest.fixture
def systemd_unit() -> dict[str, str]:
    """The unit file docs/deployment.md shows, as key -> value (keys are unique in it)."""
    text = (REPO / "docs" / "deployment.md").read_text()
    found = re.search(r"```ini\n(\[Unit\].*?)```", text, re.S)
    assert found is not None, "no ```ini block with the unit in docs/deployment.md"
    unit: dict[str, str] = {}
    for line in found.group(1).splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            assert key not in unit, f"{key} twice"
            unit[key] = value
    return unit


def test_the_systemd_unit_runs_hardened_from_its_state_directory(
    systemd_unit: dict[str, str],
) -> None:
    argv = shlex.split(systemd_unit["ExecStart"])
    assert argv[0].endswith("/bin/python") and argv[1:4] == ["-m", "bot", "run"]
    config = PurePosixPath(argv[argv.index("-c") + 1])
    state = PurePosixPath("/var/lib") / systemd_unit["StateDirectory"]
    assert config.parent == state
    assert systemd_unit["Restart"] == "on-failure"
    assert systemd_unit["NoNewPrivileges"] == "yes"
    assert systemd_unit["ProtectSystem"] == "strict"
    assert str(state) in systemd_unit["ReadWritePaths"].split()
    assert systemd_unit["EnvironmentFile"].startswith("/")
    assert systemd_unit.get("User") or systemd_unit.get("DynamicUser") == "yes"
