"""The command catalogue as Discord slash commands, behind one permission gate and one
error handler.

Every command of `bot.chat.commands.CATALOGUE` (but the greeting, which Discord has no use
for) becomes a slash command with its parameters as string options; one that changes
state is hidden from members without Manage Channels, and checked again when it runs.
Every answer is ephemeral: it is for the one who asked, keeps the channel free for
notifications, and the admin-only part of /status stays private.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Final

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib audioop module (voice support), deprecated since
    # Python 3.11; the warning says nothing about this bot, which has no voice.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    from discord import app_commands

from bot import markup
from bot.chat.commands import CATALOGUE, CommandSpec, Invocation, Reply, status_view
from bot.commands import Chat, CommandError, Commands, StatusReport
from bot.render import Renderer
from bot.sinks.discord.errors import NETWORK_ERRORS
from bot.sinks.discord.format import FORMAT, DiscordReply, escape_text

log = logging.getLogger(__package__)

Interaction = discord.Interaction[discord.Client]

APOLOGY: Final = (
    "Sorry, something went wrong on the bot's side. It has been logged for the bot's admin."
)
# Discord caps an autocomplete choice's name and value at 100 characters.
_CHOICE_MAX: Final = 100


class CommandTree(app_commands.CommandTree[discord.Client]):
    """The command tree; errors the handlers did not catch still get an answer."""

    async def on_error(
        self, interaction: Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Log it and apologise, so the user never sees "The application did not respond"."""
        name = interaction.command.name if interaction.command is not None else "?"
        log.error("discord: /%s failed", name, exc_info=error)
        if not interaction.response.is_done():
            with contextlib.suppress(discord.HTTPException, *NETWORK_ERRORS):
                await interaction.response.send_message(
                    APOLOGY, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
                )


class SlashCommands:
    """Builds the slash commands from the catalogue and answers them."""

    def __init__(
        self,
        *,
        commands: Commands,
        renderer: Renderer,
        catalogue: Sequence[CommandSpec] = CATALOGUE,
    ) -> None:
        self._commands = commands
        self._renderer = renderer
        self._catalogue = tuple(spec for spec in catalogue if not spec.greeting)

    def build_tree(self, client: discord.Client) -> CommandTree:
        """A command tree holding one slash command per catalogue entry."""
        tree = CommandTree(
            client,
            allowed_contexts=app_commands.AppCommandContext(
                guild=True, dm_channel=False, private_channel=False
            ),
            allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
        )
        for spec in self._catalogue:
            tree.add_command(self._slash_command(spec))
        return tree

    def _slash_command(self, spec: CommandSpec) -> app_commands.Command[Any, ..., None]:
        async def callback(interaction: Interaction, **values: str | None) -> None:
            await self.answer(interaction, spec, values)

        # discord.py reads the options from the callback's signature: give it one.
        parameters = [
            inspect.Parameter(
                "interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Interaction
            )
        ]
        parameters += [
            inspect.Parameter(
                param.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=str if param.required else str | None,
                default=inspect.Parameter.empty if param.required else None,
            )
            for param in spec.params
        ]
        callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        if spec.params:
            app_commands.describe(**{p.name: p.help for p in spec.params})(callback)
        completed = {p.name: self._complete_streamer for p in spec.params if p.complete}
        if completed:
            app_commands.autocomplete(**completed)(callback)
        command: app_commands.Command[Any, ..., None] = app_commands.Command(
            name=spec.name, description=spec.help, callback=callback
        )
        if spec.changes_state:
            app_commands.default_permissions(manage_channels=True)(command)
        return command

    async def _complete_streamer(
        self, interaction: Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        del interaction
        return [
            app_commands.Choice(name=key, value=key)
            for key in await self._commands.complete_streamers(current)
            if len(key) <= _CHOICE_MAX
        ]

    async def answer(
        self, interaction: Interaction, spec: CommandSpec, values: Mapping[str, str | None]
    ) -> None:
        """The permission gate and the error handler around one command, then the answer."""
        chat = Chat("discord", str(interaction.channel_id))
        perms = interaction.permissions

        async def is_admin() -> bool:
            return can_manage(perms)

        reply: DiscordReply
        if spec.changes_state and not can_manage(perms):
            reply = DiscordReply(
                f"You need the **Manage Channels** permission in this channel to use "
                f"/{spec.name}.",
                {},
            )
        else:
            try:
                call = Invocation(
                    chat=chat,
                    args=spec.tidy_up(values),
                    by=str(interaction.user.id),
                    is_admin=is_admin,
                    catalogue=self._catalogue,
                )
                reply = self.render(await spec.handler(self._commands, call))
            except CommandError as exc:
                reply = DiscordReply(escape_text(str(exc)), {})
            except Exception:
                log.exception("discord: /%s in channel %s failed", spec.name, chat.target)
                reply = DiscordReply(APOLOGY, {})
        try:
            await interaction.response.send_message(
                reply.content or None,
                embed=discord.Embed.from_dict(reply.embed)
                if reply.embed
                else discord.utils.MISSING,
                ephemeral=True,
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except (discord.HTTPException, *NETWORK_ERRORS) as exc:
            # Too late (3 s) or Discord unreachable: nobody is left to tell but the log.
            log.warning(
                "discord: could not answer /%s in channel %s: %s", spec.name, chat.target, exc
            )

    def render(self, reply: Reply) -> DiscordReply:
        """A handler's reply as Discord markdown: its text escaped, or its template rendered."""
        if reply.template is None:
            return DiscordReply(escape_text(reply.text), {})
        if reply.template == "status":
            return fit_status(self._renderer, reply.view, locale=reply.locale)
        return self._renderer.render_reply(FORMAT, reply.template, reply.view, locale=reply.locale)


def fit_status(
    renderer: Renderer, view: Mapping[str, Any], *, locale: str | None = None
) -> DiscordReply:
    """status.j2 with as many live streams as fit the embed's description budget; the rest
    are counted in `more` ("…and 3 more")."""
    live = list(view["live"])
    shown = len(live)
    budget = FORMAT.status_description_budget
    while True:
        page = {**view, "live": live[:shown], "more": len(live) - shown}
        reply = renderer.render_reply(FORMAT, "status", page, locale=locale)
        used = markup.utf16_len(reply.embed.get("description", ""))
        if used <= budget or shown == 0:
            return reply
        # Drop entries in proportion to the overshoot, at least one at a time.
        shown = min(shown - 1, shown * budget // used)


def status_embed(renderer: Renderer, report: StatusReport, *, admin: bool) -> discord.Embed:
    """The /status embed for `report` (failures shown when `admin`)."""
    reply = fit_status(renderer, status_view(report, show_failures=admin))
    return discord.Embed.from_dict(reply.embed)


def can_manage(perms: discord.Permissions) -> bool:
    """Whether these permissions may change a channel's notifications (the gate)."""
    return perms.manage_channels or perms.administrator
