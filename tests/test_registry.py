"""The source registry: every registered spec is complete, and a new kind needs nothing else.

`PING` is a whole extra source in a few lines: added to a copy of the registry (passed
where kinds are looked up, nothing patched), config, init and the samples take it.
"""

from __future__ import annotations

import hmac
import io
import re
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Final

import pytest

from bot import events as ev
from bot.config import CONFIG_KEYS, SourceConfig, config_keys, load_config, read_config
from bot.errors import AuthError, ConfigError
from bot.events import Event
from bot.init import InitOptions, Source, run_init, setup_text
from bot.registry import KNOWN_KINDS, SOURCES, known_kinds
from bot.samples import parse_sample, sample_event
from bot.sources.base import Fields, WebhookRequest
from bot.sources.spec import Credential, DurationOption, SourceSpec

REPO = Path(__file__).parents[1]
PUBLIC = "https://bot.example.com"
SECRET = "s3cr3t-Pangolin-Tapir-5521"
NOW = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)

# -- a source that exists only in this file ---------------------------------------------

COOLDOWN: Final = DurationOption("cooldown", default=timedelta(minutes=1), positive=True)
PING_TYPES: Final[Mapping[str, str]] = {
    "up": ev.LIVE_START,
    "down": ev.LIVE_END,
    "note": "ping.note",
}


class PingSource:
    """A pinger that says when a host is up or down; the secret is `?token=`."""

    kind: ClassVar[str] = "ping"

    def __init__(self, config: SourceConfig) -> None:
        self._name = config.name
        self._secret = config.secret.encode()
        self.cooldown = COOLDOWN.get(config)

    @property
    def name(self) -> str:
        return self._name

    def verify(self, request: WebhookRequest) -> None:
        token = request.query.get("token")
        if not self._secret or token is None:
            raise AuthError()
        if not hmac.compare_digest(token.encode(), self._secret):
            raise AuthError()

    def parse(self, payload: Mapping[str, Any], request: WebhookRequest) -> Event | None:
        top = Fields(payload)
        kind = PING_TYPES.get(top.req_str("what"))
        if kind is None:
            return None
        return Event(
            source=self._name,
            event_id=top.req_str("id"),
            kind=kind,
            occurred_at=request.received_at,
            received_at=request.received_at,
            platform="ping",
            channel=top.req_str("host"),
            display_name=top.string("label"),
        )


PING: Final = SourceSpec(
    kind="ping",
    title="Ping",
    build=PingSource,
    credential=Credential.QUERY_KEY,
    event_types=PING_TYPES,
    webhook_url="{url}?token={secret}",
    setup="Ping: add this hook to the pinger:\n  {webhook_url}",
    samples={
        what: {"id": f"ping-{what}", "what": what, "host": "db1", "label": "Database"}
        for what in PING_TYPES
    },
    options=(COOLDOWN,),
)
REGISTRY: Final = {**SOURCES, "ping": PING}

# -- every spec is complete ---------------------------------------------------------------

ALL_SPECS = [*SOURCES.values(), PING]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda spec: spec.kind)
def test_each_spec_builds_its_own_kind(spec: SourceSpec) -> None:
    assert REGISTRY[spec.kind] is spec
    source = spec.build(SourceConfig(name="x", kind=spec.kind, secret=SECRET))
    assert type(source).kind == spec.kind
    assert source.name == "x"


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda spec: spec.kind)
def test_each_event_type_has_a_sample_that_parses_to_its_kind(spec: SourceSpec) -> None:
    assert set(spec.samples) == set(spec.event_types)
    ids = set()
    for event_type, kind in spec.event_types.items():
        event = parse_sample(spec, event_type)
        assert (event_type, event.kind) == (event_type, kind)
        assert event.kind in known_kinds(REGISTRY)
        assert event.source == spec.kind
        ids.add(event.event_id)
    # Distinct ids, so the samples of one source could all be stored side by side.
    assert len(ids) == len(spec.event_types)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda spec: spec.kind)
def test_each_setup_text_names_the_webhook_url_and_the_secret(spec: SourceSpec) -> None:
    assert "{url}" in spec.webhook_url
    # Only a query-key source may put its secret in the URL; a signed one never needs to.
    assert ("{secret}" in spec.webhook_url) == (spec.credential is Credential.QUERY_KEY)
    assert "{webhook_url}" in spec.setup
    source = (
        Source(name="hook", kind=spec.kind, secret=SECRET)
        if spec.credential.bot_makes_secret
        else Source(name="hook", kind=spec.kind, secret_env=spec.secret_env)
    )
    text = setup_text(Path("/etc/bot.toml"), PUBLIC, source, spec)
    assert spec.url_for(f"{PUBLIC}/webhook/hook", SECRET) in text
    # Whoever makes the secret, the user is told where it goes.
    if spec.credential is Credential.HMAC_SHARED:
        assert SECRET in text
    if spec.credential is Credential.HMAC_PROVIDER:
        assert spec.secret_env is not None and spec.secret_env in text
    if spec.credential is Credential.HMAC_BY_API:
        # The bot hands the secret over itself: the instructions need not show it.
        assert SECRET not in text


@pytest.mark.parametrize("spec", SOURCES.values(), ids=lambda spec: spec.kind)
def test_each_registered_kind_and_its_keys_are_documented(spec: SourceSpec) -> None:
    example = (REPO / "bot.toml.example").read_text(encoding="utf-8")
    configuration = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert re.search(rf'^(# )?kind = "{spec.kind}"', example, re.M), spec.kind
    assert f"`{spec.kind}`" in (REPO / "README.md").read_text(encoding="utf-8")
    assert f"## {spec.title}\n" in (REPO / "docs" / "sources.md").read_text(encoding="utf-8")
    for key in spec.option_keys:
        assert f"sources[].{key}" in CONFIG_KEYS
        # A credential's inline form may be shown as the alternative to its `_env` key
        # (`client_secret_env = "..."  # or client_secret = "..."`): uncommenting both
        # would set it twice.
        shown = re.search(rf"^(# )?{key} = ", example, re.M) or re.search(
            rf"# or {key} = ", example
        )
        assert shown, key
        assert f"`{key}`" in configuration, key
    if spec.secret_env is not None:
        assert spec.secret_env in example


def test_known_kinds_are_the_core_kinds_and_every_sources_own() -> None:
    assert set(ev.CORE_KINDS) <= KNOWN_KINDS
    for spec in SOURCES.values():
        assert set(spec.event_types.values()) <= KNOWN_KINDS
    assert known_kinds(REGISTRY) == KNOWN_KINDS | {"ping.note"}


def test_a_provider_made_secret_needs_its_environment_variable() -> None:
    with pytest.raises(ValueError, match="secret_env"):
        SourceSpec(
            kind="x",
            title="X",
            build=PingSource,
            credential=Credential.HMAC_PROVIDER,
            event_types={},
            setup="{webhook_url}",
            samples={},
        )


# -- a new kind needs only its spec in the registry ----------------------------------------


def ping_entry(**changes: Any) -> dict[str, Any]:
    return {"name": "pinger", "kind": "ping", "secret": SECRET, **changes}


def test_config_accepts_the_new_kind_its_option_and_its_event_kinds(tmp_path: Path) -> None:
    data = {
        "sources": [ping_entry(cooldown="30s")],
        "routes": [{"match": "ping/*", "events": ["ping.note", "live_start"]}],
    }
    config = load_config(data, environ={}, base_dir=tmp_path, registry=REGISTRY)
    (entry,) = config.sources
    assert (entry.name, entry.kind, entry.secret) == ("pinger", "ping", SECRET)
    source = PING.build(entry)
    assert isinstance(source, PingSource) and source.cooldown == timedelta(seconds=30)
    assert config.routes[0].events == {"ping.note", "live_start"}
    assert "sources[].cooldown" in config_keys(REGISTRY)
    assert "sources[].cooldown" not in CONFIG_KEYS


def test_config_names_the_new_kinds_keys_in_its_problems(tmp_path: Path) -> None:
    def problems(data: dict[str, Any], registry: Mapping[str, SourceSpec]) -> list[str]:
        with pytest.raises(ConfigError) as info:
            load_config(data, environ={}, base_dir=tmp_path, registry=registry)
        return info.value.problems

    other = {"name": "rec", "kind": "onliverec", "secret": SECRET, "cooldown": "1m"}
    assert problems({"sources": [other]}, REGISTRY) == [
        "sources[0].cooldown: unknown key (only ping sources take it)"
    ]
    assert problems({"sources": [ping_entry(cooldown="0s")]}, REGISTRY) == [
        "sources[0].cooldown: must be longer than 0s"
    ]
    # Without its registry line the kind does not exist.
    (problem,) = problems({"sources": [ping_entry()]}, SOURCES)
    assert (
        problem
        == "sources[0].kind: must be one of fastpix, kick, livepeer, onliverec, twitch, webhook,"
        " got 'ping'"
    )
    (problem,) = problems({"routes": [{"match": "*", "events": ["ping.note"]}]}, SOURCES)
    assert problem.startswith("routes[0].events[0]: unknown event kind 'ping.note'")


def test_init_offers_writes_and_explains_the_new_kind(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    out = io.StringIO()
    options = InitOptions(config=path, sources=["onliverec", "ping"], public_url=PUBLIC)
    assert run_init(options, ask=None, out=out, registry=REGISTRY) == 0
    text = path.read_text(encoding="utf-8")
    written = tomllib.loads(text)
    rec, ping = written["sources"]
    assert (ping["name"], ping["kind"]) == ("ping", "ping")
    assert len(ping["secret"]) >= 43 and ping["secret"] != rec["secret"]
    assert f"# Ping posts to {PUBLIC}/webhook/ping?token=<the secret below>\n" in text
    assert f"  Ping: add this hook to the pinger:\n    {PUBLIC}/webhook/ping?token=" in (
        out.getvalue()
    )
    assert f"{PUBLIC}/webhook/ping?token={ping['secret']}" in out.getvalue()
    loaded = read_config(path, environ={}, registry=REGISTRY)
    assert [s.kind for s in loaded.sources] == ["onliverec", "ping"]


def test_init_asks_with_the_new_kind_on_the_list(tmp_path: Path) -> None:
    answers = iter(["ping", "n", "n", "", "", ""])
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    path = tmp_path / "bot.toml"
    assert run_init(InitOptions(config=path), ask=ask, out=io.StringIO(), registry=REGISTRY) == 0
    assert (
        "(onliverec, livepeer, fastpix, twitch, kick, webhook, ping; comma-separated)"
        in prompts[0]
    )
    assert [s["kind"] for s in tomllib.loads(path.read_text())["sources"]] == ["ping"]


def test_init_without_the_registry_line_refuses_the_kind(tmp_path: Path) -> None:
    err = io.StringIO()
    options = InitOptions(config=tmp_path / "bot.toml", sources=["ping"])
    assert run_init(options, ask=None, out=io.StringIO(), err=err) == 2
    assert "--source: unknown source 'ping'; choose from onliverec, livepeer, fastpix" in (
        err.getvalue()
    )


def test_samples_come_from_the_new_kind_and_earlier_kinds_keep_theirs() -> None:
    note = sample_event("ping.note", REGISTRY)
    assert (note.kind, note.streamer_key, note.name) == ("ping.note", "ping/db1", "Database")
    # live_start is the first registered source's, however many others report it.
    assert sample_event("live_start", REGISTRY) == sample_event("live_start")
    assert sample_event("live_start").source == next(iter(SOURCES))
    with pytest.raises(ValueError, match=re.escape("unknown event kind 'ping.note'")):
        sample_event("ping.note")


def test_the_new_source_verifies_and_parses_a_request_from_its_config(tmp_path: Path) -> None:
    config = load_config(
        {"sources": [ping_entry()]}, environ={}, base_dir=tmp_path, registry=REGISTRY
    )
    source = REGISTRY[config.sources[0].kind].build(config.sources[0])
    body = b'{"id": "1", "what": "up", "host": "db1"}'
    good = WebhookRequest(query={"token": SECRET}, headers={}, body=body, received_at=NOW)
    source.verify(good)
    event = source.parse(PING.samples["up"], good)
    assert event is not None and event.kind == ev.LIVE_START
    with pytest.raises(AuthError):
        source.verify(
            WebhookRequest(query={"token": "no"}, headers={}, body=body, received_at=NOW)
        )
