"""Discord's preflight: can the bot post in each configured channel, and how well?

Read from the gateway's cache wherever it can be: with the GUILDS intent discord.py holds
every channel, role and permission overwrite of the bot's servers, and the bot's own
member (Guild.me: discord.py caches the self member from GUILD_CREATE whatever the member
cache flags, and Discord always sends it there), so `channel.permissions_for(guild.me)`
is Discord's own computation. A channel missing from the cache (in a server of a shard
another process runs, a thread the gateway did not send, or a server the bot is not in)
is looked up with REST (GET /channels/{id}; the sink's lookup.py adds the server's roles
and the bot's member, from which the same computation is made).

What is found is a TargetProblem per (channel, kind), in words a server admin can act on:
not_found, no_access, not_text, no_view, cannot_send (blocking) and no_embed_links,
role_not_pingable (the posts still go out, degraded).
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Final

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib audioop module (voice support), deprecated since
    # Python 3.11; the warning says nothing about this bot, which has no voice.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord

from bot.errors import PermanentDeliveryError, TransientDeliveryError
from bot.sinks.discord.config import channel_id
from bot.sinks.discord.errors import delivery_error
from bot.targets import PREFLIGHT, Origin, TargetProblem

NOT_FOUND: Final = "not_found"
NO_ACCESS: Final = "no_access"
NOT_TEXT: Final = "not_text"
NO_VIEW: Final = "no_view"
CANNOT_SEND: Final = "cannot_send"
NO_EMBED_LINKS: Final = "no_embed_links"
#: A route's `crosspost` names a channel that is not an announcement channel.
NOT_ANNOUNCEMENT: Final = "not_announcement"
#: A route's `thread = "per_stream"`, in a channel where the bot may not make threads.
NO_THREADS: Final = "no_threads"
ROLE_NOT_PINGABLE: Final = "role_not_pingable"

_T = discord.ChannelType
#: Threads take messages with Send Messages in Threads, in their parent's overwrites.
THREAD_TYPES: Final = frozenset({_T.news_thread, _T.public_thread, _T.private_thread})
#: What takes messages: text and announcement channels, threads, and the text chat of a
#: voice or stage channel. A category, forum or media channel answers 400
#: 50008 "Cannot send messages in a non-text channel" (a forum takes posts, which are
#: threads: route to one of those).
MESSAGE_TYPES: Final = frozenset({_T.text, _T.news, _T.voice, _T.stage_voice}) | THREAD_TYPES

_KIND_NAMES: Final = {
    _T.text: "text channel",
    _T.news: "announcement channel",
    _T.voice: "voice channel",
    _T.stage_voice: "stage channel",
    _T.category: "category",
    _T.forum: "forum channel",
    _T.media: "media channel",
    _T.news_thread: "thread",
    _T.public_thread: "thread",
    _T.private_thread: "private thread",
}
_NAMED_CHANNEL = discord.abc.GuildChannel | discord.Thread


def kind_name(channel_type: discord.ChannelType) -> str:
    """What Discord's UI calls a channel of this type ("forum channel", "category")."""
    return _KIND_NAMES.get(channel_type, f"channel of type {channel_type.value}")


def takes_messages(channel: object) -> bool:
    """False for a channel Discord answers 50008 for (a category, forum or media channel)."""
    channel_type = getattr(channel, "type", None)
    return not isinstance(channel_type, discord.ChannelType) or channel_type in MESSAGE_TYPES


def _label(target: str, channel: object) -> str:
    name = getattr(channel, "name", None)
    return f"channel {target} ({name!r})" if name else f"channel {target}"


def bot_permissions(channel: object) -> discord.Permissions | None:
    """The bot's permissions in a cached guild channel or thread, or None when the cache
    cannot tell (no guild, the bot's member or a thread's parent missing)."""
    if not isinstance(channel, _NAMED_CHANNEL):
        return None
    me = channel.guild.me
    if me is None:
        return None
    try:
        return channel.permissions_for(me)
    except discord.ClientException:  # a thread whose parent is not cached
        return None


def can_post(channel: object, perms: discord.Permissions) -> bool:
    """View Channel and Send Messages (Send Messages in Threads in a thread)."""
    if not perms.view_channel:
        return False
    if getattr(channel, "type", None) in THREAD_TYPES:
        return perms.send_messages_in_threads
    return perms.send_messages


def not_text_problem(sink: str, target: str, channel: object, origin: Origin) -> TargetProblem:
    """A channel that takes no messages, named by what it is."""
    channel_type = getattr(channel, "type", None)
    kind = kind_name(channel_type) if isinstance(channel_type, discord.ChannelType) else "?"
    what = f"{_label(target, channel)} is a {kind}"
    if channel_type in (_T.forum, _T.media):
        fix = "route to a text or announcement channel, or to one of its posts (a thread)"
    else:
        fix = "route to a text or announcement channel, or a thread"
    return TargetProblem(
        sink, target, NOT_TEXT, f"{what}: Discord takes no messages there; {fix}", origin=origin
    )


def no_embed_links_problem(
    sink: str, target: str, channel: object, origin: Origin
) -> TargetProblem:
    """Embed Links denied: cards go out as plain text (the same words from send and check)."""
    return TargetProblem(
        sink,
        target,
        NO_EMBED_LINKS,
        f"the bot may not embed links in {_label(target, channel)}, so cards go out as plain "
        "text; allow Embed Links for the bot's role (or @everyone) in that channel's "
        "permissions",
        blocking=False,
        origin=origin,
    )


def check_channel(
    sink: str,
    target: str,
    channel: object,
    mention_roles: Collection[int] = (),
    *,
    per_stream: bool = False,
) -> list[TargetProblem]:
    """What is wrong with posting in `channel` (found in the cache or by REST); with
    `per_stream`, with opening a thread there per session (a post, in a forum)."""
    if per_stream and isinstance(channel, discord.ForumChannel):
        return _forum_problems(sink, target, channel)
    if not takes_messages(channel):
        return [not_text_problem(sink, target, channel, PREFLIGHT)]
    perms = bot_permissions(channel)
    if perms is None:
        return []  # nothing cached to compute from; the sends will tell
    label = _label(target, channel)
    if not perms.view_channel:
        detail = (
            f"the bot may not view {label}: allow View Channel for the bot's role in that "
            "channel's permissions"
        )
        return [TargetProblem(sink, target, NO_VIEW, detail)]
    if not can_post(channel, perms):
        if getattr(channel, "type", None) in THREAD_TYPES:
            right = "Send Messages in Threads for the bot's role in the parent channel's"
        else:
            right = "Send Messages for the bot's role in that channel's"
        detail = f"the bot may not post in {label}: allow {right} permissions"
        return [TargetProblem(sink, target, CANNOT_SEND, detail)]
    if isinstance(channel, discord.Thread) and channel.locked and not perms.manage_threads:
        detail = f"{label} is a locked thread: unlock it, or give the bot Manage Threads there"
        return [TargetProblem(sink, target, CANNOT_SEND, detail)]
    problems = []
    if not perms.embed_links:
        problems.append(no_embed_links_problem(sink, target, channel, PREFLIGHT))
    pings = _ping_problem(sink, target, channel, perms, mention_roles)
    if pings is not None:
        problems.append(pings)
    if per_stream and not (perms.create_public_threads and perms.send_messages_in_threads):
        problems.append(_no_threads(sink, target, channel, "Create Public Threads"))
    return problems


def _forum_problems(sink: str, target: str, forum: discord.ForumChannel) -> list[TargetProblem]:
    """A forum where each session is a post: Send Messages makes posts ("CREATE_PUBLIC_
    THREADS is ignored"), Send Messages in Threads posts the session's notices in it."""
    perms = bot_permissions(forum)
    if perms is None:
        return []
    if not perms.view_channel:
        detail = f"the bot may not view {_label(target, forum)}: allow View Channel for its role"
        return [TargetProblem(sink, target, NO_VIEW, detail)]
    if not perms.send_messages:
        detail = (
            f"the bot may not post in the forum {_label(target, forum)}: allow Send Messages"
            " (it makes the posts) for the bot's role there"
        )
        return [TargetProblem(sink, target, CANNOT_SEND, detail)]
    problems = []
    if not perms.embed_links:
        problems.append(no_embed_links_problem(sink, target, forum, PREFLIGHT))
    if not perms.send_messages_in_threads:
        problems.append(_no_threads(sink, target, forum, "Send Messages in Threads"))
    if forum.flags.require_tag:
        problems.append(
            TargetProblem(
                sink,
                target,
                NO_THREADS,
                f"the forum {_label(target, forum)} requires a tag on every post, and the bot"
                ' sets none: turn off "Require people to select tags" in its settings',
            )
        )
    return problems


def _no_threads(sink: str, target: str, channel: object, right: str) -> TargetProblem:
    return TargetProblem(
        sink,
        target,
        NO_THREADS,
        f'thread = "per_stream", but the bot may not use threads in {_label(target, channel)}:'
        f" allow {right} (and Send Messages in Threads) for the bot's role there; its cards"
        " are posted without a thread meanwhile",
        blocking=False,
    )


def _ping_problem(
    sink: str,
    target: str,
    channel: object,
    perms: discord.Permissions,
    mention_roles: Collection[int],
) -> TargetProblem | None:
    """Configured roles that a live_start would not ping in this channel."""
    if not mention_roles or not isinstance(channel, _NAMED_CHANNEL):
        return None
    guild = channel.guild
    missing, unpingable = [], []
    for role_id in sorted(set(mention_roles)):
        role = guild.get_role(role_id)
        if role is None:
            missing.append(str(role_id))
        elif not role.mentionable and not perms.mention_everyone:
            unpingable.append(f"{role.name} ({role_id})")
    if not missing and not unpingable:
        return None
    parts = []
    if unpingable:
        parts.append(
            f"mention_roles {', '.join(unpingable)} will not be pinged in "
            f"{_label(target, channel)}: make each mentionable (Server Settings > Roles > "
            '"Allow anyone to @mention this role") or give the bot "Mention @everyone, '
            '@here and All Roles" in that channel'
        )
    if missing:
        parts.append(
            f"mention_roles {', '.join(missing)} do not exist in the server "
            f"{guild.name!r}: fix the ids in bot.toml"
        )
    return TargetProblem(sink, target, ROLE_NOT_PINGABLE, "; ".join(parts), blocking=False)


async def check_targets(
    client: discord.Client,
    sink: str,
    targets: Sequence[str],
    mention_roles: Mapping[str, Collection[int]],
    *,
    thread_targets: Collection[str] = (),
    fetch_channel: Callable[[int], Awaitable[object]] | None = None,
) -> list[TargetProblem] | None:
    """Every problem of `targets`, or None when Discord could not be asked now (a REST
    lookup met a rate limit, a 5xx or the network): a partial answer would wrongly
    clear the earlier findings for the targets not looked at.

    `fetch_channel` looks up a channel the cache lacks (`client.fetch_channel` by
    default); the sink's (lookup.py) also brings the server's roles and the bot's member,
    so a channel of another process's shard is checked as fully as a cached one."""
    fetch = fetch_channel or client.fetch_channel
    problems: list[TargetProblem] = []
    for target in dict.fromkeys(targets):
        try:
            number = channel_id(target)
        except PermanentDeliveryError:
            detail = f"{target!r} is not a Discord channel id: fix discord_channels in bot.toml"
            problems.append(TargetProblem(sink, target, NOT_FOUND, detail))
            continue
        channel: object = client.get_channel(number)
        if channel is None:
            try:
                channel = await fetch(number)
            except discord.NotFound:
                detail = (
                    f"channel {target} does not exist (deleted, or a wrong id in "
                    "discord_channels): fix the id in bot.toml"
                )
                problems.append(TargetProblem(sink, target, NOT_FOUND, detail))
                continue
            except discord.InvalidData:  # a channel type newer than this discord.py
                detail = f"channel {target} is of a type this bot cannot post in"
                problems.append(TargetProblem(sink, target, NOT_TEXT, detail))
                continue
            except discord.Forbidden:
                detail = (
                    f"the bot cannot see channel {target}: it is not in that channel's "
                    "server (invite it with the link the log shows at start), or it may "
                    "not view the channel"
                )
                problems.append(TargetProblem(sink, target, NO_ACCESS, detail))
                continue
            except Exception as exc:
                mapped = delivery_error(exc, f"channel {target}")
                if isinstance(mapped, TransientDeliveryError):
                    return None
                if mapped is None:
                    raise
                problems.append(TargetProblem(sink, target, NO_ACCESS, str(mapped)))
                continue
        problems.extend(
            check_channel(
                sink,
                target,
                channel,
                mention_roles.get(target, ()),
                per_stream=target in thread_targets,
            )
        )
    return problems
