"""`python -m bot init`: ask a few questions (or read flags) and write a working bot.toml.

The file gets fresh random webhook secrets where the bot may choose them (OneLiveRec's
`?key=`, Livepeer's `sharedSecret`), an environment variable where the provider makes
its own (FastPix's Signing Secret), `token_env` for the chat tokens (never a token), and
one catch-all route so the console shows every event. It is written readable by its
owner only and never over an existing file without `force`. What to offer and what to
tell the user about each source comes from its spec in `bot.registry.SOURCES`.

Nothing here uses `logging`: the secrets are printed once, on purpose, for the user to
paste into the providers, and must not end up in a log.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shlex
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar
from urllib.parse import urlsplit

import tomli_w

from bot.registry import SOURCES
from bot.sources.spec import SourceSpec
from bot.store import DEFAULT_DATABASE

#: Reads one answer; called with the prompt (`input` in a terminal, a script in tests).
Ask = Callable[[str], str]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080
DISCORD_TOKEN_ENV: Final = "DISCORD_TOKEN"
TELEGRAM_TOKEN_ENV: Final = "TELEGRAM_TOKEN"
#: 32 random bytes: 43 URL-safe characters, so it needs no escaping in `?key=`.
SECRET_BYTES: Final = 32

#: Route keys a user adds to post in chats: commented out in the file, printed as a hint.
DISCORD_ROUTE_KEYS: Final = (
    'discord_channels = ["123456789012345678"]  # Developer Mode, right-click, Copy ID',
    'mention_roles = ["234567890123456789"]     # roles pinged on live_start only',
)
TELEGRAM_ROUTE_KEYS: Final = (
    'telegram_chats = ["-1001234567890"]        # /help in the chat shows its id',
)

_T = TypeVar("_T")
_YES: Final = frozenset({"y", "yes", "true", "1"})
_NO: Final = frozenset({"n", "no", "false", "0"})
# Never valid unescaped in a URL, and they would break the printed shell commands.
_BAD_URL_CHARS: Final = re.compile(r"[\s\x00-\x1f\x7f\"'<>\\`]")
_WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class InitOptions:
    """What the command line said; None means "not given" (ask, or use the default)."""

    config: Path
    sources: Sequence[str] | None = None
    discord: bool | None = None
    telegram: bool | None = None
    public_url: str | None = None
    host: str | None = None
    port: int | None = None
    force: bool = False
    #: Whether init runs in a container; None: look (running_in_container).
    in_container: bool | None = None

    @property
    def answers_given(self) -> bool:
        """True when any question was answered by a flag: then nothing is asked."""
        return any(
            value is not None
            for value in (
                self.sources,
                self.discord,
                self.telegram,
                self.public_url,
                self.host,
                self.port,
            )
        )


@dataclass(frozen=True, slots=True)
class Answers:
    """The choices the config file is written from, all checked."""

    sources: tuple[str, ...]
    discord: bool
    telegram: bool
    host: str
    port: int
    public_url: str
    #: What the user typed for a kind's `init_questions` (kind -> key -> answer).
    source_values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Source:
    """One `[[sources]]` entry as written: `secret` when the bot chose it, else `secret_env`."""

    name: str
    kind: str
    secret: str | None = None
    secret_env: str | None = None


def run_init(
    options: InitOptions,
    *,
    ask: Ask | None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    registry: Mapping[str, SourceSpec] = SOURCES,
) -> int:
    """Gather the answers, write the config and print what to do next; the exit code.

    `ask` is None when nobody can answer (stdin is not a terminal): then flags and
    defaults decide. Questions are also skipped when any answer came as a flag.
    `registry` holds the source kinds offered, in order (the first is the default).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    path = options.config
    exists = f"error: {path} already exists; pass --force to replace it"
    # Checked before any question, so nobody answers them all only to be refused.
    if path.exists() and not options.force:
        print(exists, file=err)
        return 1
    contained = running_in_container() if options.in_container is None else options.in_container
    if ask is not None and not options.answers_given:
        try:
            answers = _ask_all(ask, out, registry, in_container=contained)
        except (EOFError, KeyboardInterrupt):
            print("\ninit cancelled; nothing written", file=err)
            return 1
    else:
        try:
            answers = _from_flags(options, registry, in_container=contained)
        except _FlagError as exc:
            print(f"error: {exc}", file=err)
            return 2
    sources = new_sources(answers.sources, registry)
    try:
        write_private(path, render_config(answers, sources, registry), force=options.force)
    except FileExistsError:  # created since the check above
        print(exists, file=err)
        return 1
    except OSError as exc:
        print(f"error: cannot write {path}: {exc.strerror or exc}", file=err)
        return 1
    print(instructions(path, answers, sources, registry), file=out)
    return 0


# -- answers ---------------------------------------------------------------------------


class _FlagError(Exception):
    """A flag's value is not usable; the message names the flag."""


def default_sources(registry: Mapping[str, SourceSpec] = SOURCES) -> tuple[str, ...]:
    """The sources init suggests: the first registered kind."""
    return tuple(registry)[:1]


def running_in_container() -> bool:
    """True inside Docker (/.dockerenv) or Podman (/run/.containerenv, $container)."""
    markers = (Path("/.dockerenv"), Path("/run/.containerenv"))
    # systemd-nspawn and Podman set "container" (lower case, by their convention).
    return any(marker.exists() for marker in markers) or bool(
        os.environ.get("container")  # noqa: SIM112
    )


def default_host(*, in_container: bool, public_url: str | None = None) -> str:
    """Where to listen unless told: this machine only, except where that cannot work.

    In a container a published port reaches the container's own interface, never its
    loopback, so 127.0.0.1 would leave the bot (and the image's HEALTHCHECK, which asks
    through the port) unreachable. Given a public URL that is not on this machine or
    network, the providers must reach the bot from outside: every interface as well.
    """
    if in_container or (public_url is not None and not _unreachable(public_url)):
        return "0.0.0.0"
    return DEFAULT_HOST


def _from_flags(
    options: InitOptions, registry: Mapping[str, SourceSpec], *, in_container: bool
) -> Answers:
    """Answers from the flags, defaults for what they leave out."""

    def check(flag: str, parse: Callable[[str], _T], value: str) -> _T:
        try:
            return parse(value)
        except ValueError as exc:
            raise _FlagError(f"{flag}: {exc}") from None

    sources = (
        check("--source", lambda text: parse_sources(text, registry), ",".join(options.sources))
        if options.sources is not None
        else default_sources(registry)
    )
    public = (
        check("--public-url", parse_public_url, options.public_url)
        if options.public_url is not None
        else None
    )
    host = (
        check("--host", parse_host, options.host)
        if options.host is not None
        else default_host(in_container=in_container, public_url=public)
    )
    port = (
        check("--port", parse_port, str(options.port))
        if options.port is not None
        else DEFAULT_PORT
    )
    public_url = public if public is not None else default_public_url(host, port)
    return Answers(
        sources=sources,
        discord=bool(options.discord),
        telegram=bool(options.telegram),
        host=host,
        port=port,
        public_url=public_url,
    )


def _ask_all(
    ask: Ask, out: TextIO, registry: Mapping[str, SourceSpec], *, in_container: bool
) -> Answers:
    print("Set up a new bot.toml. Press Enter to take the suggestion in brackets.", file=out)
    sources = _ask(
        ask,
        out,
        f"Webhook sources ({', '.join(registry)}; comma-separated)",
        ",".join(default_sources(registry)),
        lambda text: parse_sources(text, registry),
    )
    source_values = {
        kind: {
            key: _ask(ask, out, question, str(registry[kind].init_values[key]), _non_empty)
            for key, question in registry[kind].init_questions.items()
        }
        for kind in sources
        if registry[kind].init_questions
    }
    discord = _ask(ask, out, "Post to Discord? (y/n)", "n", parse_yes_no)
    telegram = _ask(ask, out, "Post to Telegram? (y/n)", "n", parse_yes_no)
    host = _ask(
        ask,
        out,
        "Listen on which address? (127.0.0.1: this machine only, behind a proxy; "
        "0.0.0.0: every interface, e.g. in a container)",
        default_host(in_container=in_container),
        parse_host,
    )
    port = _ask(ask, out, "Port", str(DEFAULT_PORT), parse_port)
    public_url = _ask(
        ask,
        out,
        "Public base URL the providers will send webhooks to",
        default_public_url(host, port),
        parse_public_url,
    )
    return Answers(
        sources=sources,
        discord=discord,
        telegram=telegram,
        host=host,
        port=port,
        public_url=public_url,
        source_values=source_values,
    )


def _non_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("it must not be empty")
    return text.strip()


def _ask(ask: Ask, out: TextIO, question: str, default: str, parse: Callable[[str], _T]) -> _T:
    """Ask until the answer parses; an empty answer takes `default`."""
    while True:
        answer = ask(f"{question} [{default}]: ").strip() or default
        try:
            return parse(answer)
        except ValueError as exc:
            print(f"  {exc}; try again", file=out)


def parse_sources(text: str, registry: Mapping[str, SourceSpec] = SOURCES) -> tuple[str, ...]:
    """Source kinds from "onliverec, livepeer" (commas or spaces), each once, in order."""
    kinds: list[str] = []
    offered = ", ".join(registry)
    for word in re.split(r"[,\s]+", text.strip().lower()):
        if not word:
            continue
        if word not in registry:
            raise ValueError(f"unknown source {word!r}; choose from {offered}")
        if word not in kinds:
            kinds.append(word)
    if not kinds:
        raise ValueError(f"name at least one source: {offered}")
    return tuple(kinds)


def parse_yes_no(text: str) -> bool:
    """True for y/yes, False for n/no."""
    word = text.strip().lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise ValueError("answer y or n")


def parse_host(text: str) -> str:
    """An address to listen on: an IP address or a host name, without spaces."""
    host = text.strip()
    if not host or _BAD_URL_CHARS.search(host) or "/" in host:
        raise ValueError(f"{text!r} is not an address, e.g. 127.0.0.1 or 0.0.0.0")
    return host


def parse_port(text: str) -> int:
    """A TCP port, 1-65535."""
    try:
        port = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"a port is 1-65535, got {port}")
    return port


def parse_public_url(text: str) -> str:
    """An http(s) base URL without query or fragment, trailing slash removed."""
    url = text.strip()
    if _BAD_URL_CHARS.search(url):
        raise ValueError("a URL has no spaces, quotes or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an absolute http:// or https:// URL, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError("expected a base URL without ?query or #fragment")
    return url.rstrip("/")


def default_public_url(host: str, port: int) -> str:
    """`http://<host>:<port>`; a wildcard address becomes localhost, which can be reached."""
    if host in _WILDCARD_HOSTS:
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


# -- the file --------------------------------------------------------------------------


def new_sources(
    kinds: Sequence[str], registry: Mapping[str, SourceSpec] = SOURCES
) -> tuple[Source, ...]:
    """One source per kind, named after it, with a fresh secret where the bot picks it."""
    return tuple(
        Source(name=kind, kind=kind, secret=secrets.token_urlsafe(SECRET_BYTES))
        if registry[kind].credential.bot_makes_secret
        else Source(name=kind, kind=kind, secret_env=registry[kind].secret_env)
        if registry[kind].credential.uses_secret
        else Source(name=kind, kind=kind)
        for kind in kinds
    )


def render_config(
    answers: Answers, sources: Sequence[Source], registry: Mapping[str, SourceSpec] = SOURCES
) -> str:
    """The bot.toml text: each table's keys written (and escaped) by tomli-w, with comments.

    Tables are assembled one by one because tomli-w writes short arrays of tables inline
    (`sources = [{...}]`), where neither `[[sources]]` headers nor comments would fit.
    """
    public = answers.public_url
    parts = [
        "# streambot configuration, written by `python -m bot init`. Every key is described\n"
        "# in docs/configuration.md; `python -m bot check -c <this file>` checks it.\n"
        "# It holds webhook secrets: keep it readable by the bot's user only.\n",
        _table(
            "server",
            {"host": answers.host, "port": answers.port, "public_url": public},
            "Providers reach this listener through public_url",
        ),
        _table("storage", {"path": DEFAULT_DATABASE}, "The database, beside this file"),
        _table("console", {"enabled": True}, "Print every notification to stdout"),
    ]
    if answers.discord:
        parts.append(
            _table(
                "discord",
                {"token_env": DISCORD_TOKEN_ENV},
                "The bot token is read from this environment variable, never from here",
            )
            + '# guild_ids = ["123456789012345678"]   # servers where slash commands'
            " appear at once\n"
        )
    if answers.telegram:
        parts.append(
            _table(
                "telegram",
                {"token_env": TELEGRAM_TOKEN_ENV},
                "The bot token (from @BotFather) is read from this environment variable",
            )
        )
    for source in sources:
        values: dict[str, object] = {"name": source.name, "kind": source.kind}
        if source.secret is not None:
            values["secret"] = source.secret
        elif source.secret_env is not None:
            values["secret_env"] = source.secret_env
        # Placeholders a kind needs to pass check (the comment says to edit them), and
        # what the user typed for those init asked about.
        url = webhook_url(public, source)
        for key, value in registry[source.kind].init_values.items():
            values[key] = value.replace("{webhook_url}", url) if isinstance(value, str) else value
        values.update(answers.source_values.get(source.kind, {}))
        comment = _source_comment(source, public, registry[source.kind])
        parts.append(_table("sources", values, comment, array=True))
    route_keys = _route_keys(answers)
    route = _table(
        "routes",
        {"match": "*"},
        "Every streamer's events; the console prints them."
        + ("\nUncomment and fill in to post them in chats too:" if route_keys else ""),
        array=True,
    )
    route += "".join(f"# {line}\n" for line in route_keys)
    parts.append(route)
    return "\n".join(parts)


def _route_keys(answers: Answers) -> tuple[str, ...]:
    return (DISCORD_ROUTE_KEYS if answers.discord else ()) + (
        TELEGRAM_ROUTE_KEYS if answers.telegram else ()
    )


def _table(name: str, values: Mapping[str, Any], comment: str, *, array: bool = False) -> str:
    header = f"[[{name}]]" if array else f"[{name}]"
    comments = "".join(f"# {line}\n" for line in comment.splitlines())
    return f"{comments}{header}\n{tomli_w.dumps(values)}"


def _source_comment(source: Source, public: str, spec: SourceSpec) -> str:
    url = spec.url_for(webhook_url(public, source), "<the secret below>")
    comment = f"{spec.title} posts to {url}"
    if spec.config_note:
        comment += ",\n" + spec.config_note.format(secret_env=source.secret_env)
    return comment


def write_private(path: Path, text: str, *, force: bool) -> None:
    """Write `text` to `path` with mode 0600; FileExistsError if it exists and not `force`.

    Without `force` the file is created exclusively, so a file that appeared since the
    first check is not overwritten either. With it, the new file is written beside the
    old one and renamed over it: the old file stays whole if writing fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    if not force:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:  # mkstemp creates it 0600
            file.write(data)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


# -- what to do next -------------------------------------------------------------------


def webhook_url(public_url: str, source: Source) -> str:
    """The source's route, `<public>/webhook/<name>` (a spec's URL form may add to it)."""
    return f"{public_url}/webhook/{source.name}"


def setup_text(path: Path, public_url: str, source: Source, spec: SourceSpec) -> str:
    """How to point the provider at this source: its spec's setup text, filled in."""
    url = webhook_url(public_url, source)
    secret = source.secret or ""
    return spec.setup.format(
        url=url,
        secret=secret,
        webhook_url=spec.url_for(url, secret),
        name=source.name,
        secret_env=source.secret_env or "",
        config=path,
    )


def instructions(
    path: Path,
    answers: Answers,
    sources: Sequence[Source],
    registry: Mapping[str, SourceSpec] = SOURCES,
) -> str:
    """What the user does next: the URL for each provider, tokens, routes, check, run."""
    config = shlex.quote(str(path))
    lines = [
        f"Wrote {path} (readable only by you: it holds webhook secrets).",
        "",
        "Point each provider at the bot:",
    ]
    for source in sources:
        setup = setup_text(path, answers.public_url, source, registry[source.kind])
        lines.append("")
        lines += [f"  {line}" for line in setup.splitlines()]
    cloud = [registry[s.kind].title for s in sources if registry[s.kind].from_internet]
    if cloud and _unreachable(answers.public_url):
        lines += [
            "",
            f"Note: {' and '.join(cloud)} deliver{'s' * (len(cloud) == 1)} from the internet"
            " and cannot reach"
            f" {answers.public_url}.",
            "Run init again with --public-url https://<your public name> --force.",
        ]
    if urlsplit(answers.public_url).scheme.lower() == "http" and not _unreachable(
        answers.public_url
    ):
        lines += [
            "",
            "Note: the bot speaks plain HTTP; put a TLS reverse proxy in front of it and use",
            "its https:// address (docs/deployment.md).",
        ]
    lines += ["", "Next steps:"]
    steps: list[str] = []
    if answers.discord:
        steps.append(
            f"Discord: create an application in the Discord developer portal, copy its bot\n"
            f"   token and set {DISCORD_TOKEN_ENV} in the bot's environment. At start the bot"
            f" logs\n   'discord: invite the bot to a server with https://...': open that link"
            " to add it."
        )
    if answers.telegram:
        steps.append(
            f"Telegram: ask @BotFather (/newbot) for a token and set {TELEGRAM_TOKEN_ENV} in\n"
            "   the bot's environment. Add the bot to your group, or to your channel as an\n"
            "   admin allowed to post."
        )
    route_keys = _route_keys(answers)
    if route_keys:
        steps.append(
            f"Say where to post: add to the [[routes]] entry in {path}:\n"
            + "\n".join(f"     {line}" for line in route_keys)
        )
    steps += [
        f"Check the file: python -m bot check -c {config}",
        f"Start the bot:  python -m bot run -c {config}",
    ]
    lines += [f"{number}. {step}" for number, step in enumerate(steps, start=1)]
    return "\n".join(lines)


def _unreachable(public_url: str) -> bool:
    """True for localhost and loopback, private or link-local addresses."""
    host = (urlsplit(public_url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local
