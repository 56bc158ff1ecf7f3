"""What a source declares about itself: config keys, credential, event types, setup, samples.

One `SourceSpec` per provider module (`SPEC = SourceSpec(...)`), listed in
`bot.registry.SOURCES`. The config loader, `init`, the event-kind list and the sample
events are all derived from these, so a new source is its module plus one registry line
(Red-DiscordBot's `streamtypes.py` classes describe themselves the same way).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from bot.config import SourceConfig
    from bot.sources.base import Source


_T = TypeVar("_T")


class Credential(enum.Enum):
    """How a request proves it knows the source's secret, and who makes that secret."""

    #: The secret travels in the URL (`?key=<secret>`); the bot makes it.
    QUERY_KEY = "query key"
    #: The provider signs the body with an HMAC of a secret the bot made and handed over.
    HMAC_SHARED = "HMAC signature, secret made by the bot"
    #: The provider signs with a secret it made itself; the bot is told it (`secret_env`).
    HMAC_PROVIDER = "HMAC signature, secret made by the provider"
    #: The provider signs with a secret the bot made and gives it through the provider's
    #: API (Twitch EventSub, with each subscription): the user never handles it.
    HMAC_BY_API = "HMAC signature, secret made by the bot and given through the API"
    #: The provider signs with its private key; the bot checks with the public one (Kick).
    #: There is no shared secret: `secret` / `secret_env` are not keys of such a source.
    PROVIDER_KEY = "signature with the provider's key pair, checked with its public key"

    @property
    def uses_secret(self) -> bool:
        """True when the source has a shared webhook secret (`secret` / `secret_env`)."""
        return self is not Credential.PROVIDER_KEY

    @property
    def bot_makes_secret(self) -> bool:
        """True when `init` may write a fresh random secret, False when it must ask for one
        (or, without a shared secret, write none)."""
        return self not in (Credential.HMAC_PROVIDER, Credential.PROVIDER_KEY)


class OptionTable(Protocol):
    """The typed reads a source option may make from its `[[sources]]` table.

    The config loader's table implements these; each records a problem naming the key
    (`sources[2].tolerance: ...`) and returns the default instead of raising.
    """

    def duration(self, key: str, default: timedelta, *, positive: bool = False) -> timedelta:
        """A duration string such as "90s" or "5m", or `default`."""
        ...

    def text(self, key: str, default: str) -> str:
        """A non-empty string, or `default`."""
        ...

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        """An integer in `low..high`, or `default`."""
        ...

    def flag(self, key: str, default: bool) -> bool:
        """A boolean, or `default`."""
        ...

    def choice(
        self, key: str, default: str, choices: Collection[str], *, required: bool = False
    ) -> str:
        """One of `choices`, or `default`."""
        ...

    def url(self, key: str, schemes: tuple[str, ...]) -> str | None:
        """An absolute URL with one of `schemes`, or None."""
        ...

    def mapping(self, key: str) -> dict[str, str] | None:
        """A table of strings (`[sources.fields]`), None when absent or not a table.

        An entry that is not a string is recorded as a problem naming it
        (`sources[2].fields.title: ...`) and left out.
        """
        ...

    def secret(self, key: str, *, required: bool) -> str | None:
        """A credential given as `key` or through the variable `<key>_env` names (never
        both); None when absent (a problem when `required`) or wrong. Never echoed."""
        ...

    def strings(self, key: str) -> list[str] | None:
        """A list of non-empty strings, None when absent; a wrong item is a problem naming
        it (`sources[2].channels[1]: ...`) and is left out."""
        ...

    def warn(self, key: str, message: str) -> None:
        """Record a warning about `key`: allowed, but probably not what was meant."""
        ...

    def has(self, key: str) -> bool:
        """True when the table sets `key` (to anything, right or wrong)."""
        ...

    def problem(self, key: str, message: str) -> None:
        """Record a problem with `key` (a dotted path below this table, see `entry_key`)."""
        ...


def entry_key(key: str, name: str) -> str:
    """The path of entry `name` in the table option `key`: `fields.title`, `kinds."a.b"`."""
    bare = re.fullmatch(r"[A-Za-z0-9_-]+", name) is not None
    return f"{key}.{name}" if bare else f"{key}.{json.dumps(name, ensure_ascii=False)}"


class SourceOption(Protocol):
    """One kind-specific `[[sources]]` key: its name, and how its value is read and checked."""

    @property
    def key(self) -> str:
        """The key as written in bot.toml."""
        ...

    def read(self, table: OptionTable) -> object:
        """The checked value (the default when the key is absent or wrong)."""
        ...


@dataclass(frozen=True, slots=True)
class DurationOption:
    """A duration key such as Livepeer's `tolerance`; `get` reads it back from a SourceConfig."""

    key: str
    default: timedelta
    positive: bool = False

    def read(self, table: OptionTable) -> timedelta:
        """The duration, or the default; a bad value is recorded as a problem with the key."""
        return table.duration(self.key, self.default, positive=self.positive)

    def get(self, config: SourceConfig) -> timedelta:
        """This option's value in a loaded source config (the default when not set)."""
        value = config.options.get(self.key, self.default)
        if not isinstance(value, timedelta):
            raise TypeError(f"source option {self.key} is {type(value).__name__}, not timedelta")
        return value


def _option(config: SourceConfig, key: str, default: _T, kind: type[_T]) -> _T:
    value = config.options.get(key, default)
    if not isinstance(value, kind):
        raise TypeError(f"source option {key} is {type(value).__name__}, not {kind.__name__}")
    return value


@dataclass(frozen=True, slots=True)
class TextOption:
    """A string key; empty (the default) when not set."""

    key: str
    default: str = ""

    def read(self, table: OptionTable) -> str:
        """The string, or the default; an empty or wrong value is recorded as a problem."""
        return table.text(self.key, self.default)

    def get(self, config: SourceConfig) -> str:
        """This option's value in a loaded source config."""
        return _option(config, self.key, self.default, str)


@dataclass(frozen=True, slots=True)
class ChoiceOption:
    """A key that takes one of a few words (`preset = "owncast"`)."""

    key: str
    choices: tuple[str, ...]
    default: str = ""
    required: bool = False

    def read(self, table: OptionTable) -> str:
        """The word, or the default; anything else is recorded as a problem."""
        return table.choice(self.key, self.default, self.choices, required=self.required)

    def get(self, config: SourceConfig) -> str:
        """This option's value in a loaded source config."""
        return _option(config, self.key, self.default, str)


@dataclass(frozen=True, slots=True)
class UrlOption:
    """An absolute http(s) URL; empty when not set."""

    key: str
    schemes: tuple[str, ...] = ("http", "https")

    def read(self, table: OptionTable) -> str:
        """The URL without a trailing slash, or empty; a bad one is recorded as a problem."""
        return (table.url(self.key, self.schemes) or "").rstrip("/")

    def get(self, config: SourceConfig) -> str:
        """This option's value in a loaded source config."""
        return _option(config, self.key, "", str)


@dataclass(frozen=True, slots=True)
class TableOption:
    """A table of strings keyed by name (`[sources.fields]`); None when not set.

    The entries' meaning is the source's to check (SourceSpec.check), which names the
    entry at fault with `entry_key`.
    """

    key: str

    def read(self, table: OptionTable) -> dict[str, str] | None:
        """The table's string entries; wrong ones are recorded as problems."""
        return table.mapping(self.key)

    def get(self, config: SourceConfig) -> Mapping[str, str]:
        """This option's entries in a loaded source config (empty when not set)."""
        value = config.options.get(self.key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise TypeError(f"source option {self.key} is {type(value).__name__}, not a table")
        return value


@dataclass(frozen=True, slots=True)
class SecretOption:
    """A credential besides the webhook secret (Twitch's `client_secret`), given inline
    or, better, through `<key>_env`; both keys belong to the source."""

    key: str
    required: bool = True

    @property
    def env_key(self) -> str:
        """The key naming the environment variable that holds it."""
        return f"{self.key}_env"

    @property
    def keys(self) -> tuple[str, str]:
        """Both keys it may be given by."""
        return (self.key, self.env_key)

    def read(self, table: OptionTable) -> str:
        """The credential, or empty; a missing or wrong one is recorded as a problem."""
        return table.secret(self.key, required=self.required) or ""

    def get(self, config: SourceConfig) -> str:
        """This option's value in a loaded source config."""
        return _option(config, self.key, "", str)


@dataclass(frozen=True, slots=True)
class StringListOption:
    """A list of strings (`channels = ["quinn", "mika"]`); `default` when not set."""

    key: str
    default: tuple[str, ...] = ()

    def read(self, table: OptionTable) -> tuple[str, ...]:
        """The strings, or the default; wrong items are recorded as problems."""
        values = table.strings(self.key)
        return self.default if values is None else tuple(values)

    def get(self, config: SourceConfig) -> tuple[str, ...]:
        """This option's value in a loaded source config."""
        return _option(config, self.key, self.default, tuple)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Everything the rest of the bot needs to know about one webhook provider.

    `webhook_url` is the URL form given to the provider, with `{url}` for
    `<public>/webhook/<name>` and `{secret}` for the secret. `setup` is what `init`
    prints to connect the provider; besides those two it may use `{webhook_url}` (the
    filled-in form), `{name}`, `{secret_env}` and `{config}` (the config file's path).
    `config_note` (which may use `{secret_env}`) follows "<title> posts to <URL>" in
    the comment init writes above the `[[sources]]` entry. `samples` holds one realistic
    payload per event type, which `bot.samples` parses through a source built with an
    empty secret (samples are parsed, never verified), so `build` must accept one.
    """

    kind: str
    title: str
    build: Callable[[SourceConfig], Source]
    credential: Credential
    #: Provider event type -> the bot's event kind, for every type the source parses.
    event_types: Mapping[str, str]
    setup: str
    samples: Mapping[str, Mapping[str, Any]]
    webhook_url: str = "{url}"
    config_note: str = ""
    #: Where the provider makes the secret: the environment variable init points
    #: `secret_env` at (the bot can only be told such a secret, never choose it).
    secret_env: str | None = None
    options: tuple[SourceOption, ...] = ()
    #: False for a program beside the bot (a recorder on the same network); True for a
    #: cloud service, which cannot reach a localhost or private address.
    from_internet: bool = True
    #: What the channel part of this source's streamer keys is, for `check`: (a regular
    #: expression every one matches, what it is). A route pattern for its platform whose
    #: channel does not match gets a warning: a stream's name where the key has its id.
    channel_shape: tuple[str, str] | None = None
    #: Checks the options together once each is read (a key that one setting of another
    #: needs or forbids), recording problems on the table; the values are by key.
    check: Callable[[Mapping[str, object], OptionTable], None] | None = None
    #: Kind-specific keys `init` writes into a new entry (placeholders for the user to
    #: edit, which `config_note` then points at), so the file it writes passes `check`.
    #: In a string, `{webhook_url}` is the source's public URL.
    init_values: Mapping[str, object] = field(default_factory=dict)
    #: Which of `init_values` an interactive `init` asks for (key -> question), the
    #: placeholder being the suggestion.
    init_questions: Mapping[str, str] = field(default_factory=dict)
    #: The provider's rule for the webhook secret (Twitch: 10-100 ASCII characters): the
    #: problem to report for one that breaks it, or None.
    secret_rule: Callable[[str], str | None] | None = None

    def __post_init__(self) -> None:
        if (self.secret_env is None) == (self.credential is Credential.HMAC_PROVIDER):
            raise ValueError(
                f"source {self.kind}: secret_env names where a provider-made secret comes"
                " from; set it exactly when the credential is HMAC_PROVIDER"
            )

    @property
    def option_keys(self) -> tuple[str, ...]:
        """The kind-specific `[[sources]]` keys this source accepts."""
        return tuple(
            key
            for option in self.options
            for key in (option.keys if isinstance(option, SecretOption) else (option.key,))
        )

    def read_options(self, table: OptionTable) -> dict[str, object]:
        """Each kind-specific option's checked value, by key."""
        values = {option.key: option.read(table) for option in self.options}
        if self.check is not None:
            self.check(values, table)
        return values

    def url_for(self, url: str, secret: str) -> str:
        """The webhook URL form filled in: what the provider is told to post to."""
        return self.webhook_url.format(url=url, secret=secret)
