"""The Discord sink: notification embeds, live cards edited in place, and slash commands.

discord.py runs inside the bot's one event loop: `login` and `connect` in a task (never
`Client.run`, which owns the loop). Posting and editing only need REST; the gateway
connection is there for the slash commands (INTERACTION_CREATE, bot/sinks/discord/
commands.py). Platform errors never escape raw: each becomes a TransientDeliveryError
(retry later) or a PermanentDeliveryError (give up now), which the outbox worker acts on
(bot/sinks/discord/errors.py). Every REST request is paced under Discord's global limit
(bot/sinks/ratelimit.py), each delivery taking its turn before it is rendered.

What the gateway's cache says about a channel is used before sending: a category or forum
is refused without a request, and where the bot may not embed links the card goes out
as plain text (format.py's `text`) instead of an embed Discord would silently drop. The
preflight (bot/sinks/discord/preflight.py) checks configured channels the same way, and
the permission updates the gateway sends make it look again. A channel the cache does not
hold (a server of a shard another process runs) is looked up over REST, with its server's
roles and the bot's member, and kept a few minutes (bot/sinks/discord/lookup.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import warnings
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Final, cast

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib audioop module (voice support), deprecated since
    # Python 3.11; the warning says nothing about this bot, which has no voice.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord

from bot.chat.commands import CATALOGUE, CommandSpec
from bot.commands import Commands
from bot.errors import DeliveryError, MessageGone, PermanentDeliveryError, TransientDeliveryError
from bot.events import LIVE_END, LIVE_START, Event
from bot.render import Renderer
from bot.sinks.base import HoldsRole, ReleasesRole, TakesTurn, WebRoute
from bot.sinks.discord.client import (
    INVITE_PERMISSIONS,
    INVITE_SCOPES,
    SHARD_RETRY_LINE,
    BotClient,
    Endpoints,
    ShardedBotClient,
    allowed_mentions_for,
    paced_requests,
)
from bot.sinks.discord.commands import CommandTree, SlashCommands
from bot.sinks.discord.config import DiscordConfig
from bot.sinks.discord.config import channel_id as target_channel
from bot.sinks.discord.errors import (
    NETWORK_ERRORS,
    TARGET_ERRORS,
    delivery_error,
    platform_call,
)
from bot.sinks.discord.format import FORMAT, DiscordMessage, thread_name
from bot.sinks.discord.identify import IdentifyTurns
from bot.sinks.discord.lookup import ChannelLookup
from bot.sinks.discord.preflight import (
    NO_EMBED_LINKS,
    NO_THREADS,
    NOT_ANNOUNCEMENT,
    bot_permissions,
    can_post,
    check_targets,
    no_embed_links_problem,
    not_text_problem,
    takes_messages,
)
from bot.sinks.discord.shards import SHARD_CHECK_SECONDS, ShardClaims, describe
from bot.sinks.ratelimit import WindowLimiter
from bot.store import Delivery
from bot.targets import SEND, TargetProblem, TargetProblems

log = logging.getLogger(__package__)

#: Discord keeps an enforced nonce for a few minutes, and accepts at most 25 characters.
NONCE_LENGTH: Final = 25

DEFAULT_READY_TIMEOUT: Final = 30.0
DEFAULT_SEND_TIMEOUT: Final = 120.0
#: discord.py waits out shorter rate limits itself; a longer one becomes a transient
#: error with its retry_after, so the outbox reschedules instead of holding the chat.
#: (discord.py refuses values under 30 s.)
DEFAULT_MAX_RATELIMIT_WAIT: Final = 60.0
#: A session's thread archives itself this long after its last message (Discord's
#: auto_archive_duration: 60, 1440, 4320 or 10080 minutes), for a bot that may not
#: archive it at the end (Manage Threads).
THREAD_ARCHIVE_MINUTES: Final = 60
#: "Thread is archived": an archived thread's messages cannot be edited.
ARCHIVED_THREAD: Final = 50083
_LOGIN_RETRY_FIRST: Final = 2.0
_LOGIN_RETRY_MAX: Final = 300.0
# The longest Retry-After a refused login is taken at its word for.
_LOGIN_RETRY_AFTER_MAX: Final = 3600.0
# How long a delivery waits when the client is not logged in (yet, or any more).
_NOT_CONNECTED_RETRY: Final = 30.0
# ...and while a new client logs in because this process's shards changed.
_RESHARD_RETRY: Final = 2.0


async def _every_role(role: str) -> bool:
    """Without a shared database: this process is the only one, and runs every shard."""
    del role
    return True


async def _nothing_to_release(role: str) -> None:
    del role


def delivery_nonce(delivery: Delivery) -> str:
    """The nonce for a delivery's message: the same on every retry, unlike any other's.

    With `enforce_nonce` Discord answers a repeat with the message already created, so a
    retry after a lost answer does not post twice. Not the bare row id: a fresh database
    reuses ids, and Discord would then hand back a message posted minutes ago instead.
    """
    seed = f"{delivery.id}:{delivery.event_row}:{delivery.target}:{delivery.created_at!r}"
    return "d" + hashlib.sha256(seed.encode()).hexdigest()[: NONCE_LENGTH - 1]


class DiscordSink:
    """Posts notifications to Discord channels, edits live cards, answers slash commands."""

    name = "discord"
    #: Its message format: templates, escaping and Discord's limits (format.py).
    format = FORMAT
    #: Discord's global limit: 50 requests per second per bot, across all routes
    #: (interaction answers are exempt; discord.py keeps to the per-route buckets itself).
    #: Every REST request the client makes waits its turn (`_paced_requests`): at most
    #: `global_limit` in any `global_period` seconds. The constructor's
    #: arguments of the same names override these.
    global_limit = 50
    global_period = 1.0
    #: At shutdown a send in flight is waited for this long. Short, unlike Telegram's:
    #: a send cut off here goes again after the restart with the same enforced nonce,
    #: which Discord answers with the message it already made, for a few minutes.
    drain_timeout = 10.0
    keeps_cards = True
    shares_token_limits = True
    #: It serves nothing on the bot's listener.
    web_routes: tuple[WebRoute, ...] = ()

    def __init__(
        self,
        *,
        config: DiscordConfig,
        renderer: Renderer,
        commands: Commands,
        catalogue: Sequence[CommandSpec] = CATALOGUE,
        client_options: Mapping[str, Any] | None = None,
        before_identify_hook: Callable[..., Awaitable[None]] | None = None,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        global_limit: int | None = None,
        global_period: float | None = None,
        problems: TargetProblems | None = None,
        login_retry_first: float = _LOGIN_RETRY_FIRST,
        holds_role: HoldsRole | None = None,
        releases_role: ReleasesRole | None = None,
        shard_check_interval: float = SHARD_CHECK_SECONDS,
        channel_lookup: ChannelLookup | None = None,
        takes_turn: TakesTurn | None = None,
    ) -> None:
        self._config = config
        # Where what is found wrong with a target goes (/healthz, /status for admins).
        self._problems = problems if problems is not None else TargetProblems()
        self._renderer = renderer
        self._slash = SlashCommands(commands=commands, renderer=renderer, catalogue=catalogue)
        self._client_options = dict(client_options or {})
        # Each IDENTIFY waits for its turn among the bot's processes (identify.py), unless
        # a test gives a hook of its own.
        self._identify_turns = IdentifyTurns(takes_turn) if takes_turn is not None else None
        logging.getLogger("discord.shard").addFilter(SHARD_RETRY_LINE)
        self._before_identify_hook = before_identify_hook or self._identify_turns
        self._ready_timeout = ready_timeout
        self._send_timeout = send_timeout
        self._state = "created"
        self._client: BotClient | None = None
        self._tree: CommandTree | None = None
        self._task: asyncio.Task[None] | None = None
        self._logged_in = False
        self._stopping = False
        self._ready = asyncio.Event()
        self._endpoints = Endpoints(config.api_url, config.gateway_url)
        self._unpinged: set[tuple[int, int]] = set()
        #: Threads the bot could not archive (said once each).
        self._unarchived: set[int] = set()
        #: Targets of routes with `thread = "per_stream"`, as the last preflight was told.
        self._thread_targets: set[str] = set()
        self._login_retry_first = login_retry_first
        # Sharding ([discord] shard_count): which shards this process runs is claimed
        # through the database (shards.py); without other processes, every one.
        self._holds_role = holds_role or _every_role
        self._releases_role = releases_role or _nothing_to_release
        self._shard_check_interval = shard_check_interval
        self._processes = 1
        self._shards_changed = asyncio.Event()
        self._shards: frozenset[int] = frozenset()
        self._shard_count: int | None = None
        # Between two clients while the shards this process runs change.
        self._resharding = False
        # The channels this sink has been asked about (preflight) or posted in: the ones a
        # permission change in their server makes worth checking again.
        self._targets: set[str] = set()
        # Each target's mention roles, as given to `preflight` or seen on its deliveries.
        self._mention_roles: dict[str, set[int]] = {}
        # Channels of servers this process's gateway cache does not hold, looked up over
        # REST (sharded, any process sends to any server) and kept a few minutes.
        self._lookup = channel_lookup or ChannelLookup()
        if "http_trace" in self._client_options:
            raise ValueError("http_trace is the sink's own: it paces the client's requests")
        # discord.py only reacts to a global 429 once it has it, and requests already in
        # flight then all sleep and retry together; the outbox starts every channel's send
        # at once, so pace them here instead (docs/performance.md, fan-out).
        self._limiter = WindowLimiter(
            global_limit or self.global_limit,
            global_period or self.global_period,
        )

    def __repr__(self) -> str:
        # Never the config's token (DiscordConfig hides it too; this does not rely on it).
        return f"<DiscordSink state={self._state!r}>"

    @property
    def state(self) -> str:
        """created, starting, running, failed or stopped (for /healthz); "blocked" while
        Discord refuses this IP address at login (retried in the background)."""
        return self._state

    @property
    def client(self) -> discord.Client | None:
        """The discord.py client while started (for tests and diagnostics)."""
        return self._client

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Log in, sync the slash commands and connect; return once ready or failed.

        Never raises for a platform problem: a refused token or an unreachable Discord
        sets state "failed" (or keeps "starting" while login is retried) with one log line.
        """
        if self._task is not None and not self._task.done():
            return
        if self._config.token is None:
            self._state = "failed"
            log.error("discord: no token configured; not connecting")
            return
        self._state = "starting"
        self._stopping = False
        self._ready.clear()
        self._endpoints.point()
        self._task = asyncio.create_task(self._run(self._config.token), name="discord-client")
        ready = asyncio.create_task(self._ready.wait(), name="discord-ready")
        try:
            await asyncio.wait(
                {self._task, ready},
                timeout=self._ready_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready
        if self._state == "starting":
            log.warning(
                "discord: not connected after %.0fs; still trying in the background",
                self._ready_timeout,
            )

    def share_limits(self, processes: int, rank: int = 0) -> None:
        """Take `1/processes` of Discord's global 50 requests a second (per bot token;
        the lowest ranks take the remainder), and (sharded) look again at which shards
        this process should run."""
        self._limiter.share(processes, rank)
        if processes != self._processes:
            self._processes = processes
            self._shards_changed.set()

    def chat_window(self, target: str) -> float | None:
        """None: a channel's limits are Discord's route buckets, which every answer's
        headers state (remaining, reset) and discord.py follows, in any process."""
        del target
        return None

    def sent_elsewhere(self, target: str, sent: Sequence[float], *, now: float) -> None:
        """Never asked (no `chat_window`)."""
        del target, sent, now

    @property
    def shards(self) -> tuple[frozenset[int], int] | None:
        """(the shards this process runs, of how many) while sharded, else None."""
        if self._shard_count is None:
            return None
        return self._shards, self._shard_count

    async def stop(self) -> None:
        """Close the connection, end the client task, restore discord.py's endpoints."""
        self._stopping = True
        self._shards_changed.set()  # a sharded client's watch ends now, not at its next look
        client, task = self._client, self._task
        self._task = None
        try:
            if client is not None:
                await client.close()
            if task is not None:
                if not task.done() and self._logged_in:
                    # connect() returns once the client is closed.
                    await asyncio.wait({task}, timeout=5.0)
                if not task.done():
                    task.cancel()  # e.g. waiting to retry a login
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            self._client = None
            self._tree = None
            self._logged_in = False
            self._lookup.clear()
            self._endpoints.restore()
            self._state = "stopped"

    async def _run(self, token: str) -> None:
        """The client's life: log in (retrying network failures), sync, stay connected."""
        try:
            client = await self._login(token)
            if client is None:
                return
            self._log_invite(client)
            await self._sync_commands()
            if self._config.shard_count is None:
                await client.connect(reconnect=True)
            elif not await self._run_shards(client, token):
                return
        except asyncio.CancelledError:
            raise
        except discord.PrivilegedIntentsRequired:
            self._fail("Discord refused the gateway intents this bot asked for")
        except discord.ConnectionClosed as exc:
            # 4004 on the gateway is a refused token; others are Discord ending the session.
            if exc.code == 4004:
                self._fail("Discord refused the bot token on the gateway (close code 4004)")
            else:
                self._fail(f"the gateway connection closed with code {exc.code}")
        except Exception as exc:
            if self._stopping:
                return
            log.exception("discord: the client stopped unexpectedly")
            self._fail(f"the client stopped: {type(exc).__name__}")
        else:
            if not self._stopping:
                self._fail("the gateway connection ended")

    async def _run_shards(self, client: BotClient, token: str) -> bool:
        """Run this process's share of the gateway's shards until stopped (False) or the
        gateway ends the session (True), on a new client whenever the share changes:
        discord.py starts a client's shards once, in `connect`."""
        count = await self._resolved_shard_count(client)
        if count is None:
            return False
        claims = ShardClaims(count, holds_role=self._holds_role, releases_role=self._releases_role)
        self._shard_count = count
        try:
            while True:
                shards = await claims.review(self._processes)
                await claims.release_extras()  # nothing runs them here any more
                if shards != self._shards:
                    log.info("discord: this process runs %s", describe(shards, count))
                self._shards = shards
                ended = await self._run_until_shards_change(client, claims, shards)
                if self._stopping:
                    return False
                if ended:
                    return True
                self._resharding = True
                await client.close()
                # A new client: discord.py connects one only once.
                next_client = await self._login(token)
                if next_client is None:
                    return False
                client = next_client
                self._resharding = False
        finally:
            self._resharding = False
            self._shards = frozenset()
            await claims.release_all()

    async def _run_until_shards_change(
        self, client: BotClient, claims: ShardClaims, shards: frozenset[int]
    ) -> bool:
        """Run `shards` on `client` (none: REST only) until the shards to run change
        (False, the client closed) or the gateway ends the session (True)."""
        connection: asyncio.Task[None] | None = None
        if shards:
            client.shard_count = claims.count
            cast(ShardedBotClient, client).shard_ids = sorted(shards)
            connection = asyncio.create_task(client.connect(reconnect=True), name="discord-shards")
        else:
            self._sending_only(client, claims.count)
        try:
            while not self._stopping:
                self._shards_changed.clear()
                changed = asyncio.ensure_future(self._shards_changed.wait())
                waiting: set[asyncio.Future[Any]] = {changed}
                if connection is not None:
                    waiting.add(connection)
                await asyncio.wait(
                    waiting, timeout=self._shard_check_interval, return_when=FIRST_COMPLETED
                )
                changed.cancel()
                if connection is not None and connection.done():
                    connection.result()  # the gateway's error, if it ended with one
                    return not self._stopping
                if await claims.review(self._processes) != shards:
                    return False
            return False
        finally:
            if connection is not None and not connection.done():
                await client.close()
                # discord.py's launch_shard retries a shard that failed to connect every
                # 5 s without looking whether its client was closed meanwhile (a shard
                # waiting for its turn to identify when the shards changed, say): its
                # task would never end, nor this process take its next shards.
                connection.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await connection

    async def _resolved_shard_count(self, client: BotClient) -> int | None:
        """`shard_count`, or Discord's recommendation for "auto" (GET /gateway/bot),
        asked again with growing pauses while Discord cannot answer; None if stopped."""
        wanted = self._config.shard_count
        if isinstance(wanted, int):
            return wanted
        delay = self._login_retry_first
        while not self._stopping:
            try:
                recommended, _url, limits = await client.http.get_bot_gateway()
            except (discord.GatewayNotFound, discord.HTTPException, *NETWORK_ERRORS) as exc:
                log.warning(
                    "discord: cannot ask Discord how many shards to run (%s); retrying in %.0fs",
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _LOGIN_RETRY_MAX)
                continue
            log.info('discord: shard_count = "auto": Discord recommends %d', recommended)
            if self._identify_turns is not None:
                self._identify_turns.max_concurrency = int(limits["max_concurrency"])
            return int(recommended)
        return None

    def _sending_only(self, client: BotClient, count: int) -> None:
        """Logged in, no shard to run here (other processes run them all): the sink
        sends, edits and deletes over REST, and is healthy."""
        if self._state != "running":
            user = client.user
            log.info(
                "discord: logged in as %s; the other bot processes run all %d shards, so"
                " this one sends only (and takes shards over when they are free)",
                user.name if user else "?",
                count,
            )
        self._state = "running"
        self._ready.set()

    async def _login(self, token: str) -> BotClient | None:
        """A logged-in client, or None when the token is refused (state is then failed)."""
        delay = self._login_retry_first
        blocked_before = False
        while True:
            client = self._new_client()
            try:
                await client.login(token)
            except discord.LoginFailure:
                await client.close()
                self._fail(
                    "Discord refused the bot token (401 Unauthorized); check [discord] "
                    "token or token_env"
                )
                return None
            except (discord.DiscordServerError, discord.RateLimited, *NETWORK_ERRORS) as exc:
                await client.close()
                if self._stopping:
                    return None  # stop() closed the client under the login
                # A fresh client per attempt: discord.py cannot log in twice on one.
                log.warning(
                    "discord: cannot log in (%s: %s); retrying in %.0fs",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _LOGIN_RETRY_MAX)
                continue
            except discord.HTTPException as exc:
                await client.close()
                if self._stopping:
                    return None
                if exc.status != 429:
                    raise
                # discord.py retries a 429 itself unless it lacks a Via header: then it
                # did not come from Discord's API but from Cloudflare in front of it,
                # refusing this IP address (shared hosting, often). It lifts by itself.
                wait = max(delay, await _retry_after(exc) or 0.0)
                self._state = "blocked"
                if not blocked_before:
                    log.warning(
                        "discord: Discord is refusing this IP address (429 without Via: an "
                        "IP-level block, common on shared hosting); retrying in %.0fs",
                        wait,
                    )
                else:
                    log.info("discord: this IP address is still refused; retrying in %.0fs", wait)
                blocked_before = True
                await asyncio.sleep(wait)
                delay = min(delay * 2, _LOGIN_RETRY_MAX)
                continue
            except BaseException:
                await client.close()
                raise
            if blocked_before:
                log.info("discord: logged in; this IP address is no longer refused")
                self._state = "starting"
            self._logged_in = True
            return client

    def _new_client(self) -> BotClient:
        # The bot has no voice: discord.py's start-up warnings that the voice libraries
        # (PyNaCl, davey) are missing say nothing about it, and worry users.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        # Only the guilds intent: the channel cache for channel lookups. Slash commands
        # need no intent, and the bot reads no messages or members (nothing privileged).
        intents = discord.Intents.none()
        intents.guilds = True
        options: dict[str, Any] = {
            "intents": intents,
            "max_messages": None,  # no message cache: the outbox remembers message ids
            "max_ratelimit_timeout": DEFAULT_MAX_RATELIMIT_WAIT,
            # discord.py waits 2 s after the last GUILD_CREATE before "ready"; sends go to
            # channels by id and need no complete guild cache (bench: ready 2.6 s -> 1.1 s).
            "guild_ready_timeout": 0.5,
            "http_trace": paced_requests(self._limiter),
        }
        options.update(self._client_options)
        kind = BotClient
        if self._config.shard_count is not None:
            # Which shards (and, for "auto", how many) is settled before connect.
            kind = ShardedBotClient
            options.setdefault("shard_count", self._shard_count)
        client = kind(
            on_ready=self._on_ready,
            identify_hook=self._before_identify_hook,
            on_permissions_changed=self._permissions_changed,
            **options,
        )
        self._client = client
        self._tree = self._slash.build_tree(client)
        self._lookup.clear()  # what it holds belongs to the client before
        return client

    def _on_ready(self) -> None:
        client = self._client
        if client is None or self._stopping:
            return
        if self._state != "running":
            user = client.user
            log.info(
                "discord: connected as %s (id %s), in %d server(s)",
                user.name if user else "?",
                user.id if user else "?",
                len(client.guilds),
            )
        self._state = "running"
        self._ready.set()

    def _fail(self, reason: str) -> None:
        if self._stopping:
            return
        self._state = "failed"
        log.error("discord: %s; not posting to Discord until restarted", reason)

    def _log_invite(self, client: discord.Client) -> None:
        if client.application_id is None:
            return
        url = discord.utils.oauth_url(
            client.application_id, permissions=INVITE_PERMISSIONS, scopes=INVITE_SCOPES
        )
        log.info("discord: invite the bot to a server with %s", url)

    async def _sync_commands(self) -> None:
        """Register the slash commands: globally, or only in `guild_ids` when that is set.

        Global commands take up to an hour to appear; guild ones appear at once. Having
        both would list every command twice in those servers, so with `guild_ids` the
        global registration (from an earlier run without it) is emptied.
        """
        tree = self._tree
        if tree is None:
            return
        guild_ids = self._config.guild_ids
        for guild_id in guild_ids:
            guild = discord.Object(guild_id)
            tree.copy_global_to(guild=guild)
            try:
                synced = await tree.sync(guild=guild)
            except (discord.HTTPException, *NETWORK_ERRORS) as exc:
                log.error(
                    "discord: could not register the slash commands in server %d "
                    "(is the bot in it?): %s",
                    guild_id,
                    exc,
                )
            else:
                log.info(
                    "discord: registered %d slash commands in server %d", len(synced), guild_id
                )
        if guild_ids:
            tree.clear_commands(guild=None)
        try:
            synced = await tree.sync()
        except (discord.HTTPException, *NETWORK_ERRORS) as exc:
            log.error("discord: could not register the slash commands: %s", exc)
            return
        if synced:
            log.info("discord: registered %d slash commands", len(synced))

    # -- delivery --------------------------------------------------------------------

    def _connected_client(self) -> discord.Client:
        client = self._client
        if client is None or not self._logged_in or client.is_closed():
            if self._resharding:
                # A new client is logging in (the shards this process runs changed):
                # seconds, not a lost connection.
                raise TransientDeliveryError(
                    "Discord's client is being replaced", retry_after=_RESHARD_RETRY
                )
            raise TransientDeliveryError(
                f"not logged in to Discord (sink {self._state})",
                retry_after=_NOT_CONNECTED_RETRY,
            )
        return client

    def _replaced(self, client: discord.Client) -> bool:
        """Whether `client` was closed or replaced (the shards this process runs changed)
        since a send took it."""
        return self._client is not client or client.is_closed()

    @staticmethod
    def _replaced_error(doing: str) -> TransientDeliveryError:
        return TransientDeliveryError(
            f"Discord's client was replaced during {doing}", retry_after=_RESHARD_RETRY
        )

    @contextlib.asynccontextmanager
    async def _replaced_is_transient(
        self, client: discord.Client, doing: str
    ) -> AsyncIterator[None]:
        """A send, edit or delete cut off by the client's replacement (aiohttp's "Session
        is closed", or its AssertionError for a request under way then) is retried: a new
        client sends seconds later, and the enforced nonce keeps a resend from posting
        twice. Discord's own answers (DeliveryErrors) are what they are."""
        try:
            yield
        except DeliveryError:
            raise
        except Exception as exc:
            if not self._replaced(client):
                raise
            raise self._replaced_error(doing) from exc

    async def _channel(self, client: discord.Client, channel_id: int) -> object | None:
        """The channel as the gateway's cache holds it or, where this process does not run
        its server's shard, as REST describes it (lookup.py), so that what is decided
        from it (forum, not text, Embed Links) is decided alike. None where Discord will
        not describe it (deleted, hidden from the bot, a type discord.py does not know):
        the send then goes to the bare id, as without look-ups, and Discord's answer to it
        says what is wrong.

        TransientDeliveryError when Discord cannot answer now (5xx, rate limited, timeout,
        network). Nothing is posted yet, so the outbox's retry (same nonce) is safe, where
        a send made blind could go to a forum as a message, which Discord refuses for good.
        """
        try:
            return await self._lookup.channel(client, channel_id)
        except Exception as exc:
            if self._replaced(client):
                raise self._replaced_error("a look-up") from exc
            mapped = delivery_error(exc, f"looking up channel {channel_id}")
            if isinstance(mapped, TransientDeliveryError):
                raise mapped from exc
            if mapped is None and not isinstance(exc, discord.ClientException):
                raise
            log.debug("discord: channel %d not looked up (%s): sending to its id", channel_id, exc)
            return None

    async def deliver(self, delivery: Delivery, event: Event) -> str | None:
        """Post the event's card in the delivery's channel; returns the message id.

        Where the bot may not embed links, the card goes out as plain text (Discord would
        drop the embed and leave the bare content line), and the channel is reported.
        """
        client = self._connected_client()
        async with self._replaced_is_transient(client, "sending"):
            return await self._deliver(client, delivery, event)

    async def _deliver(
        self, client: discord.Client, delivery: Delivery, event: Event
    ) -> str | None:
        channel_id = target_channel(delivery.target)
        roles = _role_ids(delivery.options.get("mention_roles"))
        self._remember(delivery.target, roles)
        channel = await self._channel(client, channel_id)
        per_stream = delivery.options.get("thread") == "per_stream"
        opens_thread = per_stream and event.kind == LIVE_START
        if opens_thread and isinstance(channel, discord.ForumChannel):
            return await self._forum_post(delivery, event, channel, roles)
        in_thread = delivery.options.get("in_thread")
        if channel is not None and not takes_messages(channel) and not in_thread:
            # Known from the cache (or a look-up): a category or forum answers 50008.
            problem = not_text_problem(self.name, delivery.target, channel, SEND)
            self._problems.request_recheck(self.name, delivery.target)
            raise PermanentDeliveryError(problem.detail)
        target: discord.abc.Messageable = (
            # A notice of the session goes into its thread (whose id is the card's).
            client.get_partial_messageable(int(in_thread))
            if isinstance(in_thread, str) and in_thread.isdigit()
            else channel
            if isinstance(channel, discord.abc.Messageable)
            else client.get_partial_messageable(channel_id)
        )
        where = f"channel {channel_id}"
        # The turn comes before rendering: the outbox starts every channel's delivery at
        # once, and the first sends should not wait for all the others to be rendered.
        async with self._limiter.reserve():
            card, pings, everyone = self._new_card(delivery, event, channel, roles)
            async with self._target_call(delivery.target, where):
                sent = await target.send(nonce=delivery_nonce(delivery), **card)
        self._check_mentions(sent, pings, everyone=everyone)
        if delivery.options.get("crosspost") is True:
            await self._publish(delivery.target, channel, sent)
        if opens_thread and not in_thread:
            await self._open_thread(delivery.target, sent, event)
        return str(sent.id)

    async def _forum_post(
        self,
        delivery: Delivery,
        event: Event,
        forum: discord.ForumChannel,
        roles: Sequence[int],
    ) -> str:
        """The card as a new post of a forum (`thread = "per_stream"`), titled with the
        streamer and the stream's title; the post's first message is the card, and its id
        is the post's."""
        where = f"forum {forum.id}"
        async with self._limiter.reserve():
            card, pings, everyone = self._new_card(delivery, event, forum, roles)
            async with self._target_call(delivery.target, where):
                created = await forum.create_thread(
                    name=thread_name(event), auto_archive_duration=THREAD_ARCHIVE_MINUTES, **card
                )
        self._check_mentions(created.message, pings, everyone=everyone)
        return str(created.message.id)

    async def _open_thread(self, target: str, card: discord.Message, event: Event) -> None:
        """A thread on the card for the session (`thread = "per_stream"`). The card is
        posted whatever happens here: a refusal is shown for the channel, not retried."""
        try:
            async with self._limiter.reserve():
                await asyncio.wait_for(
                    card.create_thread(
                        name=thread_name(event), auto_archive_duration=THREAD_ARCHIVE_MINUTES
                    ),
                    self._send_timeout,
                )
        except discord.Forbidden:
            self._problems.report(
                TargetProblem(
                    self.name,
                    target,
                    NO_THREADS,
                    f'thread = "per_stream", but the bot may not create threads in channel'
                    f" {target}: allow Create Public Threads (and Send Messages in Threads)"
                    " for the bot's role there; cards are posted without a thread meanwhile",
                    blocking=False,
                    origin=SEND,
                )
            )
        except (discord.HTTPException, TimeoutError, ValueError) as exc:
            # ValueError: discord.py makes no thread on a message of a channel it knows
            # nothing about (the look-up was refused, yet the send went through).
            log.warning("discord: no thread on card %d in channel %s (%s)", card.id, target, exc)
        else:
            self._problems.resolve(self.name, target, NO_THREADS)

    async def _close_thread(self, thread_id: int) -> None:
        """Archive a session's thread at its end. Archiving needs Manage Threads; without
        it the thread archives itself an hour after its last message (its
        auto_archive_duration), which is said once."""
        client = self._connected_client()
        try:
            async with self._limiter.reserve():
                fetched = client.fetch_channel(thread_id)
                thread = await asyncio.wait_for(fetched, self._send_timeout)
                if isinstance(thread, discord.Thread) and not thread.archived:
                    await asyncio.wait_for(thread.edit(archived=True), self._send_timeout)
        except discord.NotFound:
            return  # no thread was made (the channel refused it, and said so)
        except discord.Forbidden:
            if thread_id not in self._unarchived:
                self._unarchived.add(thread_id)
                log.info(
                    "discord: thread %d not archived at the stream's end: the bot lacks"
                    " Manage Threads; Discord archives it an hour after its last message",
                    thread_id,
                )
        except (discord.HTTPException, TimeoutError) as exc:
            log.warning("discord: thread %d not archived (%s)", thread_id, exc)

    def _new_card(
        self, delivery: Delivery, event: Event, channel: object, roles: Sequence[int]
    ) -> tuple[dict[str, Any], list[str], bool]:
        """The keyword arguments of a new card's send (a message, or a forum post's first
        message), the roles it pings, and whether it pings @everyone."""
        message = self._renderer.render(
            FORMAT,
            event,
            templates=delivery.options.get("templates"),
            locale=delivery.options.get("locale"),
            mention_roles=roles,
            mention_everyone=delivery.options.get("mention_everyone") is True,
        )
        content, embeds = self._card(delivery.target, channel, message)
        pings = list(message.allowed_mentions["roles"])
        everyone = "everyone" in message.allowed_mentions["parse"]
        card: dict[str, Any] = {
            "content": content,
            "embeds": embeds,
            "allowed_mentions": allowed_mentions_for(pings, everyone=everyone),
            # A route's `silent` or quiet hours: SUPPRESS_NOTIFICATIONS (4096).
            "silent": delivery.options.get("silent") is True,
            **_buttons(message),
        }
        return card, pings, everyone

    async def _publish(self, target: str, channel: object, sent: discord.Message) -> None:
        """Publish a card to the servers following its announcement channel (a route's
        `crosspost`). The card is posted whatever happens here, so nothing is raised: a
        failure is said, and the delivery stands (a retry would post the card twice)."""
        if not (isinstance(channel, discord.TextChannel) and channel.is_news()):
            self._problems.report(
                TargetProblem(
                    self.name,
                    target,
                    NOT_ANNOUNCEMENT,
                    f"crosspost = true, but channel {target} is not an announcement channel;"
                    " its cards are posted, not published (make it one in its settings, or"
                    " drop crosspost from the route)",
                    blocking=False,
                    origin=SEND,
                )
            )
            return
        self._problems.resolve(self.name, target, NOT_ANNOUNCEMENT)
        try:
            async with self._limiter.reserve():
                await asyncio.wait_for(sent.publish(), self._send_timeout)
        except discord.RateLimited as exc:
            log.warning(
                "discord: card %d in channel %s not published: Discord allows about 10"
                " publishes per announcement channel per hour (next in %.0fs)",
                sent.id,
                target,
                exc.retry_after,
            )
        except (discord.HTTPException, TimeoutError) as exc:
            log.warning("discord: card %d in channel %s not published (%s)", sent.id, target, exc)

    async def edit(self, delivery: Delivery, message_id: str, event: Event) -> None:
        """Edit the card `message_id` to show `event`; MessageGone if it was deleted.

        As plain text where the bot may not embed links (so an ended card still says so).
        """
        client = self._connected_client()
        async with self._replaced_is_transient(client, "editing"):
            await self._edit(client, delivery, message_id, event)

    async def _edit(
        self, client: discord.Client, delivery: Delivery, message_id: str, event: Event
    ) -> None:
        channel_id = target_channel(delivery.target)
        try:
            card = int(message_id)
        except ValueError:
            raise MessageGone(f"{message_id!r} is not a Discord message id") from None
        self._remember(delivery.target, ())
        channel = await self._channel(client, channel_id)
        per_stream = delivery.options.get("thread") == "per_stream"
        # A forum post's card is its first message, in the post (whose id is the card's).
        home = card if isinstance(channel, discord.ForumChannel) else channel_id
        partial = client.get_partial_messageable(home).get_partial_message(card)
        where = f"message {card} in channel {home}"
        async with self._limiter.reserve():
            message = self._renderer.render(
                FORMAT,
                event,
                templates=delivery.options.get("templates"),
                locale=delivery.options.get("locale"),
            )
            content, embeds = self._card(delivery.target, channel, message)
            pings = message.allowed_mentions["roles"]
            edit = functools.partial(
                partial.edit,
                content=content,
                embeds=embeds,
                allowed_mentions=allowed_mentions_for(pings),
                # None removes a button an earlier version of the card had.
                view=_link_view(message),
            )
            async with self._target_call(delivery.target, where):
                try:
                    await edit()
                except discord.HTTPException as exc:
                    if exc.code != ARCHIVED_THREAD or home == channel_id:
                        raise
                    # A forum post archived at the end: reopening it needs only Send
                    # Messages; it is archived again below, or by Discord in an hour.
                    thread = await client.fetch_channel(home)
                    if not isinstance(thread, discord.Thread):
                        raise
                    await thread.edit(archived=False)
                    await edit()
                    per_stream = True
        if per_stream and event.kind == LIVE_END:
            await self._close_thread(card)

    def _card(
        self, target: str, channel: object, message: DiscordMessage
    ) -> tuple[str | None, list[discord.Embed]]:
        """(content, embeds) to send: the embed card, or the text card without Embed Links."""
        if self._embeds_allowed(target, channel):
            return message.content or None, _embeds(message.embed)
        return message.text or message.content or None, []

    def _embeds_allowed(self, target: str, channel: object) -> bool:
        """False when the gateway's cache says the bot may post but not embed links there;
        reports that (once: the registry logs a problem when it is new) or its fix."""
        perms = bot_permissions(channel)
        if perms is None or not can_post(channel, perms):
            return True  # unknown, or the send fails anyway and says why
        if perms.embed_links:
            self._problems.resolve(self.name, target, NO_EMBED_LINKS)
            return True
        self._problems.report(no_embed_links_problem(self.name, target, channel, SEND))
        return False

    @contextlib.asynccontextmanager
    async def _target_call(self, target: str, where: str) -> AsyncIterator[None]:
        """platform_call, and a preflight of `target` again when Discord's refusal says
        something about the channel (gone, hidden, read-only, not text); what was looked
        up about it is stale then."""
        try:
            async with platform_call(where, self._send_timeout):
                yield
        except PermanentDeliveryError as exc:
            cause = exc.__cause__
            if isinstance(cause, discord.HTTPException) and cause.code in TARGET_ERRORS:
                self._lookup.forget(target_channel(target))
                self._problems.request_recheck(self.name, target)
            raise

    def _remember(self, target: str, roles: Sequence[int]) -> None:
        self._targets.add(target)
        if roles:
            self._mention_roles.setdefault(target, set()).update(roles)

    def _permissions_changed(self, guild_id: int) -> None:
        """The gateway said a channel, role or the bot's member changed in a server: what
        was found about its channels may be stale. Resolves an Embed Links problem that is
        fixed now, and has the preflight look at each of those channels again."""
        self._lookup.forget_guild(guild_id)  # the cache has it now, or will
        client = self._client
        if client is None or self._stopping:
            return
        for target in sorted(self._targets):
            try:
                channel = client.get_channel(target_channel(target))
            except PermanentDeliveryError:
                continue
            guild = getattr(channel, "guild", None)
            if channel is not None and getattr(guild, "id", None) != guild_id:
                continue  # another server's channel (an uncached one may be this one's)
            perms = bot_permissions(channel)
            if perms is not None and perms.embed_links:
                self._problems.resolve(self.name, target, NO_EMBED_LINKS)
            self._problems.request_recheck(self.name, target)

    async def delete(self, delivery: Delivery, message_id: str) -> None:
        """Delete the card `message_id`; one already gone (404) counts as deleted.

        A refusal (say Missing Permissions, 50013) is a PermanentDeliveryError and never
        MessageGone: the card is still there, so the caller edits it instead.
        """
        client = self._connected_client()
        async with self._replaced_is_transient(client, "deleting"):
            await self._delete(client, delivery, message_id)

    async def _delete(self, client: discord.Client, delivery: Delivery, message_id: str) -> None:
        channel_id = target_channel(delivery.target)
        try:
            card = int(message_id)
        except ValueError:
            raise PermanentDeliveryError(f"{message_id!r} is not a Discord message id") from None
        partial = client.get_partial_messageable(channel_id).get_partial_message(card)
        where = f"message {card} in channel {channel_id}"
        try:
            async with self._limiter.reserve(), platform_call(where, self._send_timeout):
                try:
                    await partial.delete()
                except discord.NotFound as exc:
                    # 10008 Unknown Message (a moderator was first, or a retry after a lost
                    # answer) or 10003 Unknown Channel: the message is not there any more.
                    log.debug("discord: %s was already gone: %s", where, exc)
        except MessageGone as exc:  # 50005: there, but not the bot's to delete
            raise PermanentDeliveryError(str(exc)) from exc

    async def preflight(
        self,
        targets: Sequence[str],
        *,
        mention_roles: Mapping[str, Collection[int]] | None = None,
        thread_targets: Collection[str] | None = None,
    ) -> list[TargetProblem] | None:
        """Check each channel in `targets` from the gateway's cache (REST for one it does
        not hold): it exists, takes messages, and the bot may view it, post, embed links
        and ping the mention roles there, and open a thread (or forum post) per session
        in `thread_targets`. None while not connected.

        `mention_roles` (target -> role ids, from the routes) replaces what the sink knows
        for those targets; without it, the roles seen on deliveries so far are checked
        (so a re-check after a permission change still covers them).
        """
        client = self._client
        if client is None or self._state != "running" or not client.is_ready():
            return None
        self._targets.update(targets)
        if mention_roles is not None:
            for target, roles in mention_roles.items():
                self._mention_roles[target] = set(roles)
        known = {target: tuple(self._mention_roles.get(target, ())) for target in targets}
        if thread_targets is not None:
            self._thread_targets = set(thread_targets)
        try:
            async with asyncio.timeout(self._send_timeout):
                return await check_targets(
                    client,
                    self.name,
                    targets,
                    known,
                    thread_targets=self._thread_targets,
                    fetch_channel=functools.partial(self._lookup.channel, client),
                )
        except TimeoutError:
            return None  # Discord too slow to answer a lookup: not checked this time
        except Exception:
            # A reshard replaced (and closed) the client mid-check: aiohttp's "Session
            # is closed" (a RuntimeError), or its AssertionError for a request already
            # under way when the session closed. Not checked this time; the next check
            # runs on the new client.
            if self._client is not client or client.is_closed():
                return None
            raise

    def _check_mentions(
        self, sent: discord.Message, wanted: Sequence[str], *, everyone: bool
    ) -> None:
        """Say once per channel when a configured role, or a route's @everyone, did not
        ping."""
        self._check_pings(sent, wanted)
        if everyone and not sent.mention_everyone:
            self._check_everyone(sent)

    def _check_pings(self, sent: discord.Message, wanted: Sequence[str]) -> None:
        """Say once per channel and role when a configured role ping did not ping."""
        if not wanted or sent.guild is None:
            return  # an uncached channel: the roles cannot be looked up
        pinged = {role.id for role in sent.role_mentions}
        for role in map(int, wanted):
            key = (sent.channel.id, role)
            if role in pinged or key in self._unpinged:
                continue
            self._unpinged.add(key)
            log.warning(
                "discord: role %d was not pinged in channel %d: it does not exist there, or "
                'it is not mentionable (Server Settings > Roles > "Allow anyone to @mention '
                'this role") and the bot lacks Mention @everyone, @here and All Roles',
                role,
                sent.channel.id,
            )

    def _check_everyone(self, sent: discord.Message) -> None:
        """Say once per channel when a route's @everyone did not ping."""
        key = (sent.channel.id, 0)
        if key in self._unpinged:
            return
        self._unpinged.add(key)
        log.warning(
            "discord: @everyone (mention_everyone = true) did not ping in channel %d: the"
            " bot lacks Mention @everyone, @here and All Roles there",
            sent.channel.id,
        )


def _link_view(message: DiscordMessage) -> discord.ui.View | None:
    """The card's link button (an ended card's replay), or None. A link button needs no
    interaction handling, so the view never times out and is never listened to."""
    if message.button is None:
        return None
    label, url = message.button
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(style=discord.ButtonStyle.link, label=label, url=url))
    return view


def _buttons(message: DiscordMessage) -> dict[str, Any]:
    """`view=` for a send: only when there is a button (a send takes no None)."""
    view = _link_view(message)
    return {"view": view} if view is not None else {}


def _embeds(embed: Mapping[str, Any]) -> list[discord.Embed]:
    # An empty list, not None: an edit then removes an embed the old card had.
    return [discord.Embed.from_dict(embed)] if embed else []


def _role_ids(value: object) -> list[int]:
    if not isinstance(value, list):
        return []
    roles = []
    for item in value:
        with contextlib.suppress(TypeError, ValueError):
            roles.append(int(item))
    return roles


async def _retry_after(exc: discord.HTTPException) -> float | None:
    """The seconds a 429 asks to wait: its Retry-After header, else the JSON body's
    retry_after (discord.py keeps the answer, whose body it has already read)."""
    response = exc.response
    headers = getattr(response, "headers", None) or {}
    value: object = headers.get("Retry-After")
    if value is None:
        reader = getattr(response, "json", None)
        try:
            body = await reader(content_type=None) if reader is not None else None
        except Exception:  # no body kept, or not JSON: the backoff alone decides
            body = None
        value = body.get("retry_after") if isinstance(body, dict) else None
    if not isinstance(value, str | int | float):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), _LOGIN_RETRY_AFTER_MAX)
