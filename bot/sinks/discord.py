"""The Discord sink: notification embeds, live cards edited in place, and slash commands.

discord.py runs inside the bot's one event loop: `login` and `connect` in a task (never
`Client.run`, which owns the loop). Posting and editing only need REST; the gateway
connection is there for the slash commands (INTERACTION_CREATE). Platform errors never
escape raw: each becomes a TransientDeliveryError (retry later) or a
PermanentDeliveryError (give up now), which the outbox worker acts on. Every REST request
is paced under Discord's global limit (bot/sinks/ratelimit.py), each delivery taking its
turn before it is rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Final

import aiohttp
import yarl

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib audioop module (voice support), deprecated since
    # Python 3.11; the warning says nothing about this bot, which has no voice.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    import discord.gateway
    import discord.http
    from discord import app_commands

from bot import markup
from bot.commands import (
    CHANGING_COMMANDS,
    COMMAND_HELP,
    Chat,
    CommandError,
    Commands,
    StatusReport,
)
from bot.config import DiscordConfig
from bot.durations import format_duration, looks_like_duration
from bot.errors import (
    DeliveryError,
    MessageGone,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from bot.events import Event
from bot.render import Renderer
from bot.sinks.ratelimit import WindowLimiter
from bot.store import Delivery

log = logging.getLogger(__name__)

Interaction = discord.Interaction[discord.Client]

#: What the invite link asks for. View Channel and Send Messages to post at all; Embed
#: Links because without it Discord silently drops the embed and only the one-line
#: content arrives. Editing the bot's own messages needs nothing more, and the bot never
#: reads other messages, so no Read Message History. No Mention Everyone either: a role in
#: `mention_roles` is pinged when it is mentionable; an admin who wants to ping a role
#: that is not can grant that permission knowingly (`_check_pings` logs the hint).
INVITE_PERMISSIONS: Final = discord.Permissions(
    view_channel=True, send_messages=True, embed_links=True
)
INVITE_SCOPES: Final = ("bot", "applications.commands")

#: Discord keeps an enforced nonce for a few minutes, and accepts at most 25 characters.
NONCE_LENGTH: Final = 25

DEFAULT_READY_TIMEOUT: Final = 30.0
DEFAULT_SEND_TIMEOUT: Final = 120.0
#: discord.py waits out shorter rate limits itself; a longer one becomes a transient
#: error with its retry_after, so the outbox reschedules instead of holding the chat.
#: (discord.py refuses values under 30 s.)
DEFAULT_MAX_RATELIMIT_WAIT: Final = 60.0
_LOGIN_RETRY_FIRST: Final = 2.0
_LOGIN_RETRY_MAX: Final = 300.0
# How long a delivery waits when the client is not logged in (yet, or any more).
_NOT_CONNECTED_RETRY: Final = 30.0

# Lengths for /status: one entry stays readable, and the embed within Discord's limits.
_STATUS_NAME_MAX: Final = 100
_STATUS_TITLE_MAX: Final = 200
_STATUS_CATEGORY_MAX: Final = 100
_STATUS_DESCRIPTION_BUDGET: Final = 3900
_FIELD_VALUE_MAX: Final = 1024
_LIVE_COLOUR: Final = 0xE5312B
_IDLE_COLOUR: Final = 0x4F545C

_NETWORK_ERRORS: Final = (OSError, aiohttp.ClientError, TimeoutError)
# Interaction callbacks and their follow-ups (the bot uses webhooks for nothing else).
_UNLIMITED_PATH: Final = re.compile(r"/(interactions|webhooks)/")

_OPTION_HELP: Final = {
    "streamer": "platform/channel like twitch/quinn, or a pattern like twitch/*",
    "duration": "how long, like 30m, 2h or 1d; leave out to mute until /unmute",
    "pattern": "platform/channel like twitch/quinn, or a pattern like twitch/*",
}
_APOLOGY: Final = (
    "Sorry, something went wrong on the bot's side. It has been logged for the bot's admin."
)


def delivery_nonce(delivery: Delivery) -> str:
    """The nonce for a delivery's message: the same on every retry, unlike any other's.

    With `enforce_nonce` Discord answers a repeat with the message already created, so a
    retry after a lost answer does not post twice. Not the bare row id: a fresh database
    reuses ids, and Discord would then hand back a message posted minutes ago instead.
    """
    seed = f"{delivery.id}:{delivery.event_row}:{delivery.target}:{delivery.created_at!r}"
    return "d" + hashlib.sha256(seed.encode()).hexdigest()[: NONCE_LENGTH - 1]


@contextlib.asynccontextmanager
async def _platform_call(where: str, seconds: float) -> AsyncIterator[None]:
    """One REST call: bounded by `seconds`, its failures raised as the bot's DeliveryErrors."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except Exception as exc:
        mapped = delivery_error(exc, where)
        if mapped is None:
            raise
        raise mapped from exc


def delivery_error(exc: BaseException, where: str) -> DeliveryError | None:
    """The DeliveryError a discord.py or network failure means, or None for anything else.

    Rate limits, 5xx, timeouts and network trouble are worth retrying; Missing Access,
    Missing Permissions, Unknown Channel and refused payloads are not. An edit whose
    message was deleted (10008) or is not the bot's (50005) is MessageGone.
    """
    if isinstance(exc, discord.RateLimited):
        return TransientDeliveryError(
            f"{where}: rate limited for {exc.retry_after:.1f}s", retry_after=exc.retry_after
        )
    if isinstance(exc, discord.HTTPException):
        text = f"{where}: {exc}"
        if exc.status >= 500 or exc.status in (408, 429):
            return TransientDeliveryError(text)
        if exc.code in (10008, 50005):
            return MessageGone(text)
        return PermanentDeliveryError(text)
    if isinstance(exc, _NETWORK_ERRORS):
        detail = str(exc) or "no details"
        return TransientDeliveryError(f"{where}: {type(exc).__name__}: {detail}")
    return None


def allowed_mentions_for(roles: Iterable[str | int]) -> discord.AllowedMentions:
    """Allowed mentions that ping exactly `roles`: no @everyone/@here, users or replies."""
    return discord.AllowedMentions(
        everyone=False,
        users=False,
        roles=[discord.Object(int(role)) for role in roles],
        replied_user=False,
    )


def escape_text(text: str) -> str:
    """Text from a stream or a user as literal Discord markdown that mentions nobody.

    The project's escaper (the one the templates use): besides what
    `discord.utils.escape_markdown` + `escape_mentions` cover, it also escapes headings,
    quotes and lists at line starts and breaks every `<@&id>`, `<#id>` and `</cmd:id>`.
    """
    return markup.escape_discord(markup.strip_controls(text))


@dataclass(frozen=True, slots=True)
class _Reply:
    """An answer to a slash command: markdown text (already escaped) and/or an embed."""

    text: str = ""
    embed: discord.Embed | None = None


class _Client(discord.Client):
    """discord.Client that tells the sink when it is ready."""

    def __init__(
        self,
        *,
        on_ready: Callable[[], None],
        identify_hook: Callable[..., Awaitable[None]] | None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._sink_on_ready = on_ready
        self._identify_hook = identify_hook

    async def on_ready(self) -> None:
        """The gateway session is up: commands can arrive."""
        self._sink_on_ready()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py's (a 5 s pause before a re-IDENTIFY) unless the sink was given one."""
        if self._identify_hook is None:
            await super().before_identify_hook(shard_id, initial=initial)
        else:
            await self._identify_hook(shard_id, initial=initial)


class _Tree(app_commands.CommandTree[discord.Client]):
    """The command tree; errors the handlers did not catch still get an answer."""

    async def on_error(
        self, interaction: Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Log it and apologise, so the user never sees "The application did not respond"."""
        name = interaction.command.name if interaction.command is not None else "?"
        log.error("discord: /%s failed", name, exc_info=error)
        if not interaction.response.is_done():
            with contextlib.suppress(discord.HTTPException, *_NETWORK_ERRORS):
                await interaction.response.send_message(
                    _APOLOGY, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
                )


class DiscordSink:
    """Posts notifications to Discord channels, edits live cards, answers slash commands."""

    name = "discord"
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

    def __init__(
        self,
        *,
        config: DiscordConfig,
        renderer: Renderer,
        commands: Commands,
        client_options: Mapping[str, Any] | None = None,
        before_identify_hook: Callable[..., Awaitable[None]] | None = None,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        global_limit: int | None = None,
        global_period: float | None = None,
    ) -> None:
        self._config = config
        self._renderer = renderer
        self._commands = commands
        self._client_options = dict(client_options or {})
        self._before_identify_hook = before_identify_hook
        self._ready_timeout = ready_timeout
        self._send_timeout = send_timeout
        self._state = "created"
        self._client: _Client | None = None
        self._tree: _Tree | None = None
        self._task: asyncio.Task[None] | None = None
        self._logged_in = False
        self._stopping = False
        self._ready = asyncio.Event()
        self._saved_endpoints: tuple[str, yarl.URL] | None = None
        self._unpinged: set[tuple[int, int]] = set()
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
        """created, starting, running, failed or stopped (for /healthz)."""
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
        self._point_at_endpoints()
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

    async def stop(self) -> None:
        """Close the connection, end the client task, restore discord.py's endpoints."""
        self._stopping = True
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
            self._restore_endpoints()
            self._state = "stopped"

    async def _run(self, token: str) -> None:
        """The client's life: log in (retrying network failures), sync, stay connected."""
        try:
            client = await self._login(token)
            if client is None:
                return
            self._log_invite(client)
            await self._sync_commands()
            await client.connect(reconnect=True)
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

    async def _login(self, token: str) -> _Client | None:
        """A logged-in client, or None when the token is refused (state is then failed)."""
        delay = _LOGIN_RETRY_FIRST
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
            except (discord.DiscordServerError, discord.RateLimited, *_NETWORK_ERRORS) as exc:
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
            except BaseException:
                await client.close()
                raise
            self._logged_in = True
            return client

    def _new_client(self) -> _Client:
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
            "http_trace": _paced_requests(self._limiter),
        }
        options.update(self._client_options)
        client = _Client(
            on_ready=self._on_ready, identify_hook=self._before_identify_hook, **options
        )
        self._client = client
        self._tree = self._build_tree(client)
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
            except (discord.HTTPException, *_NETWORK_ERRORS) as exc:
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
        except (discord.HTTPException, *_NETWORK_ERRORS) as exc:
            log.error("discord: could not register the slash commands: %s", exc)
            return
        if synced:
            log.info("discord: registered %d slash commands", len(synced))

    def _point_at_endpoints(self) -> None:
        """Point discord.py at api_url / gateway_url (process globals; see stop())."""
        api, gateway = self._config.api_url, self._config.gateway_url
        if api is None and gateway is None:
            return
        if self._saved_endpoints is None:
            self._saved_endpoints = (
                discord.http.Route.BASE,
                discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            )
        if api is not None:
            discord.http.Route.BASE = api.rstrip("/")
        if gateway is not None:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)

    def _restore_endpoints(self) -> None:
        if self._saved_endpoints is None:
            return
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = (
            self._saved_endpoints
        )
        self._saved_endpoints = None

    # -- delivery --------------------------------------------------------------------

    def _connected_client(self) -> discord.Client:
        client = self._client
        if client is None or not self._logged_in or client.is_closed():
            raise TransientDeliveryError(
                f"not logged in to Discord (sink {self._state})",
                retry_after=_NOT_CONNECTED_RETRY,
            )
        return client

    async def deliver(self, delivery: Delivery, event: Event) -> str | None:
        """Post the event's card in the delivery's channel; returns the message id."""
        client = self._connected_client()
        channel_id = _channel_id(delivery.target)
        roles = _role_ids(delivery.options.get("mention_roles"))
        channel = client.get_channel(channel_id)
        target: discord.abc.Messageable = (
            channel
            if isinstance(channel, discord.abc.Messageable)
            else client.get_partial_messageable(channel_id)
        )
        where = f"channel {channel_id}"
        # The turn comes before rendering: the outbox starts every channel's delivery at
        # once, and the first sends should not wait for all the others to be rendered.
        async with self._limiter.reserve():
            message = self._renderer.render_discord(event, mention_roles=roles)
            pings = message.allowed_mentions["roles"]
            async with _platform_call(where, self._send_timeout):
                sent = await target.send(
                    content=message.content or None,
                    embeds=_embeds(message.embed),
                    allowed_mentions=allowed_mentions_for(pings),
                    nonce=delivery_nonce(delivery),
                )
        self._check_pings(sent, pings)
        return str(sent.id)

    async def edit(self, delivery: Delivery, message_id: str, event: Event) -> None:
        """Edit the card `message_id` to show `event`; MessageGone if it was deleted."""
        client = self._connected_client()
        channel_id = _channel_id(delivery.target)
        try:
            card = int(message_id)
        except ValueError:
            raise MessageGone(f"{message_id!r} is not a Discord message id") from None
        partial = client.get_partial_messageable(channel_id).get_partial_message(card)
        where = f"message {card} in channel {channel_id}"
        async with self._limiter.reserve():
            message = self._renderer.render_discord(event)
            pings = message.allowed_mentions["roles"]
            async with _platform_call(where, self._send_timeout):
                await partial.edit(
                    content=message.content or None,
                    embeds=_embeds(message.embed),
                    allowed_mentions=allowed_mentions_for(pings),
                )

    async def delete(self, delivery: Delivery, message_id: str) -> None:
        """Delete the card `message_id`; one already gone (404) counts as deleted.

        A refusal (say Missing Permissions, 50013) is a PermanentDeliveryError and never
        MessageGone: the card is still there, so the caller edits it instead.
        """
        client = self._connected_client()
        channel_id = _channel_id(delivery.target)
        try:
            card = int(message_id)
        except ValueError:
            raise PermanentDeliveryError(f"{message_id!r} is not a Discord message id") from None
        partial = client.get_partial_messageable(channel_id).get_partial_message(card)
        where = f"message {card} in channel {channel_id}"
        try:
            async with self._limiter.reserve(), _platform_call(where, self._send_timeout):
                try:
                    await partial.delete()
                except discord.NotFound as exc:
                    # 10008 Unknown Message (a moderator was first, or a retry after a lost
                    # answer) or 10003 Unknown Channel: the message is not there any more.
                    log.debug("discord: %s was already gone: %s", where, exc)
        except MessageGone as exc:  # 50005: there, but not the bot's to delete
            raise PermanentDeliveryError(str(exc)) from exc

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

    # -- slash commands --------------------------------------------------------------

    def _build_tree(self, client: discord.Client) -> _Tree:
        """The slash commands, adapting Discord interactions to `bot.commands`."""
        tree = _Tree(
            client,
            allowed_contexts=app_commands.AppCommandContext(
                guild=True, dm_channel=False, private_channel=False
            ),
            allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
        )
        help_text = dict(COMMAND_HELP)
        commands = self._commands

        async def complete_streamer(
            interaction: Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            del interaction
            # Discord caps a choice's name and value at 100 characters.
            return [
                app_commands.Choice(name=key, value=key)
                for key in await commands.complete_streamers(current)
                if len(key) <= 100
            ]

        @tree.command(name="status", description=help_text["status"])
        async def status(interaction: Interaction) -> None:
            await self._answer(interaction, "status", self._status)

        @tree.command(name="mute", description=help_text["mute"])
        @app_commands.describe(
            streamer=_OPTION_HELP["streamer"], duration=_OPTION_HELP["duration"]
        )
        @app_commands.autocomplete(streamer=complete_streamer)
        @app_commands.default_permissions(manage_channels=True)
        async def mute(
            interaction: Interaction, streamer: str | None = None, duration: str | None = None
        ) -> None:
            if streamer and not duration and "/" not in streamer and looks_like_duration(streamer):
                streamer, duration = None, streamer  # "/mute 2h" typed into the first box
            by = str(interaction.user.id)

            async def run(chat: Chat, _perms: discord.Permissions) -> _Reply:
                return _Reply(escape_text(await commands.mute(chat, streamer, duration, by=by)))

            await self._answer(interaction, "mute", run)

        @tree.command(name="unmute", description=help_text["unmute"])
        @app_commands.describe(streamer=_OPTION_HELP["streamer"])
        @app_commands.autocomplete(streamer=complete_streamer)
        @app_commands.default_permissions(manage_channels=True)
        async def unmute(interaction: Interaction, streamer: str | None = None) -> None:
            async def run(chat: Chat, _perms: discord.Permissions) -> _Reply:
                return _Reply(escape_text(await commands.unmute(chat, streamer)))

            await self._answer(interaction, "unmute", run)

        @tree.command(name="mutes", description=help_text["mutes"])
        async def mutes(interaction: Interaction) -> None:
            await self._answer(interaction, "mutes", self._mutes)

        @tree.command(name="subscribe", description=help_text["subscribe"])
        @app_commands.describe(pattern=_OPTION_HELP["pattern"])
        @app_commands.autocomplete(pattern=complete_streamer)
        @app_commands.default_permissions(manage_channels=True)
        async def subscribe(interaction: Interaction, pattern: str) -> None:
            by = str(interaction.user.id)

            async def run(chat: Chat, _perms: discord.Permissions) -> _Reply:
                return _Reply(escape_text(await commands.subscribe(chat, pattern, by=by)))

            await self._answer(interaction, "subscribe", run)

        @tree.command(name="unsubscribe", description=help_text["unsubscribe"])
        @app_commands.describe(pattern=_OPTION_HELP["pattern"])
        @app_commands.autocomplete(pattern=complete_streamer)
        @app_commands.default_permissions(manage_channels=True)
        async def unsubscribe(interaction: Interaction, pattern: str) -> None:
            async def run(chat: Chat, _perms: discord.Permissions) -> _Reply:
                return _Reply(escape_text(await commands.unsubscribe(chat, pattern)))

            await self._answer(interaction, "unsubscribe", run)

        @tree.command(name="help", description=help_text["help"])
        async def help_(interaction: Interaction) -> None:
            async def run(chat: Chat, _perms: discord.Permissions) -> _Reply:
                return self._help(tree, chat)

            await self._answer(interaction, "help", run)

        del status, mute, unmute, mutes, subscribe, unsubscribe, help_
        return tree

    async def _answer(
        self,
        interaction: Interaction,
        command: str,
        run: Callable[[Chat, discord.Permissions], Awaitable[_Reply]],
    ) -> None:
        """Check permissions, run the command, and answer ephemerally whatever happens.

        Every answer is ephemeral: it is for the one who asked, keeps the channel free for
        notifications, and the admin-only part of /status stays private.
        """
        chat = Chat("discord", str(interaction.channel_id))
        perms = interaction.permissions
        if command in CHANGING_COMMANDS and not _can_manage(perms):
            reply = _Reply(
                f"You need the **Manage Channels** permission in this channel to use /{command}."
            )
        else:
            try:
                reply = await run(chat, perms)
            except CommandError as exc:
                reply = _Reply(escape_text(str(exc)))
            except Exception:
                log.exception("discord: /%s in channel %s failed", command, chat.target)
                reply = _Reply(_APOLOGY)
        try:
            await interaction.response.send_message(
                reply.text or None,
                embed=reply.embed if reply.embed is not None else discord.utils.MISSING,
                ephemeral=True,
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except (discord.HTTPException, *_NETWORK_ERRORS) as exc:
            # Too late (3 s) or Discord unreachable: nobody is left to tell but the log.
            log.warning(
                "discord: could not answer /%s in channel %s: %s", command, chat.target, exc
            )

    async def _status(self, chat: Chat, perms: discord.Permissions) -> _Reply:
        report = await self._commands.status(chat)
        return _Reply(embed=status_embed(report, admin=_can_manage(perms)))

    async def _mutes(self, chat: Chat, perms: discord.Permissions) -> _Reply:
        del perms
        # The status report carries the mutes and the `now` they are described against.
        report = await self._commands.status(chat)
        if not report.mutes:
            return _Reply("Nothing is muted here.")
        lines = [f"- {escape_text(entry.describe(report.now))}" for entry in report.mutes]
        return _Reply(markup.truncate_discord("Muted here:\n" + "\n".join(lines), 2000))

    def _help(self, tree: _Tree, chat: Chat) -> _Reply:
        lines = [
            "I post a notification here when a stream goes live, and update it as the "
            "title or category changes and when the stream ends.",
            "",
            "**Commands**",
        ]
        for name, text in COMMAND_HELP:
            command = tree.get_command(name)
            if command is None and self._config.guild_ids:
                # Registered per server (guild_ids): the tree's global list was emptied.
                first = discord.Object(self._config.guild_ids[0])
                command = tree.get_command(name, guild=first)
            usage = f"/{name}"
            if isinstance(command, app_commands.Command):
                usage += "".join(
                    f" <{p.name}>" if p.required else f" [{p.name}]" for p in command.parameters
                )
            lines.append(f"`{usage}`: {escape_text(text)}")
        lines += [
            "",
            "Streamers are named platform/channel, like `twitch/quinn`; a pattern like "
            "`twitch/*` names many. Durations look like `30m`, `2h` or `1d`.",
            "/mute, /unmute, /subscribe and /unsubscribe need the Manage Channels permission.",
            f"This channel's id is `{chat.target}` (for `discord_channels` in bot.toml).",
        ]
        return _Reply("\n".join(lines))


def status_embed(report: StatusReport, *, admin: bool) -> discord.Embed:
    """The /status answer: live streams (linked name, title, category, uptime), mutes, and
    for admins a warning when deliveries to this channel are failing."""
    lines: list[str] = []
    for index, entry in enumerate(report.live):
        name = escape_text(markup.truncate_plain(entry.name, _STATUS_NAME_MAX))
        url = markup.safe_url(entry.url)
        line = f"🔴 **[{name}]({url})**" if url else f"🔴 **{name}**"
        if entry.title:
            line += " · " + escape_text(markup.truncate_plain(entry.title, _STATUS_TITLE_MAX))
        details = []
        if entry.categories:
            categories = " · ".join(c for c in entry.categories if c)
            details.append(escape_text(markup.truncate_plain(categories, _STATUS_CATEGORY_MAX)))
        if entry.uptime is not None:
            details.append(f"live for {format_duration(entry.uptime)}")
        if details:
            line += "\n" + " · ".join(details)
        used = sum(markup.utf16_len(existing) + 1 for existing in lines)
        if used + markup.utf16_len(line) > _STATUS_DESCRIPTION_BUDGET:
            lines.append(f"…and {len(report.live) - index} more")
            break
        lines.append(line)

    embed = discord.Embed(
        title="Live now" if report.live else "Nobody is live right now",
        description="\n".join(lines) or None,
        colour=_LIVE_COLOUR if report.live else _IDLE_COLOUR,
    )
    if report.mutes:
        muted = "\n".join(f"- {escape_text(m.describe(report.now))}" for m in report.mutes)
        embed.add_field(
            name="Muted here",
            value=markup.truncate_discord(muted, _FIELD_VALUE_MAX),
            inline=False,
        )
    else:
        embed.add_field(name="Muted here", value="Nothing", inline=False)
    if admin and report.failed_deliveries:
        count = report.failed_deliveries
        embed.add_field(
            name="⚠️ Notifications are failing here",
            value=(
                f"{count} notification{'s' * (count != 1)} to this channel failed for good. "
                "Check that the bot can View Channel, Send Messages and Embed Links here; "
                "the bot's log has the details."
            ),
            inline=False,
        )
    if not report.scoped:
        embed.set_footer(text="No streams are routed to this channel, so this lists them all.")
    return embed


def _paced_requests(limiter: WindowLimiter) -> aiohttp.TraceConfig:
    """An aiohttp trace that holds each REST request of the client until `limiter` has room.

    discord.py has no hook of its own for this, but hands its `http_trace` to aiohttp,
    which awaits `on_request_start` before sending. So every request waits its turn:
    login, command sync, sends, edits, deletes, and discord.py's own retries.
    """

    async def start(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        del session
        url = params.url
        # Not the gateway websocket, and not interaction answers: Discord exempts those
        # from the global limit, and they must arrive within 3 s even during a fan-out.
        if url.scheme not in ("http", "https") or _UNLIMITED_PATH.search(url.path):
            return
        await limiter.acquire()
        context.paced = True

    async def end(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: object
    ) -> None:
        del session, params
        if getattr(context, "paced", False):
            context.paced = False
            limiter.release()

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(start)
    trace.on_request_end.append(end)
    trace.on_request_exception.append(end)
    return trace


def _embeds(embed: Mapping[str, Any]) -> list[discord.Embed]:
    # An empty list, not None: an edit then removes an embed the old card had.
    return [discord.Embed.from_dict(embed)] if embed else []


def _can_manage(perms: discord.Permissions) -> bool:
    return perms.manage_channels or perms.administrator


def _channel_id(target: str) -> int:
    try:
        channel_id = int(target)
    except ValueError:
        channel_id = 0
    if channel_id <= 0:
        raise PermanentDeliveryError(f"{target!r} is not a Discord channel id")
    return channel_id


def _role_ids(value: object) -> list[int]:
    if not isinstance(value, list):
        return []
    roles = []
    for item in value:
        with contextlib.suppress(TypeError, ValueError):
            roles.append(int(item))
    return roles
