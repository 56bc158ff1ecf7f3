"""What a sink provides to the outbox workers, and what a chat platform declares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias

from bot.events import Event
from bot.render import MessageFormat
from bot.sources.base import WebhookRequest
from bot.store import Delivery
from bot.targets import TargetProblem

#: `Store.hold_role`, as the sinks get it: whether this process does a job only one bot
#: process on the database may do (Telegram's long poll, answering Discord's commands).
HoldsRole: TypeAlias = Callable[[str], Awaitable[bool]]
#: `Store.release_role`, as the sinks get it: give a role up for another process to take.
ReleasesRole: TypeAlias = Callable[[str], Awaitable[None]]
#: `Store.take_turn`, as the sinks get it: (turn, spacing) -> seconds until this
#: process's turn at something the bot's processes do one at a time (Discord's IDENTIFY).
TakesTurn: TypeAlias = Callable[[str, float], Awaitable[float]]


#: Seconds added to a chat's window when the other processes' sends in it are counted
#: (`Sink.sent_elsewhere`): each was timed by its own machine's clock, which may be a
#: little apart from this one's.
CLOCK_ALLOWANCE: Final = 1.0


@dataclass(frozen=True, slots=True)
class WebRoute:
    """A route a sink serves on the bot's listener: its platform posts to it (Telegram's
    updates by webhook). The listener reads the body under its usual limits, answers
    refusals as JSON errors and a success with 200.

    `receive` raises a WebhookError subclass to refuse (AuthError: 401, logged like a
    source's; NotReady: 503 with Retry-After, so the platform sends it again).
    """

    #: The route's path; it may hold a secret, so logs show `shown` instead.
    path: str
    shown: str
    #: Who posts here, for the log's "authentication failed for ..." lines.
    name: str
    receive: Callable[[WebhookRequest], Awaitable[None]]


class Sink(Protocol):
    """A place notifications go. `deliver` raises DeliveryError subclasses on failure."""

    name: str
    #: Seconds a send in flight at shutdown is waited for before it is cut off.
    drain_timeout: float
    #: Whether its messages can be edited and deleted later: session cards, and a mute
    #: that holds back new messages only (the card is still kept current).
    keeps_cards: bool
    #: Whether the platform counts its requests with every other process's that uses the
    #: same bot token (a global rate limit, shared by `share_limits`): a process that
    #: joins others starts it only once they have made room (bot.heartbeat).
    shares_token_limits: bool

    @property
    def web_routes(self) -> Sequence[WebRoute]:
        """The routes it serves on the bot's listener (most sinks: none)."""
        ...

    @property
    def state(self) -> str:
        """A short word for /healthz: starting, running, stopped, failed..."""
        ...

    async def start(self) -> None:
        """Connect; return once the sink can deliver (or has failed visibly)."""
        ...

    def share_limits(self, processes: int, rank: int = 0) -> None:
        """Send at `1/processes` of the platform's rate limits from now on: that many bot
        processes share its bot token (several on one PostgreSQL database). `rank` (0 for
        the first of them) decides which take the part that does not divide evenly."""
        ...

    def chat_window(self, target: str) -> float | None:
        """Seconds of a per-chat rate limit's window, when the platform limits the
        target's chat over a window (Telegram: 20 messages a minute in a group) and the
        sink keeps the count: the outbox then tells it what the other processes, and
        this one's earlier runs, sent there within it (`sent_elsewhere`) before it
        sends there. One process at a time sends to a chat (the store's claims), so
        that and its own count are all of the chat's. None when there is no such
        limit."""
        ...

    def sent_elsewhere(self, target: str, sent: Sequence[float], *, now: float) -> None:
        """When each message the other bot processes (and this one's earlier runs) sent
        to the target's chat within its `chat_window` was recorded (wall-clock seconds,
        as `now`), for the chat's limit to count."""
        ...

    async def stop(self) -> None:
        """Disconnect and release resources (idempotent)."""
        ...

    async def deliver(self, delivery: Delivery, event: Event) -> str | None:
        """Post a new message for `event`; returns the platform's message id, if any."""
        ...

    async def edit(self, delivery: Delivery, message_id: str, event: Event) -> None:
        """Re-render the live card for `event` and edit message `message_id` in place.

        Raises MessageGone when that message no longer exists, so the caller can post
        a new one instead.
        """
        ...

    async def delete(self, delivery: Delivery, message_id: str) -> None:
        """Delete the bot's message `message_id` (from `deliver`) in `delivery.target`.

        A message that is already gone counts as deleted. PermanentDeliveryError (never
        MessageGone) when the platform refuses for good, so the caller can edit the card
        instead; TransientDeliveryError when a retry may help.
        """
        ...

    async def preflight(
        self,
        targets: Sequence[str],
        *,
        mention_roles: Mapping[str, Collection[int]] | None = None,
        thread_targets: Collection[str] | None = None,
    ) -> list[TargetProblem] | None:
        """Check with the platform's read calls that each of `targets` can be posted to
        (and, where the platform has roles, can ping the `mention_roles` the routes give
        each target; where it has threads, can open one per session in `thread_targets`,
        the targets of routes with `thread = "per_stream"`).

        Returns what is wrong (an empty list when nothing is), or None when the sink
        cannot check now (not connected); never raises for a platform problem.
        """
        ...


class PlatformConfig(Protocol):
    """A chat platform's `[<platform>]` section, loaded by its package's `read_config`."""

    @property
    def enabled(self) -> bool:
        """True when a token resolved, so the sink should start."""
        ...

    @property
    def disabled_reason(self) -> str | None:
        """Why the sink is off (one log line at start); unused when enabled."""
        ...


class ConfigTable(Protocol):
    """The typed reads a platform's config makes from its table (bot.config implements
    them); each records a problem naming the key (`discord.api_url: ...`) and returns
    None or the default instead of raising."""

    @property
    def problems(self) -> list[str]:
        """Where problems are collected, for item checks with their own paths."""
        ...

    @property
    def data(self) -> Mapping[str, Any]:
        """The table as written, for a key of a type no typed read has."""
        ...

    def problem(self, key: str, message: str) -> None:
        """Record a problem with `key`."""
        ...

    def has(self, key: str) -> bool:
        """True when the table sets `key` (to anything)."""
        ...

    def url(self, key: str, schemes: tuple[str, ...]) -> str | None:
        """An absolute URL with one of `schemes`, or None."""
        ...

    def items(self, key: str) -> list[tuple[str, Any]] | None:
        """A list as (item path, item) pairs, or None when absent or not a list."""
        ...

    def choice(
        self, key: str, default: str, choices: Collection[str], *, required: bool = False
    ) -> str:
        """One of `choices`, or `default`."""
        ...

    def chat_token(self, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
        """(token, disabled_reason) from `token` or `token_env`; an unset variable
        disables the platform rather than failing the config."""
        ...


#: Checks one entry of a route's target list (`discord_channels`, `telegram_chats`):
#: (value, its key path, the problem list) -> the normalized target, or None (recorded).
TargetParser = Callable[[Any, str, list[str]], "str | None"]


@dataclass(frozen=True, slots=True)
class PlatformSpec:
    """Everything the rest of the bot needs to know about one chat platform.

    One per package in `bot/sinks/` (its `SPEC`), listed in `bot.registry.PLATFORMS`.
    `build_sink` imports the platform's client library only when it is called, so `check`
    and `render` never load it.
    """

    name: str
    title: str
    #: The keys of its `[<name>]` section, as the config loader checks them.
    config_keys: tuple[str, ...]
    #: The section (absent: an empty table) -> the loaded config.
    read_config: Callable[[ConfigTable, Mapping[str, str]], PlatformConfig]
    #: The config when bot.toml has no such section at all.
    default_config: PlatformConfig
    #: Its key in `[[routes]]`, and the grammar of each entry there.
    target_key: str
    parse_target: TargetParser
    format: MessageFormat[Any]
    #: (its config, renderer=, commands=, **options) -> the started-later sink.
    build_sink: Callable[..., Sink]
    #: Its sink takes `holds_role=` (HoldsRole) and `releases_role=` (ReleasesRole): it has
    #: jobs only one bot process on the database may do at a time (Telegram's long poll,
    #: each Discord shard).
    takes_roles: bool = False
    #: Its sink takes `takes_turn=` (TakesTurn): it does something the bot token allows
    #: only so often, whichever process does it (Discord's gateway IDENTIFY).
    takes_turns: bool = False
    #: (its enabled config, `[server] public_url`) -> what is wrong, each naming its key,
    #: for a platform that can be told to post to the bot at its public URL (Telegram's
    #: webhook); its sink then takes `public_url=`. None: the platform never posts here.
    public_url_problems: Callable[[PlatformConfig, str | None], list[str]] | None = None
