"""Tests for bot.config: defaults, the example file, and every kind of problem report."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import (
    CONFIG_KEYS,
    BehaviourConfig,
    Config,
    ServerConfig,
    load_config,
    read_config,
)
from bot.errors import ConfigError
from bot.events import NOTIFIED_KINDS
from bot.registry import SOURCES
from bot.sources.livepeer import TOLERANCE

REPO = Path(__file__).parents[1]
EXAMPLE = REPO / "bot.toml.example"
SECRET = "s3cr3t-Zebra-Quokka-9931"
TOKEN = "t0ken-Narwhal-Okapi-4417"


def source(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "rec", "kind": "onliverec", "secret": SECRET}
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not None}


def load(data: dict[str, Any], environ: dict[str, str] | None = None, base: Path = REPO) -> Config:
    return load_config(data, environ=environ or {}, base_dir=base)


def problems(data: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(data, environ)
    return info.value.problems


def only_problem(data: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    found = problems(data, environ)
    assert len(found) == 1, found
    return found[0]


# --- defaults and the example file ---------------------------------------------------


def test_defaults_from_an_empty_mapping(tmp_path: Path) -> None:
    config = load({}, base=tmp_path)
    assert config.server == ServerConfig("127.0.0.1", 8080, 1_048_576)
    assert config.storage.path == tmp_path / "bot.sqlite3"
    assert config.console.enabled is True
    assert not config.platforms["discord"].enabled
    assert config.platforms["discord"].disabled_reason == "no [discord] section"
    assert not config.platforms["telegram"].enabled
    assert config.platforms["telegram"].disabled_reason == "no [telegram] section"
    assert config.templates.dir is None
    assert config.behaviour == BehaviourConfig()
    assert config.behaviour.end_grace == timedelta(seconds=60)
    assert config.behaviour.rejoin_window == timedelta(minutes=5)
    assert config.sources == ()
    assert config.routes == ()


def test_minimal_source_and_route_defaults() -> None:
    config = load({"sources": [source()], "routes": [{"match": "twitch/*"}]})
    (src,) = config.sources
    assert (src.name, src.kind, src.secret, src.options) == ("rec", "onliverec", SECRET, {})
    (route,) = config.routes
    assert route.patterns == ("twitch/*",)
    assert route.events == frozenset(NOTIFIED_KINDS)
    assert (route.targets, route.mention_roles) == ((), ())


def test_example_file_loads_with_no_environment() -> None:
    config = read_config(EXAMPLE, environ={})
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.storage.path == REPO / "demo.sqlite3"  # not a real setup's database
    assert config.console.enabled
    assert not config.platforms["discord"].enabled
    assert not config.platforms["telegram"].enabled
    assert [(s.name, s.kind) for s in config.sources] == [("onliverec", "onliverec")]
    assert [r.patterns for r in config.routes] == [("*",)]


def _uncommented_example() -> str:
    # Turn "# key = value" and "# [section]" lines back into TOML; prose stays a comment.
    setting = re.compile(r"^# ?((?:\[\[?\w+\]\]?)|(?:\w+ = .*))$")
    return "\n".join(
        setting.sub(r"\1", line) for line in EXAMPLE.read_text(encoding="utf-8").splitlines()
    )


def test_example_file_with_everything_uncommented_loads(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    path = tmp_path / "bot.toml"
    path.write_text(_uncommented_example(), encoding="utf-8")
    environ = {
        "DISCORD_TOKEN": TOKEN,
        "TELEGRAM_TOKEN": TOKEN,
        "LIVEPEER_WEBHOOK_SECRET": SECRET,
        "FASTPIX_WEBHOOK_SECRET": SECRET,
        "TWITCH_EVENTSUB_SECRET": "eventsub-secret-in-the-example",
        "TWITCH_CLIENT_SECRET": SECRET,
        "KICK_CLIENT_SECRET": SECRET,
        "METRICS_TOKEN": SECRET,
    }
    config = read_config(path, environ=environ)
    assert config.platforms["discord"].enabled and config.platforms["telegram"].enabled
    assert sorted({s.kind for s in config.sources}) == sorted(SOURCES)
    assert config.templates.dir == tmp_path / "templates"
    assert config.behaviour == BehaviourConfig()  # the commented values are the defaults
    assert len(config.routes) == 2
    assert config.routes[1].targets_on("telegram") == ("-1001234567890", "-1009876543210/42")
    assert (config.routes[1].on_change, config.routes[1].on_end) == ("both", "edit")
    assert config.routes[1].end_grace == timedelta(minutes=2)
    assert config.routes[0].on_end is None  # not set: [behaviour] decides
    assert config.metrics.token == SECRET


def test_example_and_docs_mention_every_key() -> None:
    example = EXAMPLE.read_text(encoding="utf-8")
    for key in sorted(CONFIG_KEYS):
        assert re.search(rf"\b{re.escape(key.rsplit('.', 1)[1])} = ", example), key
    docs = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    for key in sorted(CONFIG_KEYS):
        section, name = key.split(".")
        assert f"`{name}`" in docs, key
        assert f"[{section}]" in docs or f"[[{section[:-2]}]]" in docs, key


# --- unknown keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"colour": "red"}, "colour: unknown key"),
        ({"behavior": {}}, "behavior: unknown key; did you mean 'behaviour'?"),
        ({"server": {"colour": 1}}, "server.colour: unknown key"),
        ({"discord": {"tokne": "x"}}, "discord.tokne: unknown key; did you mean 'token'?"),
        ({"sources": [source(url="x")]}, "sources[0].url: unknown key"),
        ({"routes": [{"match": "*", "channel": 1}]}, "routes[0].channel: unknown key"),
    ],
)
def test_unknown_keys_are_named_by_path(data: dict[str, Any], expected: str) -> None:
    assert only_problem(data).startswith(expected)


# --- wrong types and ranges -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"server": 5}, "server: expected a table, got integer"),
        ({"server": {"port": "8080"}}, "server.port: expected an integer, got string"),
        ({"server": {"port": True}}, "server.port: expected an integer, got boolean"),
        ({"server": {"port": 80.0}}, "server.port: expected an integer, got float"),
        ({"server": {"port": 70000}}, "server.port: must be between 0 and 65535, got 70000"),
        ({"server": {"max_body_bytes": 10}}, "server.max_body_bytes: must be between 1024"),
        ({"server": {"host": ["a"]}}, "server.host: expected a string, got list"),
        ({"server": {"host": ""}}, "server.host: must not be empty"),
        ({"console": {"enabled": 1}}, "console.enabled: expected a boolean (true or false), "),
        ({"storage": {"path": 3}}, "storage.path: expected a string, got integer"),
        ({"sources": {"name": "x"}}, "sources: expected a list, got table"),
        ({"sources": ["x"]}, "sources[0]: expected a table, got string"),
        ({"routes": [{"match": 5}]}, "routes[0].match: expected a glob string or a list"),
        ({"routes": [{"match": []}]}, "routes[0].match: must not be empty"),
        ({"routes": [{"match": ["twitch/a", 1]}]}, "routes[0].match[1]: expected a glob string"),
        (
            {"routes": [{"match": "*", "events": "live_start"}]},
            "routes[0].events: expected a list",
        ),
        ({"routes": [{"match": "*", "events": []}]}, "routes[0].events: must not be empty"),
        ({"discord": {"api_url": "ftp://x"}}, "discord.api_url: expected an absolute http://"),
        ({"discord": {"gateway_url": "https://x"}}, "discord.gateway_url: expected an absolute"),
        ({"telegram": {"api_url": "localhost:8081"}}, "telegram.api_url: expected an absolute"),
        (
            {"discord": {"token_env": "NOT A NAME"}},
            "discord.token_env: must name an environment variable",
        ),
        ({"routes": [{"match": "*", "on_end": "erase"}]}, "routes[0].on_end: must be one of"),
        ({"routes": [{"match": "*", "on_change": 1}]}, "routes[0].on_change: expected a string"),
        ({"routes": [{"match": "*", "end_grace": "soon"}]}, "routes[0].end_grace: "),
        ({"logging": {"level": "verbose"}}, "logging.level: must be one of debug, error, info,"),
        ({"logging": {"format": "xml"}}, "logging.format: must be one of json, text, got 'xml'"),
        ({"metrics": {"enabled": "yes"}}, "metrics.enabled: expected a boolean"),
        ({"metrics": {"token": ""}}, "metrics.token: must not be empty"),
        ({"metrics": {"token_env": "M"}}, "metrics.token_env: environment variable M is not set"),
        ({"metrics": {"token": "a", "token_env": "M"}}, "metrics: set token or token_env, not"),
    ],
)
def test_wrong_types_and_values(data: dict[str, Any], expected: str) -> None:
    assert only_problem(data).startswith(expected)


# --- required keys, secrets and tokens ---------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (source(name=None), "sources[0].name: is required"),
        (source(kind=None), "sources[0].kind: is required"),
        (source(secret=None), "sources[0].secret: is required (set secret or secret_env)"),
        (source(secret_env="HOOK"), "sources[0]: set secret or secret_env, not both"),
        (source(secret=""), "sources[0].secret: must not be empty"),
        (source(secret=123), "sources[0].secret: expected a string, got integer"),
        (
            source(kind="ustream"),
            "sources[0].kind: must be one of fastpix, kick, livepeer, onliverec,",
        ),
        (source(name="has space"), "sources[0].name: 'has space' must be 1-64 letters"),
        (source(name="a/b"), "sources[0].name: 'a/b' must be"),
        (source(name="x" * 65), "sources[0].name: "),
        (source(tolerance="1m"), "sources[0].tolerance: unknown key (only livepeer sources"),
        (source(kind="livepeer", tolerance="0s"), "sources[0].tolerance: must be longer than"),
        (source(kind="livepeer", tolerance="soon"), "sources[0].tolerance: 'soon' is not a"),
    ],
)
def test_source_problems(entry: dict[str, Any], expected: str) -> None:
    assert only_problem({"sources": [entry]}).startswith(expected)


def test_route_match_is_required() -> None:
    assert only_problem({"routes": [{"events": ["live_start"]}]}) == "routes[0].match: is required"


def test_livepeer_tolerance() -> None:
    config = load({"sources": [source(kind="livepeer", tolerance="90s")]})
    assert TOLERANCE.get(config.sources[0]) == timedelta(seconds=90)
    default = load({"sources": [source(kind="livepeer")]})
    assert TOLERANCE.get(default.sources[0]) == timedelta(minutes=5)


def test_secret_env_is_read_from_environ() -> None:
    config = load({"sources": [source(secret=None, secret_env="HOOK")]}, {"HOOK": SECRET})
    assert config.sources[0].secret == SECRET


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "sources[0].secret_env: environment variable HOOK is not set"),
        ({"HOOK": ""}, "sources[0].secret_env: environment variable HOOK is empty"),
    ],
)
def test_secret_env_unset_is_an_error(environ: dict[str, str], expected: str) -> None:
    assert only_problem({"sources": [source(secret=None, secret_env="HOOK")]}, environ) == expected


@pytest.mark.parametrize("section", ["discord", "telegram"])
@pytest.mark.parametrize(
    ("table", "environ", "reason"),
    [
        ({"token_env": "BOT_TOKEN"}, {}, "token_env BOT_TOKEN is not set"),
        ({"token_env": "BOT_TOKEN"}, {"BOT_TOKEN": " \n"}, "token_env BOT_TOKEN is not set"),
        ({"token": ""}, {}, "no token configured"),
        ({}, {}, "no token configured"),
    ],
)
def test_unresolved_token_disables_the_sink(
    section: str, table: dict[str, Any], environ: dict[str, str], reason: str
) -> None:
    sink = load({section: table}, environ).platforms[section]
    assert not sink.enabled
    assert sink.token is None
    assert sink.disabled_reason == reason


@pytest.mark.parametrize("section", ["discord", "telegram"])
def test_token_from_env_or_inline(section: str) -> None:
    from_env = load({section: {"token_env": "BOT_TOKEN"}}, {"BOT_TOKEN": TOKEN}).platforms[section]
    inline = load({section: {"token": TOKEN}}).platforms[section]
    for sink in (from_env, inline):
        assert sink.enabled
        assert sink.token == TOKEN


@pytest.mark.parametrize("section", ["discord", "telegram"])
def test_token_and_token_env_together_is_an_error(section: str) -> None:
    data = {section: {"token": TOKEN, "token_env": "BOT_TOKEN"}}
    assert only_problem(data) == f"{section}: set token or token_env, not both"


def test_discord_options() -> None:
    config = load(
        {
            "discord": {
                "token": TOKEN,
                "api_url": "http://127.0.0.1:9000/api/v10",
                "gateway_url": "ws://127.0.0.1:9000/",
                "guild_ids": ["123456789012345678", 223456789012345678, "123456789012345678"],
            }
        }
    )
    assert config.platforms["discord"].api_url == "http://127.0.0.1:9000/api/v10"
    assert config.platforms["discord"].gateway_url == "ws://127.0.0.1:9000/"
    assert config.platforms["discord"].guild_ids == (123456789012345678, 223456789012345678)


# --- routes ---------------------------------------------------------------------------------


def test_route_values_are_normalised() -> None:
    (route,) = load(
        {
            "routes": [
                {
                    "match": ["twitch/*", "youtube/a", "twitch/*"],
                    "events": ["live_start", "app_launch", "live_start"],
                    "discord_channels": ["123456789012345678", 42],
                    "telegram_chats": [
                        -1001234567890,
                        "-100123",
                        "@channel_1",
                        "007",
                        "-100123/042",
                    ],
                    "mention_roles": ["234567890123456789"],
                }
            ]
        }
    ).routes
    assert route.patterns == ("twitch/*", "youtube/a")
    assert route.events == frozenset({"live_start", "app_launch"})
    assert route.targets_on("discord") == ("123456789012345678", "42")
    assert route.targets_on("telegram") == (
        "-1001234567890",
        "-100123",
        "@channel_1",
        "7",
        "-100123/42",
    )
    assert route.mention_roles == (234567890123456789,)


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (
            {"events": ["live_start", "error", "live_started"]},
            "routes[0].events[2]: unknown event kind 'live_started'; did you mean 'live_start'?",
        ),
        (
            {"events": ["ping"]},
            "routes[0].events[0]: unknown event kind 'ping'; known: app_exit,",
        ),
        ({"events": [5]}, "routes[0].events[0]: expected a string, got integer"),
        ({"telegram_chats": ["mychannel"]}, "routes[0].telegram_chats[0]: expected a chat id"),
        ({"telegram_chats": ["@abc"]}, "routes[0].telegram_chats[0]: expected a chat id"),
        ({"telegram_chats": ["@" + "a" * 33]}, "routes[0].telegram_chats[0]: "),
        ({"telegram_chats": [0]}, "routes[0].telegram_chats[0]: expected a chat id"),
        ({"telegram_chats": ["-100/x"]}, "routes[0].telegram_chats[0]: expected a chat id"),
        (
            {"telegram_chats": ["-1001234567890/1"]},
            "routes[0].telegram_chats[0]: '-1001234567890/1' names the General topic, which"
            " takes no thread id: route to the chat itself, '-1001234567890'",
        ),
        ({"telegram_chats": ["@chan/5"]}, "routes[0].telegram_chats[0]: expected a chat id"),
        ({"telegram_chats": [True]}, "routes[0].telegram_chats[0]: expected a chat id"),
        ({"discord_channels": ["12ab"]}, "routes[0].discord_channels[0]: expected a Discord id"),
        ({"discord_channels": [True]}, "routes[0].discord_channels[0]: expected a Discord id"),
        ({"discord_channels": [1.5]}, "routes[0].discord_channels[0]: expected a Discord id"),
        ({"mention_roles": [-5]}, "routes[0].mention_roles[0]: a Discord id must be a positive"),
        ({"mention_roles": "123"}, "routes[0].mention_roles: expected a list, got string"),
    ],
)
def test_route_problems(route: dict[str, Any], expected: str) -> None:
    message = only_problem({"routes": [{"match": "*", **route}]})
    assert message.startswith(expected)


# --- behaviour and templates -----------------------------------------------------------------


def test_behaviour_values() -> None:
    behaviour = load(
        {
            "behaviour": {
                "on_change": "both",
                "on_end": "delete",
                "end_grace": "90s",
                "rejoin_window": "1h30m",
                "change_cooldown": "0s",
            }
        }
    ).behaviour
    assert behaviour == BehaviourConfig(
        "both", "delete", timedelta(seconds=90), timedelta(minutes=90), timedelta(0)
    )


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ({"on_change": "delete"}, "behaviour.on_change: must be one of both, edit, post, got"),
        ({"on_end": "nothing"}, "behaviour.on_end: must be one of both, delete, edit, post, got"),
        ({"end_grace": "soon"}, "behaviour.end_grace: 'soon' is not a duration; write a number"),
        ({"rejoin_window": 300}, "behaviour.rejoin_window: expected a duration string"),
        ({"change_cooldown": "9" * 30 + "d"}, "behaviour.change_cooldown: "),
    ],
)
def test_behaviour_problems(behaviour: dict[str, Any], expected: str) -> None:
    assert only_problem({"behaviour": behaviour}).startswith(expected)


def test_templates_dir(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    config = load({"templates": {"dir": "mine"}}, base=tmp_path)
    assert config.templates.dir == tmp_path / "mine"
    with pytest.raises(ConfigError) as info:
        load({"templates": {"dir": "missing"}}, base=tmp_path)
    assert info.value.problems == [
        f"templates.dir: directory {tmp_path / 'missing'} does not exist"
    ]
    with pytest.raises(ConfigError) as info:
        load({"templates": {"dir": "file.txt"}}, base=tmp_path)
    assert info.value.problems == [f"templates.dir: {tmp_path / 'file.txt'} is not a directory"]


def test_storage_path_relative_and_absolute(tmp_path: Path) -> None:
    assert load({"storage": {"path": "data/x.db"}}, base=tmp_path).storage.path == (
        tmp_path / "data" / "x.db"
    )
    absolute = tmp_path / "elsewhere.db"
    assert load({"storage": {"path": str(absolute)}}, base=REPO).storage.path == absolute


# --- whole-file behaviour --------------------------------------------------------------------


def test_duplicate_source_names() -> None:
    entries = [source(), source(kind="fastpix"), source(name="other")]
    assert only_problem({"sources": entries}) == (
        "sources[1].name: duplicate source name 'rec' (also sources[0])"
    )


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        {
            "server": {"port": "x", "colour": 1},
            "behaviour": {"on_change": "never"},
            "sources": [source(kind="ustream"), source(name="b", secret=None)],
            "routes": [{"events": ["nope"]}],
        }
    )
    assert [p.split(":", 1)[0] for p in found] == [
        "server.colour",
        "server.port",
        "behaviour.on_change",
        "sources[0].kind",
        "sources[1].secret",
        "routes[0].match",
        "routes[0].events[0]",
    ]


def test_secrets_never_appear_in_reprs_or_problems() -> None:
    config = load(
        {
            "discord": {"token": TOKEN},
            "telegram": {"token_env": "TG"},
            "sources": [
                source(),
                source(name="lp", kind="livepeer", secret=None, secret_env="LP"),
            ],
        },
        {"TG": TOKEN, "LP": SECRET},
    )
    assert config.platforms["discord"].token == TOKEN and config.sources[1].secret == SECRET
    for text in (
        repr(config),
        str(config),
        repr(config.sources),
        repr(config.platforms["discord"]),
    ):
        assert SECRET not in text
        assert TOKEN not in text

    # Every kind of problem a secret-bearing table can have, all in one file.
    with pytest.raises(ConfigError) as info:
        load(
            {
                "discord": {"token": TOKEN, "token_env": "TG", "secret": SECRET},
                "telegram": {"token": TOKEN, "api_url": f"ftp://{TOKEN}@host"},
                "sources": [
                    source(secret_env="LP"),
                    source(name="x y", kind="bogus", secreet=SECRET),
                    source(name="lp", kind="livepeer", secret=None, secret_env="LP", x=SECRET),
                ],
            },
            {"TG": TOKEN, "LP": SECRET},
        )
    err = info.value
    assert len(err.problems) >= 6
    for text in (str(err), repr(err), *err.problems):
        assert SECRET not in text
        assert TOKEN not in text


# --- read_config ----------------------------------------------------------------------------


def test_read_config_resolves_paths_against_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "bot.toml"
    path.parent.mkdir()
    path.write_text('[storage]\npath = "db/bot.sqlite3"\n', encoding="utf-8")
    assert read_config(path, environ={}).storage.path == tmp_path / "conf" / "db" / "bot.sqlite3"


def test_read_config_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text('[server]\nport = 8080\nhost = "unterminated\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_config(path, environ={})
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: invalid TOML: ")
    assert "line 3" in problem


def test_read_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        read_config(path, environ={})
    assert info.value.problems == [f"{path}: file not found"]


def test_read_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_bytes(b'[server]\nhost = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        read_config(path, environ={})
    assert info.value.problems[0].startswith(f"{path}: not UTF-8")


def test_read_config_uses_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMBOT_TEST_TOKEN", TOKEN)
    path = tmp_path / "bot.toml"
    path.write_text('[telegram]\ntoken_env = "STREAMBOT_TEST_TOKEN"\n', encoding="utf-8")
    assert read_config(path).platforms["telegram"].token == TOKEN


def test_config_keys_cover_kind_specific_keys() -> None:
    assert "sources[].tolerance" in CONFIG_KEYS
    assert "server.host" in CONFIG_KEYS
    assert all("." in key for key in CONFIG_KEYS)


def test_delivery_max_age_defaults_to_a_day_and_must_be_a_positive_duration(
    tmp_path: Path,
) -> None:
    assert load_config({}, environ={}, base_dir=tmp_path).delivery.max_age == timedelta(hours=24)
    config = load_config({"delivery": {"max_age": "6h"}}, environ={}, base_dir=tmp_path)
    assert config.delivery.max_age == timedelta(hours=6)
    for bad, message in [("0s", "longer than 0s"), (6, "expected a duration")]:
        with pytest.raises(ConfigError) as info:
            load_config({"delivery": {"max_age": bad}}, environ={}, base_dir=tmp_path)
        assert info.value.problems[0].startswith("delivery.max_age: ")
        assert message in info.value.problems[0]


def test_storage_retention_defaults_to_30_days_and_refuses_less_than_2(tmp_path: Path) -> None:
    assert load_config({}, environ={}, base_dir=tmp_path).storage.retention == timedelta(days=30)
    config = load_config({"storage": {"retention": "90d"}}, environ={}, base_dir=tmp_path)
    assert config.storage.retention == timedelta(days=90)
    assert load_config(
        {"storage": {"retention": "48h"}}, environ={}, base_dir=tmp_path
    ).storage.retention == timedelta(days=2)
    # Zero could mean "keep nothing" or "keep everything": refused, with the way out.
    for bad, message in [
        ("0", "must be at least 2d, got '0'"),
        (0, "must be at least 2d, got 0"),
        ("0s", "must be at least 2d, got '0s'"),
        ("1h", "notified twice); to keep history for good"),
        ("forever", "not a duration"),
        (True, "expected a duration"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_config({"storage": {"retention": bad}}, environ={}, base_dir=tmp_path)
        [problem] = info.value.problems
        assert problem.startswith("storage.retention: ")
        assert message in problem


# --- mistakes that used to pass check and then post nothing ---------------------------


def test_a_route_to_a_platform_that_is_off_is_a_warning_naming_its_key() -> None:
    data = {
        "discord": {"token_env": "DISCORD_TOKEN"},
        "routes": [
            {"match": "twitch/*", "discord_channels": ["123"]},
            {"match": "twitch/*", "telegram_chats": ["-100777"]},
        ],
    }
    config = load(data, environ={})
    assert config.warnings == (
        "routes[0].discord_channels: Discord is off (token_env DISCORD_TOKEN is not set),"
        " so nothing is posted to these; set its token, or remove them",
        "routes[1].telegram_chats: Telegram is off (no [telegram] section), so nothing is"
        " posted to these; set its token, or remove them",
    )
    # With the token there, nothing to warn about on Discord.
    assert len(load(data, environ={"DISCORD_TOKEN": TOKEN}).warnings) == 1


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("quinn", "'quinn' has no platform part, so it matches no streamer"),
        ("https://twitch.tv/quinn", "'https://twitch.tv/quinn' is a URL, not a streamer key"),
        ("www.twitch.tv/quinn", "is a URL, not a streamer key"),
    ],
)
def test_a_match_that_can_never_match_is_refused_with_what_keys_look_like(
    pattern: str, why: str
) -> None:
    problem = only_problem({"routes": [{"match": ["twitch/*", pattern]}]})
    assert problem.startswith("routes[0].match[1]: ") and why in problem
    # It says what keys look like for every source kind, from their samples.
    for example in ("twitch/auroravale (onliverec)", "(livepeer)", "(fastpix)"):
        assert example in problem


def test_globs_without_a_slash_still_work() -> None:
    # "*" and "twitch*" can match "<platform>/<channel>" keys: not refused.
    config = load({"routes": [{"match": ["*"]}, {"match": "twitch*"}]})
    assert [r.patterns for r in config.routes] == [("*",), ("twitch*",)]
    assert config.warnings == ()


def test_a_livepeer_stream_name_where_the_key_has_its_id_is_a_warning() -> None:
    stream_id = "de7818e7-610a-4057-8f6f-b785dc1e6f88"
    config = load(
        {"routes": [{"match": ["livepeer/my-show", f"livepeer/{stream_id}", "livepeer/*"]}]}
    )
    [warning] = config.warnings
    assert warning.startswith("routes[0].match[0]: 'livepeer/my-show' matches no livepeer")
    assert "the stream's id (a UUID" in warning


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"discord": {"token": "$DISCORD_TOKEN"}},
            "discord.token: '$DISCORD_TOKEN' is a shell variable written literally (bot.toml"
            " expands no variables): use token_env = 'DISCORD_TOKEN' instead",
        ),
        (
            {"telegram": {"token": "${TELEGRAM_TOKEN}"}},
            "telegram.token: '${TELEGRAM_TOKEN}' is a shell variable written literally",
        ),
        (
            {"sources": [source(secret="$REC_SECRET")], "routes": []},
            "sources[0].secret: '$REC_SECRET' is a shell variable written literally (bot.toml"
            " expands no variables): use secret_env = 'REC_SECRET' instead",
        ),
        (
            {"metrics": {"token": "$METRICS_TOKEN"}},
            "metrics.token: '$METRICS_TOKEN' is a shell variable written literally",
        ),
        (
            {"discord": {"token_env": "$DISCORD_TOKEN"}},
            "discord.token_env: write the variable's name without the $: token_env ="
            " 'DISCORD_TOKEN'",
        ),
    ],
)
def test_a_shell_variable_written_literally_is_an_error(
    data: dict[str, Any], expected: str
) -> None:
    assert only_problem(data).startswith(expected)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"telegram": {"token_env": "123456789:" + TOKEN}},
            "telegram.token_env: must name an environment variable (letters, digits and _);"
            " the value looks like a token (not shown): set token instead",
        ),
        (
            {"sources": [source(secret=None, secret_env=SECRET)], "routes": []},
            "sources[0].secret_env: must name an environment variable (letters, digits and"
            " _); the value looks like a secret (not shown): set secret instead",
        ),
        (
            {"metrics": {"token_env": TOKEN}},
            "metrics.token_env: must name an environment variable",
        ),
    ],
)
def test_a_secret_pasted_into_an_env_key_is_never_echoed(
    data: dict[str, Any], expected: str
) -> None:
    problem = only_problem(data)
    assert problem.startswith(expected)
    assert TOKEN not in problem and SECRET not in problem


def test_a_path_starting_with_a_tilde_is_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "tpl").mkdir(parents=True)
    config = load({"storage": {"path": "~/bot.sqlite3"}, "templates": {"dir": "~/tpl"}}, base=REPO)
    assert config.storage.path == tmp_path / "home" / "bot.sqlite3"
    assert config.templates.dir == tmp_path / "home" / "tpl"
