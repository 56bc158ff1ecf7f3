"""Protocol-level fake of Discord's REST API (v10) and gateway, for the real discord.py 2.7.

An aiohttp app on 127.0.0.1 (random port) serves REST under ``/api/v10`` and the gateway
websocket at ``/gateway`` (plus ``/gateway/resume``, READY's ``resume_gateway_url``).
discord.py talks to it unchanged once ``point_discord_at(fake)`` has redirected
``discord.http.Route.BASE`` and ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``.

Typical test::

    async with FakeDiscord() as fake:
        client = discord.Client(**fast_client_options())
        async with running_client(fake, client):
            await client.get_channel(STREAMS_CHANNEL_ID).send("live!")
            msg = await fake.wait_for_message(STREAMS_CHANNEL_ID)

Client options that keep tests fast (``fast_client_options()`` returns them):
``guild_ready_timeout=0.1`` (READY is otherwise delayed 2 s after the last GUILD_CREATE) and
``before_identify_hook = no_identify_delay`` (a re-IDENTIFY otherwise sleeps 5 s;
``running_client`` installs it). A 5xx is retried by discord.py after ``1 + 2*try`` seconds:
one 500 costs a test one second; a 429's wait is the ``retry_after`` you inject.

FakeDiscord(*, guilds=None, application_id=APPLICATION_ID, bot_user_id=BOT_USER_ID, ...)
    guilds: GUILD_CREATE-shaped dicts (``default_guild()`` is the default: text channels
    general/streams/readonly (@everyone may not send)/restricted (the bot may not see)/
    no-embeds (@everyone denied Embed Links), an announcement channel, the voice channel
    Lounge (its text chat takes messages), the forum ideas and the category Text Channels
    (both refuse messages), the thread stream-chat in streams; roles Moderator (Manage
    Channels), Staff, Streamers (mentionable), the bot's role with what the invite link
    asks for (no Mention Everyone: ``default_guild(bot_permissions=...)`` to grant more);
    members owner, mod (Manage Channels), member (none) and the bot; GUILD_CREATE carries
    only the bot's member, as Discord without the presences intent). ``token``: when set,
    any other token gets REST 401 and
    gateway close 4004. ``heartbeat_interval`` (ms), ``interaction_ack_timeout`` (3 s, as
    Discord), ``interaction_token_ttl`` (15 min), ``nonce_window`` (s),
    ``message_rate_limit=(5, 5.0)`` to enforce a per-channel bucket on message creation
    (off by default: headers then always show spare capacity), ``global_rate_limit=(50,
    1.0)`` to enforce the bot's global limit on every request made with the bot token
    (interaction answers are exempt, as on Discord; a fixed window opened by the first
    request in it; beyond it a 429 with ``"global": true``), ``allowed_intents``,
    ``foreign_guilds`` (servers the bot is not in: their channels answer 403 50001).
    ``crosspost_limit=(10, 3600.0)``: publishes (Crosspost Message) per announcement
    channel per window, and ``published_edit_limit=(3, 3600.0)``: edits of published
    messages per channel per window, as Discord enforces them (publicly reported limits,
    discord/discord-api-docs #2258 "Bots can only update published messages 3 times per
    hour" and discord.js #4956 "10 publishes ... per hour"). Over the first: a 429; over
    the second: a 429 with code 20028 whose body's ``retry_after`` is right and whose
    ``Retry-After`` header says 1, Discord's own bug (discord-api-docs #6109).
    ``recommended_shards`` (1): GET /gateway/bot's ``shards``; ``max_concurrency`` (1): its
    ``session_start_limit.max_concurrency``; ``max_guilds_per_shard`` (None: unlimited;
    Discord's is 2500): a session whose shard would hold more guilds is closed with 4011.
start() / close(), or ``async with``.
api_url, gateway_url, resume_gateway_url.
messages: channel id -> messages as Discord returns them (live dicts: edits applied,
    deleted ones removed, ephemeral interaction replies never appear here).
requests: every REST call as RecordedRequest(method, path below /api/v10, query, json,
    headers (case-insensitive), files, status). unhandled: the ones no route matched (404).
commands / guild_commands: the last bulk-synced command lists, echoed with ids.
gateway_frames: every frame the client sent; gateway_paths: each connection's path+query.
ready: asyncio.Event, set once IDENTIFY -> READY -> GUILD_CREATE(s) were sent.
wait_for_message(channel_id, predicate=None, timeout=5.0): the first stored message in the
    channel that matches (existing ones included), waiting for new ones or edits.
fail_next(method, path_pattern, *, status, json, headers=None, times=1,
    after_processing=False): the next matching request(s) get this answer (fnmatch on
    ``METHOD`` and the path, e.g. ``"/channels/*/messages"``). With after_processing the
    request takes effect first and only the answer is lost (a 500 after the write).
rate_limit_next(method, path_pattern, *, retry_after=0.05, is_global=False, times=1):
    a 429 as Discord sends it (Via header, JSON body, X-RateLimit-* headers).
delete_message(channel_id, message_id) / delete_channel(channel_id): a moderator did it;
    MESSAGE_DELETE / CHANNEL_DELETE go out; later calls get 10008 / 10003.
await update_channel(channel_id, **fields) / update_role(role_id, **fields) /
    update_member(user_id, role_ids): a moderator changed overwrites, a role's permissions
    or mentionable flag, a member's roles; CHANNEL_UPDATE (THREAD_UPDATE) /
    GUILD_ROLE_UPDATE / GUILD_MEMBER_UPDATE go out (the last one for the bot's own member
    whatever the intents, as Discord does).
A login refused for the IP address (a 429 without ``Via``, which discord.py does not
    retry): ``fail_next("GET", "/users/@me", status=429, json=..., headers={"Retry-After":
    "1"})``; fail_next adds no header of its own.
invoke_command(name, options=None, *, channel_id, guild_id, member_permissions=None,
    user_id=MEMBER_USER_ID, ...) -> InteractionResult: pushes INTERACTION_CREATE (type 2,
    the synced command's id; "group sub" names reach subcommands) and returns once the bot
    answered (after the edit or followup if it deferred). Raises CommandNotAvailable when
    Discord's client would not offer the command (default_member_permissions), ValueError
    for options the client would not send, TimeoutError if the bot never answers in time.
autocomplete(name, options, focused, ...) -> list of choices (type 4 -> callback type 8).
dispatch(event, data), request_reconnect(), invalidate_session(resumable=False),
    drop_connections(code=4000): gateway control for reconnect tests.
shards_connected() -> sorted [(shard_id, num_shards)] of the identified sessions still
    connected (duplicates kept; an unsharded session is (0, 1));
    await wait_for_shards(expected, timeout=5.0): until exactly those are connected.

Sharding, as Discord's gateway documentation ("Sharding") describes it. IDENTIFY may carry
``shard: [shard_id, num_shards]``; anything but two integers with 0 <= shard_id <
num_shards closes the socket with 4010 "Invalid shard." (without it the session is
[0, 1]). A session gets only the guilds of its shard, ``(guild_id >> 22) % num_shards ==
shard_id`` (``shard_of``): in READY's ``guilds`` (which also echoes ``shard`` when one was
sent), as GUILD_CREATE, and for every dispatch with a ``guild_id`` (GUILD_CREATE/UPDATE/
DELETE: their ``id``); events without one (DMs) go to sessions with shard_id 0 only.
Sessions are routed each on its own: "You can establish multiple sessions with the same
[shard_id, num_shards], or sessions with different num_shards values", so two sessions on
one shard (two unsharded processes, say) both get its events, INTERACTION_CREATE
included, and the slower answer gets 40060, as a bot running twice does on Discord.
GUILD_MEMBERS_CHUNK answers only the session that asked. A RESUME keeps the session's
shard. max_concurrency's 5 s identify buckets (Opcode 9 Invalid Session for an IDENTIFY
too soon after its bucket's last) only with ``identify_spacing``, since most tests skip
discord.py's own wait (``no_identify_delay``); ``identifies`` records each IDENTIFY. Not
modelled: large-bot shard multiples. ``sharded_guilds(count,
shard_count)`` builds guilds on chosen shards, each a copy of ``default_guild()`` with its
own ids (``guild_channel_id(guild, "streams")`` finds one's channel).

REST reads of what a process's cache may lack (another process's shard): Get Channel
``GET /channels/{id}`` (with ``guild_id``; 403 50001 without View Channel or in a server
the bot is not in, 404 10003), Get Guild ``GET /guilds/{id}`` (the guild object with its
roles, without GUILD_CREATE's extra fields such as channels and members;
``with_counts``), Get Guild Roles ``GET /guilds/{id}/roles``, Get Guild Member ``GET
/guilds/{id}/members/{user}``; a guild the bot is not in answers 403 50001, an unknown id
404 10004 Unknown Guild, a user not in the guild 404 10007 Unknown Member.

Behaviour modelled because a bot can get it wrong: 2000/256/4096/1024/6000/10/25 limits,
embed URLs, empty messages (50006) -> 400 like Discord; ``enforce_nonce`` idempotency;
channel permissions from roles and overwrites (403 50001 without View Channel, 50013
without Send Messages, or Send Messages in Threads in a thread, whose parent's overwrites
apply; embeds silently dropped without Embed Links); 400 50008 "Cannot send messages in a
non-text channel" for a category, forum, media or directory channel; mentions computed from
``allowed_mentions`` (so ``mentions``/``mention_roles``/``mention_everyone`` show who would be
pinged); interaction rules (3 s to acknowledge -> 10062, one acknowledgement -> 40060,
15 min tokens -> 50027, the first followup after a defer edits the loading message).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fnmatch
import hashlib
import json as jsonlib
import logging
import math
import re
import secrets
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yarl
from aiohttp import BodyPartReader, WSMsgType, web
from multidict import CIMultiDict

with warnings.catch_warnings():
    # discord.py 2.7.1 imports audioop, deprecated since Python 3.11 (PEP 594); under
    # pytest's filterwarnings=error that import would otherwise fail collection.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    import discord.gateway
    import discord.http

__all__ = [
    "ANNOUNCEMENTS_CHANNEL_ID",
    "APPLICATION_ID",
    "BOT_ROLE_PERMISSIONS",
    "BOT_USER_ID",
    "CATEGORY_ID",
    "CREATE_PUBLIC_THREADS",
    "FORUM_CHANNEL_ID",
    "GENERAL_CHANNEL_ID",
    "GUILD_ID",
    "MANAGE_THREADS",
    "MEMBER_USER_ID",
    "MOD_ROLE_ID",
    "MOD_USER_ID",
    "NO_EMBEDS_CHANNEL_ID",
    "OWNER_USER_ID",
    "READONLY_CHANNEL_ID",
    "RESTRICTED_CHANNEL_ID",
    "STAFF_ROLE_ID",
    "STREAMERS_ROLE_ID",
    "STREAMS_CHANNEL_ID",
    "THREAD_ID",
    "TOKEN",
    "VOICE_CHANNEL_ID",
    "CommandNotAvailable",
    "FakeDiscord",
    "InteractionResult",
    "RecordedRequest",
    "default_guild",
    "fast_client_options",
    "guild_channel_id",
    "no_identify_delay",
    "point_discord_at",
    "running_client",
    "shard_of",
    "sharded_guilds",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
TOKEN = "fake-bot-token.for-tests"

# Permission bits (discord.com/developers/docs/topics/permissions).
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_APPLICATION_COMMANDS = 1 << 31
MANAGE_THREADS = 1 << 34
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = discord.Permissions.all().value

# Message flags.
CROSSPOSTED = 1 << 0
HAS_THREAD = 1 << 5
# Channel flags: a forum whose posts must carry a tag.
REQUIRE_TAG = 1 << 4
SUPPRESS_EMBEDS = 1 << 2
EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_NOTIFICATIONS = 1 << 12
IS_COMPONENTS_V2 = 1 << 15

GUILD_MESSAGES_INTENT = 1 << 9
GUILDS_INTENT = 1 << 0
GUILD_MEMBERS_INTENT = 1 << 1
GUILD_PRESENCES_INTENT = 1 << 8
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)  # members, presences, message content
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
#: IDENTIFYs a bot may send per 24 hours (Get Gateway Bot's session_start_limit.total).
SESSION_START_LIMIT = 1000
#: Events whose guild is their ``id``; every other guild event carries ``guild_id``.
_GUILD_OBJECT_EVENTS = ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE")
#: What a guild has in GUILD_CREATE only (gateway-events.mdx, "Guild Create Extra
#: Fields"): Get Guild answers without them.
_GUILD_CREATE_EXTRA = frozenset(
    {
        "joined_at",
        "large",
        "unavailable",
        "member_count",
        "voice_states",
        "members",
        "channels",
        "threads",
        "presences",
        "stage_instances",
        "guild_scheduled_events",
        "soundboard_sounds",
    }
)
#: Guild object fields (guild.mdx, "Guild Structure") a GUILD_CREATE-shaped test guild
#: may leave out, as Get Guild fills them in.
_REST_GUILD_DEFAULTS: dict[str, Any] = {
    "region": None,
    "widget_enabled": False,
    "widget_channel_id": None,
    "rules_channel_id": None,
    "public_updates_channel_id": None,
    "safety_alerts_channel_id": None,
    "max_presences": None,
    "max_video_channel_users": 25,
    "max_stage_video_channel_users": 50,
    "premium_progress_bar_enabled": False,
    "incidents_data": None,
}

# The default guild's ids: fixed so tests can name them.
APPLICATION_ID = 1_210_000_000_000_000_001
BOT_USER_ID = APPLICATION_ID
GUILD_ID = 1_210_000_000_000_000_100
MOD_ROLE_ID = 1_210_000_000_000_000_110
STREAMERS_ROLE_ID = 1_210_000_000_000_000_111
STAFF_ROLE_ID = 1_210_000_000_000_000_112
BOT_ROLE_ID = 1_210_000_000_000_000_113
CATEGORY_ID = 1_210_000_000_000_000_120
GENERAL_CHANNEL_ID = 1_210_000_000_000_000_121
STREAMS_CHANNEL_ID = 1_210_000_000_000_000_122
READONLY_CHANNEL_ID = 1_210_000_000_000_000_123
RESTRICTED_CHANNEL_ID = 1_210_000_000_000_000_124
ANNOUNCEMENTS_CHANNEL_ID = 1_210_000_000_000_000_125
VOICE_CHANNEL_ID = 1_210_000_000_000_000_126
FORUM_CHANNEL_ID = 1_210_000_000_000_000_127
THREAD_ID = 1_210_000_000_000_000_128
NO_EMBEDS_CHANNEL_ID = 1_210_000_000_000_000_129
OWNER_USER_ID = 1_210_000_000_000_000_200
MOD_USER_ID = 1_210_000_000_000_000_201
MEMBER_USER_ID = 1_210_000_000_000_000_202

_EVERYONE_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | READ_MESSAGE_HISTORY
    | EMBED_LINKS
    | ATTACH_FILES
    | ADD_REACTIONS
    | USE_APPLICATION_COMMANDS
    | SEND_MESSAGES_IN_THREADS
)
#: What the bot's managed role gets from the bot's invite link (bot/sinks/discord/client.py
#: INVITE_PERMISSIONS): no Mention Everyone, so a role that is not mentionable is not pinged.
BOT_ROLE_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | SEND_MESSAGES_IN_THREADS
_JOINED_AT = "2024-01-01T00:00:00.000000+00:00"
#: Channel types that take messages: text, voice and stage (their text chat), announcement,
#: and the three thread types. A category (4), directory (14), forum (15) or media (16)
#: channel answers 400 50008 "Cannot send messages in a non-text channel".
_MESSAGE_CHANNEL_TYPES = (0, 2, 5, 10, 11, 12, 13)
_THREAD_TYPES = (10, 11, 12)
_NAME_RE = re.compile(r"^[-_'\w]{1,32}$")


# --------------------------------------------------------------------------- default guild


def _user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    user: dict[str, Any] = {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": None if bot else name.title(),
        "avatar": None,
        "public_flags": 0,
    }
    if bot:
        user["bot"] = True
    return user


def _member(user: dict[str, Any], role_ids: list[int]) -> dict[str, Any]:
    return {
        "user": user,
        "roles": [str(r) for r in role_ids],
        "nick": None,
        "avatar": None,
        "joined_at": _JOINED_AT,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
    }


def _role(
    role_id: int, name: str, permissions: int, position: int, **extra: Any
) -> dict[str, Any]:
    role = {
        "id": str(role_id),
        "name": name,
        "permissions": str(permissions),
        "position": position,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }
    role.update(extra)
    return role


def _overwrite(
    target_id: int, *, member: bool = False, allow: int = 0, deny: int = 0
) -> dict[str, Any]:
    return {
        "id": str(target_id),
        "type": 1 if member else 0,
        "allow": str(allow),
        "deny": str(deny),
    }


def _text_channel(
    channel_id: int, name: str, position: int, *overwrites: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": str(channel_id),
        "type": 0,
        "name": name,
        "position": position,
        "parent_id": str(CATEGORY_ID),
        "topic": None,
        "nsfw": False,
        "rate_limit_per_user": 0,
        "last_message_id": None,
        "flags": 0,
        "permission_overwrites": list(overwrites),
    }


def _channel_of_type(
    channel_id: int, channel_type: int, name: str, position: int, *overwrites: dict[str, Any]
) -> dict[str, Any]:
    return dict(_text_channel(channel_id, name, position, *overwrites), type=channel_type)


def _thread(thread_id: int, parent_id: int, name: str) -> dict[str, Any]:
    return {
        "id": str(thread_id),
        "type": 11,  # a public thread
        "name": name,
        "parent_id": str(parent_id),
        "owner_id": str(MOD_USER_ID),
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 1,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 10080,
            "archive_timestamp": _JOINED_AT,
            "locked": False,
            "create_timestamp": _JOINED_AT,
        },
    }


def default_guild(
    *,
    bot_user_id: int = BOT_USER_ID,
    bot_name: str = "StreamBot",
    bot_permissions: int = BOT_ROLE_PERMISSIONS,
) -> dict[str, Any]:
    """A fresh copy of the guild a FakeDiscord serves unless given others.

    `bot_permissions`: what the bot's managed role grants (the invite link's by default;
    add MENTION_EVERYONE for a bot whose server granted it).
    """
    bot = _user(bot_user_id, bot_name, bot=True)
    return {
        "id": str(GUILD_ID),
        "name": "Fake Guild",
        "owner_id": str(OWNER_USER_ID),
        "roles": [
            _role(GUILD_ID, "@everyone", _EVERYONE_PERMISSIONS, 0),
            _role(STREAMERS_ROLE_ID, "Streamers", 0, 1, mentionable=True),
            _role(STAFF_ROLE_ID, "Staff", 0, 2),
            _role(MOD_ROLE_ID, "Moderator", MANAGE_CHANNELS | MANAGE_MESSAGES, 3),
            _role(
                BOT_ROLE_ID,
                bot_name,
                bot_permissions,
                4,
                managed=True,
                tags={"bot_id": str(bot_user_id)},
            ),
        ],
        "channels": [
            {
                "id": str(CATEGORY_ID),
                "type": 4,
                "name": "Text Channels",
                "position": 0,
                "parent_id": None,
                "nsfw": False,
                "flags": 0,
                "permission_overwrites": [],
            },
            _text_channel(GENERAL_CHANNEL_ID, "general", 0),
            _text_channel(STREAMS_CHANNEL_ID, "streams", 1),
            _text_channel(
                READONLY_CHANNEL_ID, "readonly", 2, _overwrite(GUILD_ID, deny=SEND_MESSAGES)
            ),
            _text_channel(
                RESTRICTED_CHANNEL_ID, "restricted", 3, _overwrite(BOT_ROLE_ID, deny=VIEW_CHANNEL)
            ),
            _channel_of_type(ANNOUNCEMENTS_CHANNEL_ID, 5, "announcements", 4),
            # Its text chat takes messages (text in voice), as a text channel's would.
            dict(
                _channel_of_type(VOICE_CHANNEL_ID, 2, "Lounge", 5),
                bitrate=64000,
                user_limit=0,
                rtc_region=None,
            ),
            dict(
                _channel_of_type(FORUM_CHANNEL_ID, 15, "ideas", 6),
                available_tags=[],
                default_reaction_emoji=None,
                default_sort_order=None,
                default_forum_layout=0,
            ),
            # Embed Links denied to @everyone, which the bot is too: cards lose their embed.
            _text_channel(
                NO_EMBEDS_CHANNEL_ID, "no-embeds", 7, _overwrite(GUILD_ID, deny=EMBED_LINKS)
            ),
        ],
        "threads": [_thread(THREAD_ID, STREAMS_CHANNEL_ID, "stream-chat")],
        "members": [
            _member(_user(OWNER_USER_ID, "owner"), []),
            _member(_user(MOD_USER_ID, "mod"), [MOD_ROLE_ID, STAFF_ROLE_ID]),
            _member(_user(MEMBER_USER_ID, "member"), [STREAMERS_ROLE_ID]),
            _member(bot, [BOT_ROLE_ID]),
        ],
    }


#: default_guild()'s own ids (not its users'): sharded_guilds() gives each copy its own.
_GUILD_SCOPED_IDS = (
    GUILD_ID,
    MOD_ROLE_ID,
    STREAMERS_ROLE_ID,
    STAFF_ROLE_ID,
    BOT_ROLE_ID,
    CATEGORY_ID,
    GENERAL_CHANNEL_ID,
    STREAMS_CHANNEL_ID,
    READONLY_CHANNEL_ID,
    RESTRICTED_CHANNEL_ID,
    ANNOUNCEMENTS_CHANNEL_ID,
    VOICE_CHANNEL_ID,
    FORUM_CHANNEL_ID,
    THREAD_ID,
    NO_EMBEDS_CHANNEL_ID,
)


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that gets a guild's events: Discord's "Sharding Formula",
    ``shard_id = (guild_id >> 22) % num_shards``."""
    if shard_count < 1:
        raise ValueError("shard_count must be at least 1")
    return (guild_id >> 22) % shard_count


def _on_shard(shard: tuple[int, int], guild_id: int | None) -> bool:
    """Whether a session identified with ``shard`` gets an event of ``guild_id``; one of
    no guild (a DM) only shard 0 gets ("Gateway events that do not contain a guild_id
    will only be sent to the first shard")."""
    shard_id, num_shards = shard
    if guild_id is None:
        return shard_id == 0
    return shard_of(guild_id, num_shards) == shard_id


def _event_guild_id(event: str, data: dict[str, Any]) -> int | None:
    """The guild a dispatch belongs to, which picks the shard that gets it."""
    raw = data.get("id") if event in _GUILD_OBJECT_EVENTS else data.get("guild_id")
    return int(raw) if raw is not None else None


def _identify_shard(data: dict[str, Any]) -> tuple[int, int] | None:
    """The ``shard`` an IDENTIFY asks for, None when it has none.

    ValueError where Discord closes with 4010 ("You sent us an invalid shard when
    identifying"): not an array of two integers ("array of two integers (shard_id,
    num_shards)"; null included, the field being optional, not nullable), or a shard_id
    outside 0..num_shards-1 ("the zero-based integer value of the current shard").
    """
    if "shard" not in data:
        return None
    shard = data["shard"]
    if not isinstance(shard, list) or len(shard) != 2 or any(type(v) is not int for v in shard):
        raise ValueError(f"malformed shard {shard!r}")
    shard_id, num_shards = shard
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"no shard {shard_id} of {num_shards}")
    return shard_id, num_shards


def _remap_ids(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: _remap_ids(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [_remap_ids(item, ids) for item in value]
    if isinstance(value, str):
        return ids.get(value, value)
    return value


def sharded_guilds(
    count: int,
    shard_count: int,
    *,
    shard_ids: Sequence[int] | None = None,
    bot_user_id: int = BOT_USER_ID,
    bot_name: str = "StreamBot",
    bot_permissions: int = BOT_ROLE_PERMISSIONS,
) -> list[dict[str, Any]]:
    """``count`` guilds, guild i on shard ``shard_ids[i]`` of ``shard_count`` (i %
    shard_count by default), for ``FakeDiscord(guilds=...)``.

    Each is ``default_guild()`` with the guild's, its roles', channels' and thread's ids
    moved to ids of its own (the same users are members of all), named "Fake Guild i",
    so the bot can post in each one's general and streams channels; find them with
    ``guild_channel_id``. The ids are the same on every call, and none is
    default_guild()'s: a snowflake's shard is its timestamp part (above bit 22) modulo
    the count, so guild i's timestamp is picked to land on its shard, and its roles' and
    channels' ids are small offsets from the guild's, as in default_guild().
    """
    shards = list(shard_ids) if shard_ids is not None else [i % shard_count for i in range(count)]
    if shard_count < 1 or len(shards) != count or any(not 0 <= s < shard_count for s in shards):
        raise ValueError(f"need {count} shard ids in 0..{shard_count - 1}, got {shards}")
    # The first timestamp past default_guild()'s that is a multiple of shard_count.
    first = ((GUILD_ID >> 22) // shard_count + 1) * shard_count
    guilds = []
    for index, shard in enumerate(shards):
        guild_id = (first + index * shard_count + shard) << 22
        ids = {str(old): str(guild_id + old - GUILD_ID) for old in _GUILD_SCOPED_IDS}
        template = default_guild(
            bot_user_id=bot_user_id, bot_name=bot_name, bot_permissions=bot_permissions
        )
        guild = _remap_ids(template, ids)
        guild["name"] = f"Fake Guild {index}"
        guilds.append(guild)
    return guilds


def guild_channel_id(guild: dict[str, Any], name: str) -> int:
    """The id of the channel (or thread) called ``name`` in a GUILD_CREATE-shaped dict."""
    for channel in [*guild.get("channels", []), *guild.get("threads", [])]:
        if channel["name"] == name:
            return int(channel["id"])
    raise KeyError(f"no channel {name!r} in guild {guild['id']}")


def _normalize_guild(guild: dict[str, Any], bot_user: dict[str, Any]) -> dict[str, Any]:
    guild = copy.deepcopy(guild)
    gid = str(guild["id"])
    guild["id"] = gid
    guild.setdefault("name", "Guild")
    guild.setdefault("owner_id", str(OWNER_USER_ID))
    guild.setdefault("roles", [])
    if not any(r["id"] == gid for r in guild["roles"]):
        guild["roles"].insert(0, _role(int(gid), "@everyone", _EVERYONE_PERMISSIONS, 0))
    guild.setdefault("channels", [])
    guild.setdefault("members", [])
    if not any(m["user"]["id"] == bot_user["id"] for m in guild["members"]):
        guild["members"].append(
            _member(_user(int(bot_user["id"]), bot_user["username"], bot=True), [])
        )
    defaults: dict[str, Any] = {
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "features": [],
        "emojis": [],
        "stickers": [],
        "threads": [],
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "large": False,
        "joined_at": _JOINED_AT,
        "preferred_locale": "en-US",
        "verification_level": 0,
        "default_message_notifications": 1,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "afk_timeout": 300,
        "afk_channel_id": None,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "application_id": None,
        "vanity_url_code": None,
        "max_members": 500000,
    }
    for key, value in defaults.items():
        guild.setdefault(key, value)
    guild["member_count"] = len(guild["members"])
    return guild


# --------------------------------------------------------------------------- records


@dataclass
class UploadedFile:
    """One file part of a multipart request."""

    field: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """One REST request as the fake saw it, and the status it answered."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: CIMultiDict[str]
    files: list[UploadedFile] = field(default_factory=list)
    status: int = 0


@dataclass
class _Fault:
    method: str
    pattern: str
    status: int
    body: Any
    headers: dict[str, str]
    times: int
    after_processing: bool

    def matches(self, method: str, path: str) -> bool:
        return fnmatch.fnmatchcase(method, self.method.upper()) and fnmatch.fnmatchcase(
            path, self.pattern
        )


@dataclass
class _Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict[str, Any])


def _archived(channel: dict[str, Any]) -> bool:
    return channel["type"] in _THREAD_TYPES and bool(
        channel.get("thread_metadata", {}).get("archived")
    )


def _thread_params(body: dict[str, Any]) -> tuple[str, int]:
    """A thread's `name` (1-100 characters) and `auto_archive_duration` (60, 1440,
    4320 or 10080 minutes; 4320 when left out, as a new thread's default shows)."""
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise _form_error({"name": {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH"}]}})
    after = body.get("auto_archive_duration", 4320)
    if after not in (60, 1440, 4320, 10080):
        raise _form_error({"auto_archive_duration": {"_errors": [{"code": "BASE_TYPE_CHOICES"}]}})
    return name, int(after)


def _window_wait(times: dict[int, list[float]], key: int, limit: tuple[int, float]) -> float:
    """Seconds until one more fits a sliding window of `limit` (count, seconds); 0 when it
    fits now, and then it is counted."""
    count, window = limit
    now = time.monotonic()
    recent = [t for t in times.get(key, []) if now - t < window]
    if len(recent) >= count:
        times[key] = recent
        return max(window - (now - recent[0]), 0.001)
    times[key] = [*recent, now]
    return 0.0


class _ApiError(Exception):
    """An error answer in Discord's JSON shape."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, "code": code}
        if errors:
            self.body["errors"] = errors


class CommandNotAvailable(Exception):
    """Discord's client would not offer this command to this member."""


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    # Exactly "application/json": discord.py compares the header verbatim, and
    # web.json_response would append "; charset=utf-8".
    merged = {"Content-Type": "application/json"}
    merged.update(headers or {})
    return web.Response(status=status, body=jsonlib.dumps(body).encode(), headers=merged)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _is_true(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


# --------------------------------------------------------------------------- validation


def _add_error(errors: dict[str, Any], path: tuple[str, ...], code: str, message: str) -> None:
    node = errors
    for part in path:
        node = node.setdefault(part, {})
    node.setdefault("_errors", []).append({"code": code, "message": message})


def _max_len(errors: dict[str, Any], path: tuple[str, ...], value: Any, limit: int) -> int:
    if value is None:
        return 0
    text = str(value)
    if len(text) > limit:
        _add_error(errors, path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
    return len(text)


def _required_text(errors: dict[str, Any], path: tuple[str, ...], value: Any, limit: int) -> int:
    if value is None or str(value) == "":
        _add_error(errors, path, "BASE_TYPE_REQUIRED", "This field is required")
        return 0
    return _max_len(errors, path, value, limit)


def _check_url(
    errors: dict[str, Any], path: tuple[str, ...], value: Any, *, attachment_ok: bool
) -> None:
    if value is None:
        return
    parts = urlsplit(str(value))
    if attachment_ok and parts.scheme == "attachment" and parts.netloc:
        return
    if parts.scheme not in ("http", "https") or not parts.netloc:
        message = "Scheme \"%s\" is not supported. Scheme must be one of ('http', 'https')."
        if parts.scheme in ("http", "https", ""):
            message = "Not a well formed URL."
        else:
            message = message % parts.scheme
        _add_error(errors, path, "URL_TYPE_INVALID_URL", message)


def _validate_embed(embed: Any, path: tuple[str, ...], errors: dict[str, Any]) -> int:
    """Check one embed against Discord's limits; return its counted length."""
    if not isinstance(embed, dict):
        _add_error(
            errors, path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"
        )
        return 0
    total = _max_len(errors, (*path, "title"), embed.get("title"), 256)
    total += _max_len(errors, (*path, "description"), embed.get("description"), 4096)
    _check_url(errors, (*path, "url"), embed.get("url"), attachment_ok=False)
    color = embed.get("color")
    if color is not None and (not isinstance(color, int) or not 0 <= color <= 0xFFFFFF):
        _add_error(
            errors,
            (*path, "color"),
            "NUMBER_TYPE_MAX",
            "int value should be less than or equal to 16777215.",
        )
    stamp = embed.get("timestamp")
    if stamp is not None:
        try:
            datetime.fromisoformat(str(stamp))
        except ValueError:
            _add_error(
                errors, (*path, "timestamp"), "DATE_TIME_TYPE_PARSE", f"Could not parse {stamp}."
            )
    fields = embed.get("fields") or []
    if len(fields) > 25:
        _add_error(
            errors, (*path, "fields"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
        )
    for index, fld in enumerate(fields):
        fpath = (*path, "fields", str(index))
        total += _required_text(errors, (*fpath, "name"), fld.get("name"), 256)
        total += _required_text(errors, (*fpath, "value"), fld.get("value"), 1024)
    footer = embed.get("footer")
    if footer is not None:
        total += _required_text(errors, (*path, "footer", "text"), footer.get("text"), 2048)
        _check_url(
            errors, (*path, "footer", "icon_url"), footer.get("icon_url"), attachment_ok=True
        )
    author = embed.get("author")
    if author is not None:
        total += _required_text(errors, (*path, "author", "name"), author.get("name"), 256)
        _check_url(errors, (*path, "author", "url"), author.get("url"), attachment_ok=False)
        _check_url(
            errors, (*path, "author", "icon_url"), author.get("icon_url"), attachment_ok=True
        )
    for key in ("image", "thumbnail"):
        media = embed.get(key)
        if media is not None:
            if not media.get("url"):
                _add_error(
                    errors, (*path, key, "url"), "BASE_TYPE_REQUIRED", "This field is required"
                )
            _check_url(errors, (*path, key, "url"), media.get("url"), attachment_ok=True)
    return total


def _validate_allowed_mentions(
    value: Any, errors: dict[str, Any], prefix: tuple[str, ...]
) -> None:
    if value is None:
        return
    path = (*prefix, "allowed_mentions")
    parse = value.get("parse") or []
    for index, item in enumerate(parse):
        if item not in ("users", "roles", "everyone"):
            _add_error(
                errors,
                (*path, "parse", str(index)),
                "BASE_TYPE_CHOICES",
                "Value must be one of ('roles', 'users', 'everyone').",
            )
    for kind in ("users", "roles"):
        ids = value.get(kind) or []
        if kind in parse and ids:
            _add_error(
                errors,
                path,
                "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
            )
        if len(ids) > 100:
            _add_error(
                errors, (*path, kind), "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length."
            )


def _validate_message(payload: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """Return Discord-shaped form errors for a message create/edit payload (empty if fine)."""
    errors: dict[str, Any] = {}
    content = payload.get("content")
    if content is not None and not isinstance(content, str):
        _add_error(errors, (*prefix, "content"), "BASE_TYPE_STRING", "Must be a string.")
    else:
        _max_len(errors, (*prefix, "content"), content, 2000)
    nonce = payload.get("nonce")
    if isinstance(nonce, str):
        _max_len(errors, (*prefix, "nonce"), nonce, 25)
    embeds = payload.get("embeds")
    if embeds is not None:
        if len(embeds) > 10:
            _add_error(
                errors,
                (*prefix, "embeds"),
                "BASE_TYPE_MAX_LENGTH",
                "Must be 10 or fewer in length.",
            )
        total = sum(
            _validate_embed(e, (*prefix, "embeds", str(i)), errors) for i, e in enumerate(embeds)
        )
        if total > 6000:
            _add_error(
                errors,
                (*prefix, "embeds", "0"),
                "MAX_EMBED_SIZE_EXCEEDED",
                "Embed size exceeds maximum size of 6000",
            )
    _validate_allowed_mentions(payload.get("allowed_mentions"), errors, prefix)
    return errors


def _validate_options(
    options: list[dict[str, Any]], path: tuple[str, ...], errors: dict[str, Any]
) -> None:
    if len(options) > 25:
        _add_error(errors, path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    seen_optional = False
    for index, opt in enumerate(options):
        opath = (*path, str(index))
        name = opt.get("name", "")
        if not _NAME_RE.match(name) or name != name.lower():
            _add_error(
                errors,
                (*opath, "name"),
                "APPLICATION_COMMAND_INVALID_NAME",
                "Command name is invalid",
            )
        if not 1 <= len(opt.get("description", "")) <= 100:
            _add_error(
                errors,
                (*opath, "description"),
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            )
        if opt.get("type") in (1, 2):
            _validate_options(opt.get("options") or [], (*opath, "options"), errors)
            continue
        if opt.get("required"):
            if seen_optional:
                _add_error(
                    errors,
                    (*opath, "required"),
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        choices = opt.get("choices") or []
        if len(choices) > 25:
            _add_error(
                errors,
                (*opath, "choices"),
                "BASE_TYPE_MAX_LENGTH",
                "Must be 25 or fewer in length.",
            )
        if choices and opt.get("autocomplete"):
            _add_error(
                errors,
                (*opath, "autocomplete"),
                "APPLICATION_COMMAND_OPTION_CHOICES_AUTOCOMPLETE",
                "Autocomplete cannot be set if choices are present.",
            )


def _validate_commands(payload: list[dict[str, Any]]) -> dict[str, Any]:
    errors: dict[str, Any] = {}
    seen: set[tuple[str, int]] = set()
    for index, cmd in enumerate(payload):
        path = (str(index),)
        kind = cmd.get("type", 1)
        name = cmd.get("name", "")
        if not _NAME_RE.match(name) or (kind == 1 and name != name.lower()):
            _add_error(
                errors,
                (*path, "name"),
                "APPLICATION_COMMAND_INVALID_NAME",
                "Command name is invalid",
            )
        if (name, kind) in seen:
            _add_error(
                errors,
                (*path, "name"),
                "APPLICATION_COMMANDS_DUPLICATE_NAME",
                "Application command names must be unique",
            )
        seen.add((name, kind))
        if kind == 1 and not 1 <= len(cmd.get("description", "")) <= 100:
            _add_error(
                errors,
                (*path, "description"),
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            )
        _validate_options(cmd.get("options") or [], (*path, "options"), errors)
    return errors


def _validate_choices(choices: Any) -> dict[str, Any]:
    errors: dict[str, Any] = {}
    path = ("data", "choices")
    if not isinstance(choices, list):
        _add_error(errors, path, "BASE_TYPE_REQUIRED", "This field is required")
        return errors
    if len(choices) > 25:
        _add_error(errors, path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    for index, choice in enumerate(choices):
        cpath = (*path, str(index))
        name = choice.get("name")
        if not name or len(name) > 100:
            _add_error(
                errors,
                (*cpath, "name"),
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            )
        value = choice.get("value")
        if isinstance(value, str):
            _max_len(errors, (*cpath, "value"), value, 100)
        elif not isinstance(value, int | float) or isinstance(value, bool):
            _add_error(errors, (*cpath, "value"), "BASE_TYPE_REQUIRED", "This field is required")
    return errors


def _form_error(errors: dict[str, Any]) -> _ApiError:
    return _ApiError(400, 50035, "Invalid Form Body", errors)


def _unknown_channel() -> _ApiError:
    return _ApiError(404, 10003, "Unknown Channel")


def _unknown_message() -> _ApiError:
    return _ApiError(404, 10008, "Unknown Message")


def _missing_access() -> _ApiError:
    return _ApiError(403, 50001, "Missing Access")


def _empty_message() -> _ApiError:
    return _ApiError(400, 50006, "Cannot send an empty message")


def _has_body(msg: dict[str, Any]) -> bool:
    return bool(
        msg.get("content")
        or msg.get("embeds")
        or msg.get("attachments")
        or msg.get("components")
        or msg.get("sticker_items")
        or msg.get("poll")
    )


def _normalize_embed(embed: dict[str, Any]) -> dict[str, Any]:
    embed = copy.deepcopy(embed)
    embed.setdefault("type", "rich")
    for key in ("image", "thumbnail"):
        if isinstance(embed.get(key), dict):
            embed[key].setdefault("proxy_url", embed[key].get("url"))
    return embed


# --------------------------------------------------------------------------- waiting


class _Changes:
    """Wakes waiters whenever the fake's state may have changed."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait_until(self, check: Callable[[], T | None], timeout: float) -> T:
        async with asyncio.timeout(timeout):
            while True:
                found = check()
                if found is not None:
                    return found
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter


# --------------------------------------------------------------------------- interactions


class InteractionResult:
    """What the bot did with one interaction; live, updated as more requests arrive.

    response_type: the callback type (4 message, 5 deferred, 8 autocomplete, 9 modal),
    response: the callback's ``data``, message: the current @original message (edits
    applied; None before a message response or after deletion), followups: followup
    messages, choices: autocomplete choices, events: ("callback" | "edit_original" |
    "delete_original" | "followup" | "edit_followup" | "late_callback", body) in order.
    """

    def __init__(self, fake: FakeDiscord, payload: dict[str, Any], created: float) -> None:
        self._fake = fake
        self._created = created
        self.interaction = payload
        self.id = int(payload["id"])
        self.token: str = payload["token"]
        self.type: int = payload["type"]
        self.channel_id = int(payload["channel_id"])
        self.guild_id = int(payload["guild_id"])
        self.response_type: int | None = None
        self.response: dict[str, Any] | None = None
        self.message: dict[str, Any] | None = None
        self.followups: list[dict[str, Any]] = []
        self.choices: list[dict[str, Any]] | None = None
        self.events: list[tuple[str, Any]] = []
        self.deleted = False
        self.late = False

    def __repr__(self) -> str:
        return (
            f"<InteractionResult id={self.id} response_type={self.response_type}"
            f" content={self.content!r} ephemeral={self.ephemeral}>"
        )

    @property
    def content(self) -> str | None:
        """The @original message's content (after edits)."""
        source = self.message if self.message is not None else self.response
        return None if source is None else source.get("content")

    @property
    def embeds(self) -> list[dict[str, Any]]:
        """The @original message's embeds (after edits)."""
        source = self.message if self.message is not None else self.response
        return [] if source is None else list(source.get("embeds") or [])

    @property
    def flags(self) -> int:
        """The @original message's flags (64 = ephemeral, 128 = still loading)."""
        source = self.message if self.message is not None else self.response
        return 0 if source is None else int(source.get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        """Whether only the invoking user sees the reply."""
        return bool(self.flags & EPHEMERAL)

    @property
    def all_messages(self) -> list[dict[str, Any]]:
        """The @original message (if any) followed by the followups."""
        head = [self.message] if self.message is not None else []
        return head + self.followups

    async def wait_for(
        self,
        predicate: Callable[[InteractionResult], bool],
        timeout: float = 5.0,
    ) -> InteractionResult:
        """Wait until ``predicate(self)`` holds, e.g. ``lambda r: len(r.followups) == 2``."""
        return await self._fake._changes.wait_until(
            lambda: self if predicate(self) else None, timeout
        )

    def _ack_expired(self, now: float) -> bool:
        return now - self._created > self._fake.interaction_ack_timeout

    def _token_expired(self, now: float) -> bool:
        return now - self._created > self._fake.interaction_token_ttl


# --------------------------------------------------------------------------- gateway


class _Conn:
    """One gateway websocket; sends are serialized."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()
        self.session: _Session | None = None

    async def send(self, frame: dict[str, Any]) -> bool:
        async with self.lock:
            if self.ws.closed:
                return False
            try:
                await self.ws.send_str(jsonlib.dumps(frame))
            except (ConnectionError, RuntimeError):
                return False
            return True


@dataclass
class _Session:
    session_id: str
    intents: int
    conn: _Conn | None
    #: [shard_id, num_shards] from IDENTIFY; (0, 1), every guild, without one.
    shard: tuple[int, int] = (0, 1)
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


# --------------------------------------------------------------------------- the fake


Handler = Callable[..., Awaitable[_Reply]]


class FakeDiscord:
    """Discord's REST API and gateway, as much as a notification bot needs."""

    def __init__(
        self,
        *,
        guilds: list[dict[str, Any]] | None = None,
        application_id: int = APPLICATION_ID,
        bot_user_id: int = BOT_USER_ID,
        bot_name: str = "StreamBot",
        token: str | None = None,
        heartbeat_interval: int = 500,
        interaction_ack_timeout: float = 3.0,
        interaction_token_ttl: float = 15 * 60.0,
        nonce_window: float = 300.0,
        message_rate_limit: tuple[int, float] | None = None,
        global_rate_limit: tuple[int, float] | None = None,
        allowed_intents: int | None = None,
        foreign_guilds: list[dict[str, Any]] | None = None,
        crosspost_limit: tuple[int, float] = (10, 3600.0),
        published_edit_limit: tuple[int, float] = (3, 3600.0),
        recommended_shards: int = 1,
        max_concurrency: int = 1,
        max_guilds_per_shard: int | None = None,
        identify_spacing: float | None = None,
    ) -> None:
        self.recommended_shards = recommended_shards
        #: Discord's "max_concurrency ... identify requests allowed per 5 seconds": with a
        #: spacing, an IDENTIFY within it of its bucket's previous one (`shard_id %
        #: max_concurrency`) is answered Opcode 9 Invalid Session. None (the default) lets
        #: every IDENTIFY through: tests skip discord.py's own 5 s pacing
        #: (`no_identify_delay`), and test the pacing itself with it on.
        self.identify_spacing = identify_spacing
        #: Every IDENTIFY with a valid token: (time.monotonic(), shard id, accepted).
        self.identifies: list[tuple[float, int, bool]] = []
        self._last_identify: dict[int, float] = {}
        self.max_concurrency = max_concurrency
        self.max_guilds_per_shard = max_guilds_per_shard
        #: When each session was started (IDENTIFY accepted; RESUMEs do not count), for
        #: session_start_limit (time.monotonic()).
        self._session_starts: list[float] = []
        self.crosspost_limit = crosspost_limit
        self.published_edit_limit = published_edit_limit
        #: Publish and published-edit times per channel (time.monotonic()).
        self._publishes: dict[int, list[float]] = {}
        self._published_edits: dict[int, list[float]] = {}
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.token = token
        self.heartbeat_interval = heartbeat_interval
        self.interaction_ack_timeout = interaction_ack_timeout
        self.interaction_token_ttl = interaction_token_ttl
        self.nonce_window = nonce_window
        self.message_rate_limit = message_rate_limit
        self.global_rate_limit = global_rate_limit
        self.allowed_intents = allowed_intents
        self.bot_user: dict[str, Any] = {
            **_user(bot_user_id, bot_name, bot=True),
            "flags": 0,
            "verified": True,
            "mfa_enabled": False,
            "email": None,
            "locale": "en-US",
            "premium_type": 0,
        }
        raw = (
            guilds
            if guilds is not None
            else [default_guild(bot_user_id=bot_user_id, bot_name=bot_name)]
        )
        self.guilds: dict[int, dict[str, Any]] = {}
        self._channels: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.messages: dict[int, list[dict[str, Any]]] = {}
        for guild in raw:
            normalized = _normalize_guild(guild, self.bot_user)
            self.guilds[int(normalized["id"])] = normalized
            for channel in [*normalized["channels"], *normalized["threads"]]:
                self._channels[int(channel["id"])] = (normalized, channel)
                if channel["type"] in _MESSAGE_CHANNEL_TYPES:
                    self.messages[int(channel["id"])] = []
        # Servers the bot is not in: never in READY or GUILD_CREATE, and their channels
        # answer 403 50001 Missing Access, as Discord's do (so do they themselves).
        self._foreign_guild_ids: set[int] = set()
        for guild in foreign_guilds or []:
            foreign = copy.deepcopy(guild)
            foreign["id"] = str(foreign["id"])
            self._foreign_guild_ids.add(int(foreign["id"]))
            foreign.setdefault("owner_id", str(OWNER_USER_ID))
            foreign.setdefault("roles", [_role(int(foreign["id"]), "@everyone", 0, 0)])
            foreign.setdefault("members", [])
            foreign.setdefault("threads", [])
            for channel in [*foreign.get("channels", []), *foreign["threads"]]:
                self._channels[int(channel["id"])] = (foreign, channel)

        self.requests: list[RecordedRequest] = []
        self.errors: list[Exception] = []
        self.unhandled: list[RecordedRequest] = []
        self.commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.gateway_frames: list[dict[str, Any]] = []
        self.gateway_paths: list[str] = []
        self.ready = asyncio.Event()

        self._changes = _Changes()
        self._faults: list[_Fault] = []
        self._by_id: dict[int, dict[str, Any]] = {}
        self._nonces: dict[tuple[int, str], tuple[float, int]] = {}
        self._buckets: dict[int, tuple[float, int]] = {}  # key -> (resets at, used)
        self._global_window = (0.0, 0)  # (opened at, used), for global_rate_limit
        self._interactions: dict[int, InteractionResult] = {}
        self._tokens: dict[str, InteractionResult] = {}
        self._sessions: dict[str, _Session] = {}
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._increment = 0
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._routes: list[tuple[str, re.Pattern[str], Handler, bool]] = []
        self._add_routes()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Serve on 127.0.0.1 at a free port."""
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._handle_rest)
        app.router.add_get("/gateway", self._handle_gateway)
        app.router.add_get("/gateway/resume", self._handle_gateway)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def close(self) -> None:
        """Close gateway connections and stop serving."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self._conns):
            await conn.ws.close(code=1001, message=b"fake shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._sessions.clear()

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._port is None:
            raise RuntimeError("FakeDiscord is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        """What ``discord.http.Route.BASE`` must be."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """What ``DiscordWebSocket.DEFAULT_GATEWAY`` must be."""
        return f"ws://127.0.0.1:{self._port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        """READY's ``resume_gateway_url``: a different path so tests can see it was used."""
        return f"ws://127.0.0.1:{self._port}/gateway/resume"

    # ----------------------------------------------------------------- test controls

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int,
        json: Any,
        headers: dict[str, str] | None = None,
        times: int = 1,
        after_processing: bool = False,
    ) -> None:
        """Answer the next ``times`` matching requests with this status and JSON body."""
        self._faults.append(
            _Fault(
                method, path_pattern, status, json, dict(headers or {}), times, after_processing
            )
        )

    def rate_limit_next(
        self,
        method: str,
        path_pattern: str,
        *,
        retry_after: float = 0.05,
        is_global: bool = False,
        times: int = 1,
    ) -> None:
        """Answer the next matching requests with a 429 shaped like Discord's."""
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Scope": "global" if is_global else "user",
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": is_global,
        }
        self.fail_next(method, path_pattern, status=429, json=body, headers=headers, times=times)

    def delete_message(self, channel_id: int, message_id: int) -> None:
        """A moderator deleted a message: it disappears and MESSAGE_DELETE goes out."""
        guild, _ = self._channel(channel_id)
        msg = self._find_message(channel_id, message_id)
        self._remove_message(msg)
        self._spawn(self._dispatch_delete(guild, msg))
        self._changes.notify()

    def delete_channel(self, channel_id: int) -> None:
        """A moderator deleted a channel: later calls get 10003 Unknown Channel."""
        guild, channel = self._channel(channel_id)
        thread = channel["type"] in _THREAD_TYPES
        guild["threads" if thread else "channels"].remove(channel)
        del self._channels[channel_id]
        for msg in self.messages.pop(channel_id, []):
            self._by_id.pop(int(msg["id"]), None)
        data = dict(channel, guild_id=guild["id"])
        event = "THREAD_DELETE" if thread else "CHANNEL_DELETE"
        self._spawn(self.dispatch(event, data, intent=GUILDS_INTENT))
        self._changes.notify()

    async def update_channel(self, channel_id: int, **changes: Any) -> None:
        """A moderator edited a channel (say its ``permission_overwrites``): CHANNEL_UPDATE
        (THREAD_UPDATE for a thread) goes out to the sessions with the GUILDS intent."""
        guild, channel = self._channel(channel_id)
        channel.update(copy.deepcopy(changes))
        thread = channel["type"] in _THREAD_TYPES
        event = "THREAD_UPDATE" if thread else "CHANNEL_UPDATE"
        await self.dispatch(event, dict(channel, guild_id=guild["id"]), intent=GUILDS_INTENT)
        self._changes.notify()

    async def update_role(self, role_id: int, guild_id: int = GUILD_ID, **changes: Any) -> None:
        """A moderator edited a role (``permissions`` as an int, ``mentionable``...):
        GUILD_ROLE_UPDATE goes out to the sessions with the GUILDS intent."""
        guild = self.guilds[guild_id]
        role = next(r for r in guild["roles"] if int(r["id"]) == role_id)
        if "permissions" in changes:
            changes["permissions"] = str(changes["permissions"])
        role.update(changes)
        data = {"guild_id": guild["id"], "role": copy.deepcopy(role)}
        await self.dispatch("GUILD_ROLE_UPDATE", data, intent=GUILDS_INTENT)
        self._changes.notify()

    async def update_member(
        self, user_id: int, role_ids: list[int], guild_id: int = GUILD_ID
    ) -> None:
        """A moderator changed a member's roles: GUILD_MEMBER_UPDATE goes out. Discord
        sends it for the bot's own member whatever the intents, for others only with
        GUILD_MEMBERS."""
        guild = self.guilds[guild_id]
        member = self._get_member(guild, user_id)
        if member is None:
            raise KeyError(f"no member {user_id} in guild {guild_id}")
        member["roles"] = [str(role) for role in role_ids]
        data = dict(copy.deepcopy(member), guild_id=guild["id"])
        intent = None if user_id == self.bot_user_id else GUILD_MEMBERS_INTENT
        await self.dispatch("GUILD_MEMBER_UPDATE", data, intent=intent)
        self._changes.notify()

    async def wait_for_message(
        self,
        channel_id: int,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """The first message stored in the channel that matches, waiting if there is none."""

        def find() -> dict[str, Any] | None:
            for msg in self.messages.get(channel_id, []):
                if predicate is None or predicate(msg):
                    return msg
            return None

        try:
            return await self._changes.wait_until(find, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no matching message in channel {channel_id} within {timeout}s; "
                f"it has {len(self.messages.get(channel_id, []))} message(s)"
            ) from None

    async def dispatch(
        self, event: str, data: dict[str, Any], *, intent: int | None = None
    ) -> int:
        """Send a DISPATCH to every identified session whose shard gets the event (its
        ``guild_id``'s shard, or shard 0 for an event of no guild: see Sharding above),
        every such session its own copy; return how many sockets got it."""
        guild_id = _event_guild_id(event, data)
        delivered = 0
        for session in list(self._sessions.values()):
            if intent is not None and not session.intents & intent:
                continue
            if not _on_shard(session.shard, guild_id):
                continue
            async with session.lock:
                session.seq += 1
                frame = {"op": 0, "t": event, "s": session.seq, "d": data}
                session.sent.append(frame)
                del session.sent[:-500]
                if session.conn is not None and await session.conn.send(frame):
                    delivered += 1
        return delivered

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client should come back and RESUME."""
        for conn in list(self._conns):
            await conn.send({"op": 7, "d": None, "s": None, "t": None})

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION; unless resumable the sessions are forgotten."""
        if not resumable:
            self._sessions.clear()
            self._changes.notify()
        for conn in list(self._conns):
            await conn.send({"op": 9, "d": resumable, "s": None, "t": None})

    async def drop_connections(self, code: int = 4000) -> None:
        """Close every gateway socket from the server side (sessions stay resumable)."""
        for conn in list(self._conns):
            await conn.ws.close(code=code, message=b"dropped by test")

    def shards_connected(self) -> list[tuple[int, int]]:
        """(shard_id, num_shards) of every identified session whose socket is open, sorted,
        one entry per session: a shard run twice shows twice."""
        return sorted(
            session.shard
            for session in self._sessions.values()
            if session.conn is not None and not session.conn.ws.closed
        )

    async def wait_for_shards(
        self, expected: Collection[tuple[int, int]], timeout: float = 5.0
    ) -> list[tuple[int, int]]:
        """Wait until ``shards_connected()`` is exactly ``expected`` (in any order, with
        as many of each); TimeoutError says what is connected instead."""
        want = sorted((int(shard_id), int(count)) for shard_id, count in expected)

        def check() -> list[tuple[int, int]] | None:
            connected = self.shards_connected()
            return connected if connected == want else None

        try:
            return await self._changes.wait_until(check, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"shards {want} not connected within {timeout}s; "
                f"connected: {self.shards_connected()}"
            ) from None

    # ----------------------------------------------------------------- interactions API

    async def invoke_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        channel_id: int = GENERAL_CHANNEL_ID,
        guild_id: int = GUILD_ID,
        member_permissions: int | None = None,
        user_id: int = MEMBER_USER_ID,
        locale: str = "en-US",
        check_permissions: bool = True,
        timeout: float = 5.0,
    ) -> InteractionResult:
        """A member runs ``/name``; return once the bot answered (or finished deferring)."""
        result = await self._push_interaction(
            2,
            name,
            options,
            channel_id=channel_id,
            guild_id=guild_id,
            member_permissions=member_permissions,
            user_id=user_id,
            locale=locale,
            check_permissions=check_permissions,
        )
        await self._wait_acknowledged(result, name, timeout)
        if result.response_type == 5:
            try:
                await result.wait_for(
                    lambda r: (
                        r.deleted
                        or any(kind in ("edit_original", "followup") for kind, _ in r.events)
                    ),
                    timeout,
                )
            except TimeoutError:
                raise TimeoutError(
                    f"the bot deferred /{name} but never edited the reply within {timeout}s"
                ) from None
        return result

    async def autocomplete(
        self,
        name: str,
        options: dict[str, Any] | None,
        focused: str,
        *,
        channel_id: int = GENERAL_CHANNEL_ID,
        guild_id: int = GUILD_ID,
        member_permissions: int | None = None,
        user_id: int = MEMBER_USER_ID,
        locale: str = "en-US",
        timeout: float = 5.0,
    ) -> list[dict[str, Any]]:
        """A member types into option ``focused``; return the bot's choices."""
        result = await self._push_interaction(
            4,
            name,
            options,
            focused=focused,
            channel_id=channel_id,
            guild_id=guild_id,
            member_permissions=member_permissions,
            user_id=user_id,
            locale=locale,
        )
        await self._wait_acknowledged(result, name, timeout)
        return list(result.choices or [])

    async def _wait_acknowledged(
        self, result: InteractionResult, name: str, timeout: float
    ) -> None:
        limit = min(timeout, self.interaction_ack_timeout + 0.5)
        try:
            await result.wait_for(lambda r: r.response_type is not None or r.late, limit)
        except TimeoutError:
            raise TimeoutError(
                f"the bot did not answer /{name} within {limit}s "
                "(Discord would show 'The application did not respond')"
            ) from None
        if result.response_type is None:
            raise TimeoutError(
                f"the bot answered /{name} after {self.interaction_ack_timeout}s; "
                "Discord rejected the callback with 10062 Unknown interaction"
            )

    async def _push_interaction(
        self,
        itype: int,
        name: str,
        options: dict[str, Any] | None,
        *,
        focused: str | None = None,
        channel_id: int,
        guild_id: int,
        member_permissions: int | None,
        user_id: int,
        locale: str,
        check_permissions: bool = False,
    ) -> InteractionResult:
        guild = self.guilds.get(guild_id)
        if guild is None:
            raise ValueError(f"unknown guild {guild_id}")
        owner, channel = self._channels.get(channel_id, (None, None))
        if channel is None or owner is not guild:
            raise ValueError(f"channel {channel_id} is not in guild {guild_id}")
        member = self._get_member(guild, user_id)
        if member is None:
            raise ValueError(f"user {user_id} is not a member of guild {guild_id}")
        perms = (
            member_permissions
            if member_permissions is not None
            else self._permissions(guild, user_id, channel)
        )
        command, is_guild_command = self._find_command(name, guild_id)
        if check_permissions:
            required = command.get("default_member_permissions")
            if (
                required is not None
                and not perms & ADMINISTRATOR
                and perms & int(required) != int(required)
            ):
                raise CommandNotAvailable(
                    f"/{name} needs permissions {required}; member has {perms}: Discord's "
                    "client would not offer it (pass check_permissions=False to force)"
                )
        resolved: dict[str, dict[str, Any]] = {}
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": 1,
            "options": self._build_options(command, name, options, focused, guild, resolved),
        }
        if not data["options"]:
            del data["options"]
        if resolved:
            data["resolved"] = resolved
        if is_guild_command:
            data["guild_id"] = str(guild_id)
        iid = self._snowflake()
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "data": data,
            "guild": {
                "id": str(guild_id),
                "locale": guild["preferred_locale"],
                "features": guild["features"],
            },
            "guild_id": str(guild_id),
            "channel": dict(
                copy.deepcopy(channel), guild_id=str(guild_id), permissions=str(perms)
            ),
            "channel_id": str(channel_id),
            "member": dict(copy.deepcopy(member), permissions=str(perms)),
            "token": "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48),
            "version": 1,
            "app_permissions": str(self._permissions(guild, self.bot_user_id, channel)),
            "locale": locale,
            "guild_locale": guild["preferred_locale"],
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id)},
            "context": 0,
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }
        result = InteractionResult(self, payload, asyncio.get_running_loop().time())
        self._interactions[iid] = result
        self._tokens[result.token] = result
        if not await self.dispatch("INTERACTION_CREATE", payload):
            raise RuntimeError(
                f"no connected gateway session runs the shard of guild {guild_id}: "
                "is the client ready, and does it run that shard?"
            )
        return result

    def _find_command(self, name: str, guild_id: int) -> tuple[dict[str, Any], bool]:
        top = name.split(maxsplit=1)[0]
        for cmd in self.guild_commands.get(guild_id, []):
            if cmd["name"] == top and cmd.get("type", 1) == 1:
                return cmd, True
        for cmd in self.commands:
            if cmd["name"] == top and cmd.get("type", 1) == 1:
                return cmd, False
        raise LookupError(f"no synced slash command named {top!r}: did the bot call tree.sync()?")

    def _build_options(
        self,
        command: dict[str, Any],
        name: str,
        values: dict[str, Any] | None,
        focused: str | None,
        guild: dict[str, Any],
        resolved: dict[str, dict[str, Any]],
    ) -> list[dict[str, Any]]:
        top: list[dict[str, Any]] = []
        current = top
        defs: list[dict[str, Any]] = command.get("options") or []
        for part in name.split()[1:]:
            found = next((o for o in defs if o["name"] == part and o["type"] in (1, 2)), None)
            if found is None:
                raise LookupError(f"/{name}: no subcommand {part!r}")
            node: dict[str, Any] = {"type": found["type"], "name": part, "options": []}
            current.append(node)
            current = node["options"]
            defs = found.get("options") or []
        if any(o["type"] in (1, 2) for o in defs):
            raise ValueError(f"/{name} has subcommands: name one, e.g. '{name} {defs[0]['name']}'")
        given = dict(values or {})
        if focused is not None:
            given.setdefault(focused, "")
        for key, value in given.items():
            spec = next((o for o in defs if o["name"] == key), None)
            if spec is None:
                raise ValueError(f"/{name} has no option {key!r}")
            entry: dict[str, Any] = {"type": spec["type"], "name": key}
            if key == focused:
                entry["value"] = str(value)
                entry["focused"] = True
            else:
                entry["value"] = self._option_value(spec, value, guild, resolved)
            current.append(entry)
        if focused is None:
            missing = [o["name"] for o in defs if o.get("required") and o["name"] not in given]
            if missing:
                raise ValueError(f"/{name}: required option(s) {missing} missing")
        return top

    def _option_value(
        self,
        spec: dict[str, Any],
        value: Any,
        guild: dict[str, Any],
        resolved: dict[str, dict[str, Any]],
    ) -> Any:
        kind = spec["type"]
        if kind == 3:
            value = str(value)
            if len(value) < spec.get("min_length", 0) or len(value) > spec.get("max_length", 6000):
                raise ValueError(f"option {spec['name']!r}: length outside the command's limits")
        elif kind == 4:
            value = int(value)
        elif kind == 10:
            value = float(value)
        elif kind == 5:
            value = bool(value)
        elif kind in (6, 7, 8, 9):
            return self._resolve(spec, int(value), guild, resolved)
        else:
            raise ValueError(f"option {spec['name']!r}: type {kind} is not supported by the fake")
        if kind in (4, 10) and (
            value < spec.get("min_value", -math.inf) or value > spec.get("max_value", math.inf)
        ):
            raise ValueError(f"option {spec['name']!r}: {value} outside the command's range")
        choices = spec.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise ValueError(f"option {spec['name']!r}: {value!r} is not one of the choices")
        return value

    def _resolve(
        self,
        spec: dict[str, Any],
        target: int,
        guild: dict[str, Any],
        resolved: dict[str, dict[str, Any]],
    ) -> str:
        kind = spec["type"]
        member = self._get_member(guild, target)
        role = next((r for r in guild["roles"] if int(r["id"]) == target), None)
        if kind in (6, 9) and member is not None:
            resolved.setdefault("users", {})[str(target)] = copy.deepcopy(member["user"])
            partial = {k: v for k, v in member.items() if k != "user"}
            resolved.setdefault("members", {})[str(target)] = dict(
                partial, permissions=str(self._permissions(guild, target))
            )
        elif kind in (8, 9) and role is not None:
            resolved.setdefault("roles", {})[str(target)] = copy.deepcopy(role)
        elif kind == 7 and target in self._channels:
            _, channel = self._channels[target]
            allowed = spec.get("channel_types")
            if allowed and channel["type"] not in allowed:
                raise ValueError(
                    f"option {spec['name']!r}: channel type {channel['type']} not allowed"
                )
            resolved.setdefault("channels", {})[str(target)] = dict(
                copy.deepcopy(channel),
                permissions=str(self._permissions(guild, MEMBER_USER_ID, channel)),
            )
        else:
            raise ValueError(f"option {spec['name']!r}: {target} is not a known target")
        return str(target)

    # ----------------------------------------------------------------- model helpers

    def _snowflake(self) -> int:
        self._increment = (self._increment + 1) & 0xFFF
        millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (millis << 22) | (1 << 17) | self._increment

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _channel(self, channel_id: int | str) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            return self._channels[int(channel_id)]
        except KeyError:
            raise _unknown_channel() from None

    @staticmethod
    def _get_member(guild: dict[str, Any], user_id: int) -> dict[str, Any] | None:
        return next((m for m in guild["members"] if int(m["user"]["id"]) == user_id), None)

    def _permissions(
        self, guild: dict[str, Any], user_id: int, channel: dict[str, Any] | None = None
    ) -> int:
        """Discord's permission algorithm: roles, then channel overwrites."""
        member = self._get_member(guild, user_id)
        if member is None:
            return 0
        if int(guild["owner_id"]) == user_id:
            return ALL_PERMISSIONS
        roles = {r["id"]: r for r in guild["roles"]}
        perms = int(roles[guild["id"]]["permissions"])
        for role_id in member["roles"]:
            perms |= int(roles.get(role_id, {}).get("permissions", 0))
        if perms & ADMINISTRATOR:
            return ALL_PERMISSIONS
        if channel is None:
            return perms
        if channel["type"] in _THREAD_TYPES:
            # A thread has no overwrites of its own: its parent channel's apply.
            channel = self._channels[int(channel["parent_id"])][1]
        overwrites = {o["id"]: o for o in channel.get("permission_overwrites", [])}
        everyone = overwrites.get(guild["id"])
        if everyone is not None:
            perms = (perms & ~int(everyone["deny"])) | int(everyone["allow"])
        allow = deny = 0
        for role_id in member["roles"]:
            ow = overwrites.get(role_id)
            if ow is not None and int(ow["type"]) == 0:
                allow |= int(ow["allow"])
                deny |= int(ow["deny"])
        perms = (perms & ~deny) | allow
        own = overwrites.get(str(user_id))
        if own is not None and int(own["type"]) == 1:
            perms = (perms & ~int(own["deny"])) | int(own["allow"])
        if not perms & VIEW_CHANNEL:
            return 0
        return perms

    def _author(self) -> dict[str, Any]:
        keys = ("id", "username", "discriminator", "global_name", "avatar", "public_flags", "bot")
        return {k: self.bot_user[k] for k in keys}

    def _mentions(
        self, guild: dict[str, Any], content: str, allowed: dict[str, Any] | None, perms: int
    ) -> tuple[list[dict[str, Any]], list[str], bool]:
        """Who a message would ping: Discord's allowed_mentions rules."""
        rules = allowed if allowed is not None else {"parse": ["users", "roles", "everyone"]}
        parse = set(rules.get("parse") or [])
        users_ok = {str(u) for u in rules.get("users") or []}
        roles_ok = {str(r) for r in rules.get("roles") or []}
        users: list[dict[str, Any]] = []
        for user_id in dict.fromkeys(re.findall(r"<@!?(\d+)>", content)):
            member = self._get_member(guild, int(user_id))
            if member is not None and ("users" in parse or user_id in users_ok):
                users.append(copy.deepcopy(member["user"]))
        roles: list[str] = []
        known = {r["id"]: r for r in guild["roles"]}
        for role_id in dict.fromkeys(re.findall(r"<@&(\d+)>", content)):
            role = known.get(role_id)
            if role is None or not ("roles" in parse or role_id in roles_ok):
                continue
            if role.get("mentionable") or perms & MENTION_EVERYONE:
                roles.append(role_id)
        # Discord pings for @everyone and @here wherever they stand, "@everyone1" too.
        everyone = bool(
            re.search(r"@(everyone|here)", content)
            and "everyone" in parse
            and perms & MENTION_EVERYONE
        )
        return users, roles, everyone

    def _build_message(
        self,
        guild: dict[str, Any],
        channel_id: int,
        payload: dict[str, Any],
        *,
        perms: int,
        flag_mask: int,
        message_type: int = 0,
        attachments: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        content = payload.get("content") or ""
        users, roles, everyone = self._mentions(
            guild, content, payload.get("allowed_mentions"), perms
        )
        embeds = payload.get("embeds") or []
        msg: dict[str, Any] = {
            "id": str(self._snowflake()),
            "type": message_type,
            "content": content,
            "channel_id": str(channel_id),
            "author": self._author(),
            "attachments": attachments or [],
            "embeds": [_normalize_embed(e) for e in embeds],
            "mentions": users,
            "mention_roles": roles,
            "mention_everyone": everyone,
            "pinned": False,
            "tts": bool(payload.get("tts", False)),
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "flags": int(payload.get("flags") or 0) & flag_mask,
            "components": copy.deepcopy(payload.get("components") or []),
        }
        if payload.get("nonce") is not None:
            msg["nonce"] = payload["nonce"]
        reference = payload.get("message_reference")
        if reference:
            msg["message_reference"] = {"type": 0, "channel_id": str(channel_id), **reference}
        return msg

    def _edited(
        self,
        guild: dict[str, Any],
        msg: dict[str, Any],
        payload: dict[str, Any],
        *,
        perms: int,
        attachments: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The message as it would be after this PATCH (not yet stored)."""
        new = copy.deepcopy(msg)
        if "content" in payload:
            new["content"] = payload["content"] or ""
            users, roles, everyone = self._mentions(
                guild, new["content"], payload.get("allowed_mentions"), perms
            )
            new.update(mentions=users, mention_roles=roles, mention_everyone=everyone)
        if "embeds" in payload:
            new["embeds"] = [_normalize_embed(e) for e in payload["embeds"] or []]
        if "components" in payload:
            new["components"] = copy.deepcopy(payload["components"] or [])
        if "attachments" in payload:
            keep = {str(a.get("id")) for a in payload["attachments"] or []}
            new["attachments"] = [a for a in new["attachments"] if a["id"] in keep]
        new["attachments"] = new["attachments"] + attachments
        if payload.get("flags") is not None:
            new["flags"] = (new["flags"] & ~SUPPRESS_EMBEDS) | (
                int(payload["flags"]) & SUPPRESS_EMBEDS
            )
        if new["flags"] & LOADING:
            new["flags"] &= ~LOADING
        else:
            new["edited_timestamp"] = _now_iso()
        if not _has_body(new):
            raise _empty_message()
        return new

    def _attachments(self, req: RecordedRequest, channel_id: int) -> list[dict[str, Any]]:
        out = []
        for upload in req.files:
            if len(upload.data) > ATTACHMENT_SIZE_LIMIT:
                raise _ApiError(413, 40005, "Request entity too large")
            aid = self._snowflake()
            url = f"{self.base_url}/attachments/{channel_id}/{aid}/{upload.filename}"
            out.append(
                {
                    "id": str(aid),
                    "filename": upload.filename,
                    "size": len(upload.data),
                    "url": url,
                    "proxy_url": url,
                    "content_type": upload.content_type,
                }
            )
        return out

    def _store(self, msg: dict[str, Any], *, visible: bool) -> None:
        self._by_id[int(msg["id"])] = msg
        if visible:
            self.messages.setdefault(int(msg["channel_id"]), []).append(msg)

    def _replace(self, msg: dict[str, Any], new: dict[str, Any]) -> None:
        # In place, so references held by tests and by InteractionResult stay current.
        msg.clear()
        msg.update(new)

    def _remove_message(self, msg: dict[str, Any]) -> None:
        self._by_id.pop(int(msg["id"]), None)
        stored = self.messages.get(int(msg["channel_id"]), [])
        if any(m is msg for m in stored):
            stored.remove(msg)

    def _find_message(self, channel_id: int | str, message_id: int | str) -> dict[str, Any]:
        msg = self._by_id.get(int(message_id))
        stored = self.messages.get(int(channel_id), [])
        if msg is None or not any(m is msg for m in stored):
            raise _unknown_message()
        return msg

    def _is_visible(self, msg: dict[str, Any]) -> bool:
        return any(m is msg for m in self.messages.get(int(msg["channel_id"]), []))

    async def _dispatch_message(
        self, event: str, guild: dict[str, Any], msg: dict[str, Any]
    ) -> None:
        member = self._get_member(guild, self.bot_user_id) or {}
        partial = {k: v for k, v in member.items() if k != "user"}
        data = dict(copy.deepcopy(msg), guild_id=guild["id"], member=partial)
        await self.dispatch(event, data, intent=GUILD_MESSAGES_INTENT)

    async def _dispatch_delete(self, guild: dict[str, Any], msg: dict[str, Any]) -> None:
        data = {"id": msg["id"], "channel_id": msg["channel_id"], "guild_id": guild["id"]}
        await self.dispatch("MESSAGE_DELETE", data, intent=GUILD_MESSAGES_INTENT)

    # ----------------------------------------------------------------- REST plumbing

    def _add_routes(self) -> None:
        app = r"(?P<app>\d+)"
        cid = r"/channels/(?P<cid>\d+)"
        mid = r"(?P<mid>\d+)"
        hook = r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"
        hook_msg = hook + r"/messages/(?P<mid>@original|\d+)"
        commands = rf"/applications/{app}/commands"
        guild_commands = rf"/applications/{app}/guilds/(?P<gid>\d+)/commands"
        table: list[tuple[str, str, Handler, bool]] = [
            ("GET", r"/users/@me", self._get_me, True),
            ("GET", r"/oauth2/applications/@me", self._get_application, True),
            ("GET", r"/applications/@me", self._get_application, True),
            ("GET", r"/gateway", self._get_gateway, False),
            ("GET", r"/gateway/bot", self._get_gateway_bot, True),
            ("GET", commands, self._get_commands, True),
            ("PUT", commands, self._put_commands, True),
            ("GET", guild_commands, self._get_commands, True),
            ("PUT", guild_commands, self._put_commands, True),
            ("GET", cid, self._get_channel, True),
            ("GET", r"/guilds/(?P<gid>\d+)", self._get_guild, True),
            ("GET", r"/guilds/(?P<gid>\d+)/roles", self._get_guild_roles, True),
            ("GET", r"/guilds/(?P<gid>\d+)/members/(?P<uid>\d+)", self._get_guild_member, True),
            ("GET", cid + "/messages", self._list_messages, True),
            ("POST", cid + "/messages", self._create_message, True),
            ("GET", f"{cid}/messages/{mid}", self._get_message, True),
            ("PATCH", f"{cid}/messages/{mid}", self._edit_message, True),
            ("DELETE", f"{cid}/messages/{mid}", self._delete_message, True),
            ("POST", f"{cid}/messages/{mid}/crosspost", self._crosspost, True),
            ("POST", f"{cid}/messages/{mid}/threads", self._thread_from_message, True),
            ("POST", f"{cid}/threads", self._start_thread, True),
            ("PATCH", cid, self._modify_channel, True),
            (
                "POST",
                r"/interactions/(?P<iid>\d+)/(?P<token>[^/]+)/callback",
                self._callback,
                False,
            ),
            ("POST", hook, self._followup, False),
            ("GET", hook_msg, self._get_webhook_message, False),
            ("PATCH", hook_msg, self._edit_webhook_message, False),
            ("DELETE", hook_msg, self._delete_webhook_message, False),
        ]
        self._routes = [(m, re.compile(p + "$"), h, auth) for m, p, h, auth in table]

    async def _read_body(self, request: web.Request) -> tuple[Any, list[UploadedFile]]:
        files: list[UploadedFile] = []
        if request.content_type.startswith("multipart/"):
            body = None
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):  # nested multipart: not used
                    continue
                if part.name == "payload_json":
                    body = jsonlib.loads(await part.text())
                elif part.filename is not None:
                    files.append(
                        UploadedFile(
                            part.name or "",
                            part.filename,
                            part.headers.get("Content-Type"),
                            bytes(await part.read()),
                        )
                    )
            return body, files
        raw = await request.read()
        if not raw:
            return None, files
        try:
            return jsonlib.loads(raw), files
        except ValueError:
            return raw.decode(errors="replace"), files

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _authorized(self, rec: RecordedRequest) -> bool:
        header = rec.headers.get("Authorization", "")
        if not header.startswith("Bot "):
            return False
        return self.token is None or header[4:] == self.token

    def _ratelimit_headers(
        self, pattern: re.Pattern[str], key: int | None
    ) -> tuple[dict[str, str], float]:
        """X-RateLimit-* headers for a success, and the wait if the bucket is exhausted."""
        bucket = hashlib.sha1(pattern.pattern.encode()).hexdigest()[:16]
        limit, window = 50, 1.0
        remaining = 49
        reset_after = window
        if self.message_rate_limit is not None and key is not None:
            # A fixed window that refills at once, as Discord's buckets (and discord.py's
            # pre-emptive limiter) work; not a sliding window.
            limit, window = self.message_rate_limit
            now = time.monotonic()
            resets_at, used = self._buckets.get(key, (0.0, 0))
            if now >= resets_at:
                resets_at, used = now + window, 0
            if used >= limit:
                return {"X-RateLimit-Bucket": bucket}, resets_at - now
            self._buckets[key] = (resets_at, used + 1)
            remaining = limit - used - 1
            reset_after = resets_at - now
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }
        return headers, 0.0

    def _global_limited(self) -> web.Response | None:
        """Count a request against ``global_rate_limit``; the 429 if it is over."""
        if self.global_rate_limit is None:
            return None
        limit, window = self.global_rate_limit
        now = time.monotonic()
        opened, used = self._global_window
        if now >= opened + window:
            opened, used = now, 0
        if used < limit:
            self._global_window = (opened, used + 1)
            return None
        wait = opened + window - now
        body = {
            "message": "You are being rate limited.",
            "retry_after": round(wait, 3),
            "global": True,
        }
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(max(1, math.ceil(wait))),
            "X-RateLimit-Global": "true",
            "X-RateLimit-Scope": "global",
        }
        return _json_response(429, body, headers)

    async def _handle_rest(self, request: web.Request) -> web.StreamResponse:
        path = request.path[len(API_PREFIX) :]
        body, files = await self._read_body(request)
        rec = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            json=body,
            headers=CIMultiDict(request.headers),
            files=files,
        )
        self.requests.append(rec)
        try:
            response = await self._respond(rec)
        except _ApiError as exc:
            response = _json_response(exc.status, exc.body)
        except Exception as exc:
            # A bug in the fake: a 500 would make discord.py retry quietly for ~16 s,
            # so answer a 400 it raises at once, and keep the error for the test.
            log.exception("FakeDiscord failed on %s %s", rec.method, rec.path)
            self.errors.append(exc)
            response = _json_response(400, {"code": 0, "message": f"FakeDiscord bug: {exc!r}"})
        rec.status = response.status
        self._changes.notify()
        return response

    async def _respond(self, rec: RecordedRequest) -> web.Response:
        fault = self._take_fault(rec.method, rec.path)
        if fault is not None and not fault.after_processing:
            return _json_response(fault.status, fault.body, fault.headers)
        for method, pattern, handler, needs_auth in self._routes:
            match = pattern.match(rec.path)
            if match is None or method != rec.method:
                continue
            if needs_auth and not self._authorized(rec):
                raise _ApiError(401, 0, "401: Unauthorized")
            if needs_auth and (limited := self._global_limited()) is not None:
                return limited
            key = int(match["cid"]) if handler == self._create_message else None
            headers, wait = self._ratelimit_headers(pattern, key)
            if wait:
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": round(wait, 3),
                    "global": False,
                }
                headers.update(
                    {
                        "Via": "1.1 google",
                        "X-RateLimit-Limit": str(self.message_rate_limit[0]),  # type: ignore[index]
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset-After": f"{wait:.3f}",
                        "X-RateLimit-Scope": "user",
                        "Retry-After": str(max(1, math.ceil(wait))),
                    }
                )
                return _json_response(429, body, headers)
            reply = await handler(rec, **match.groupdict())
            if fault is not None:
                return _json_response(fault.status, fault.body, fault.headers)
            headers.update(reply.headers)
            if reply.status == 204:
                return web.Response(status=204, headers=headers)
            return _json_response(reply.status, reply.body, headers)
        self.unhandled.append(rec)
        log.warning("FakeDiscord has no route for %s %s", rec.method, rec.path)
        raise _ApiError(404, 0, "404: Not Found")

    # ----------------------------------------------------------------- REST handlers

    async def _get_me(self, rec: RecordedRequest) -> _Reply:
        return _Reply(200, self.bot_user)

    async def _get_application(self, rec: RecordedRequest) -> _Reply:
        owner = _user(OWNER_USER_ID, "owner")
        return _Reply(
            200,
            {
                "id": str(self.application_id),
                "name": self.bot_user["username"],
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": 0,
                "owner": owner,
                "team": None,
                "bot": self._author(),
                "rpc_origins": [],
                "redirect_uris": [],
                "tags": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(self.guilds),
                "integration_types_config": {"0": {}},
            },
        )

    async def _get_gateway(self, rec: RecordedRequest) -> _Reply:
        return _Reply(200, {"url": self.gateway_url})

    async def _get_gateway_bot(self, rec: RecordedRequest) -> _Reply:
        """Get Gateway Bot: the recommended shard count and the session start limit, whose
        ``remaining`` counts the sessions started (IDENTIFYs, not RESUMEs) in the last
        24 hours ("Clients are limited to 1000 IDENTIFY calls to the websocket in a
        24-hour period") and whose ``reset_after`` (ms) runs to the oldest one's expiry."""
        now = time.monotonic()
        day = 24 * 3600.0
        self._session_starts = [t for t in self._session_starts if now - t < day]
        starts = self._session_starts
        limit = {
            "total": SESSION_START_LIMIT,
            "remaining": max(0, SESSION_START_LIMIT - len(starts)),
            "reset_after": int((starts[0] + day - now) * 1000) if starts else 0,
            "max_concurrency": self.max_concurrency,
        }
        body = {
            "url": self.gateway_url,
            "shards": self.recommended_shards,
            "session_start_limit": limit,
        }
        return _Reply(200, body)

    def _check_application(self, app: str) -> None:
        if int(app) != self.application_id:
            raise _missing_access()

    async def _get_commands(
        self, rec: RecordedRequest, app: str, gid: str | None = None
    ) -> _Reply:
        self._check_application(app)
        if gid is None:
            return _Reply(200, self.commands)
        if int(gid) not in self.guilds:
            raise _ApiError(404, 10004, "Unknown Guild")
        return _Reply(200, self.guild_commands.get(int(gid), []))

    async def _put_commands(
        self, rec: RecordedRequest, app: str, gid: str | None = None
    ) -> _Reply:
        self._check_application(app)
        if gid is not None and int(gid) not in self.guilds:
            raise _ApiError(404, 10004, "Unknown Guild")
        payload = rec.json
        if not isinstance(payload, list):
            raise _form_error(
                {"_errors": [{"code": "BASE_TYPE_ARRAY", "message": "Must be an array."}]}
            )
        errors = _validate_commands(payload)
        if errors:
            raise _form_error(errors)
        if sum(1 for c in payload if c.get("type", 1) == 1) > 100:
            raise _ApiError(400, 30032, "Maximum number of application commands reached (100)")
        old = self.commands if gid is None else self.guild_commands.get(int(gid), [])
        ids = {(c["name"], c.get("type", 1)): c["id"] for c in old}
        synced = []
        for cmd in payload:
            kind = cmd.get("type", 1)
            perms = cmd.get("default_member_permissions")
            stored: dict[str, Any] = {
                "id": ids.get((cmd["name"], kind)) or str(self._snowflake()),
                "application_id": str(self.application_id),
                "version": str(self._snowflake()),
                "type": kind,
                "name": cmd["name"],
                "name_localizations": cmd.get("name_localizations"),
                "description": cmd.get("description", ""),
                "description_localizations": cmd.get("description_localizations"),
                # Discord answers permissions as strings whatever the client sent.
                "default_member_permissions": None if perms is None else str(perms),
                "contexts": cmd.get("contexts"),
                "integration_types": cmd.get("integration_types") or [0],
                "nsfw": cmd.get("nsfw", False),
            }
            if cmd.get("options"):
                stored["options"] = copy.deepcopy(cmd["options"])
            if gid is None:
                stored["dm_permission"] = cmd.get("dm_permission", True)
            else:
                stored["guild_id"] = str(gid)
            synced.append(stored)
        if gid is None:
            self.commands = synced
        else:
            self.guild_commands[int(gid)] = synced
        return _Reply(200, synced)

    async def _get_channel(self, rec: RecordedRequest, cid: str) -> _Reply:
        guild, channel = self._channel(cid)
        if not self._permissions(guild, self.bot_user_id, channel) & VIEW_CHANNEL:
            raise _missing_access()
        return _Reply(200, dict(channel, guild_id=guild["id"]))

    # ----------------------------------------------------------------- guilds
    # developers/resources/guild.mdx: Get Guild, Get Guild Roles, Get Guild Member.

    def _member_guild(self, gid: str) -> dict[str, Any]:
        """A guild the bot is in; 403 50001 Missing Access for one it is not in, 404 10004
        Unknown Guild for an id no guild has (opcodes-and-status-codes.mdx)."""
        guild = self.guilds.get(int(gid))
        if guild is not None:
            return guild
        if int(gid) in self._foreign_guild_ids:
            raise _missing_access()
        raise _ApiError(404, 10004, "Unknown Guild")

    async def _get_guild(self, rec: RecordedRequest, gid: str) -> _Reply:
        """Get Guild: the guild object, without what only GUILD_CREATE carries ("Guild
        Create Extra Fields": channels, members, threads, ...); approximate member and
        presence counts when ``with_counts`` is true."""
        guild = self._member_guild(gid)
        body = {k: copy.deepcopy(v) for k, v in guild.items() if k not in _GUILD_CREATE_EXTRA}
        for key, value in _REST_GUILD_DEFAULTS.items():
            body.setdefault(key, value)
        if _is_true(rec.query.get("with_counts")):
            body["approximate_member_count"] = len(guild["members"])
            body["approximate_presence_count"] = 0  # no presences are modelled
        return _Reply(200, body)

    async def _get_guild_roles(self, rec: RecordedRequest, gid: str) -> _Reply:
        """Get Guild Roles: the guild's role objects."""
        return _Reply(200, copy.deepcopy(self._member_guild(gid)["roles"]))

    async def _get_guild_member(self, rec: RecordedRequest, gid: str, uid: str) -> _Reply:
        """Get Guild Member: the member object, with its user (needs no intent, unlike
        List Guild Members); 404 10007 Unknown Member for a user not in the guild."""
        member = self._get_member(self._member_guild(gid), int(uid))
        if member is None:
            raise _ApiError(404, 10007, "Unknown Member")
        return _Reply(200, copy.deepcopy(member))

    def _bot_permissions(self, cid: str) -> tuple[dict[str, Any], int]:
        guild, channel = self._channel(cid)
        perms = self._permissions(guild, self.bot_user_id, channel)
        if not perms & VIEW_CHANNEL:
            raise _missing_access()
        return guild, perms

    async def _list_messages(self, rec: RecordedRequest, cid: str) -> _Reply:
        _, perms = self._bot_permissions(cid)
        if not perms & READ_MESSAGE_HISTORY:
            return _Reply(200, [])
        limit = max(1, min(100, int(rec.query.get("limit", 50))))
        stored = sorted(self.messages.get(int(cid), []), key=lambda m: int(m["id"]), reverse=True)
        if "before" in rec.query:
            stored = [m for m in stored if int(m["id"]) < int(rec.query["before"])]
        if "after" in rec.query:
            stored = [m for m in stored if int(m["id"]) > int(rec.query["after"])][-limit:]
        return _Reply(200, stored[:limit])

    async def _create_message(self, rec: RecordedRequest, cid: str) -> _Reply:
        guild, perms = self._bot_permissions(cid)
        channel_type = self._channel(cid)[1]["type"]
        if channel_type not in _MESSAGE_CHANNEL_TYPES:
            raise _ApiError(400, 50008, "Cannot send messages in a non-text channel")
        needed = SEND_MESSAGES_IN_THREADS if channel_type in _THREAD_TYPES else SEND_MESSAGES
        if not perms & needed:
            raise _ApiError(403, 50013, "Missing Permissions")
        channel = self._channel(cid)[1]
        if _archived(channel):
            # "The API will helpfully automatically unarchive a thread when sending a
            # message in that thread" (a locked one only for Manage Threads).
            if channel["thread_metadata"]["locked"] and not perms & MANAGE_THREADS:
                raise _ApiError(400, 50083, "Thread is archived")
            channel["thread_metadata"]["archived"] = False
            update = dict(channel, guild_id=guild["id"])
            await self.dispatch("THREAD_UPDATE", update, intent=GUILDS_INTENT)
        payload = rec.json if isinstance(rec.json, dict) else {}
        errors = _validate_message(payload)
        if errors:
            raise _form_error(errors)
        nonce = payload.get("nonce")
        now = time.monotonic()
        if nonce is not None and payload.get("enforce_nonce"):
            seen = self._nonces.get((int(cid), str(nonce)))
            if seen is not None and now - seen[0] < self.nonce_window and seen[1] in self._by_id:
                return _Reply(200, self._by_id[seen[1]])
        if rec.files and not perms & ATTACH_FILES:
            raise _ApiError(403, 50013, "Missing Permissions")
        if not perms & EMBED_LINKS:
            # Discord drops embeds it may not show instead of refusing the message.
            payload = dict(payload, embeds=[])
        msg = self._build_message(
            guild,
            int(cid),
            payload,
            perms=perms,
            flag_mask=SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2,
            attachments=self._attachments(rec, int(cid)),
        )
        if payload.get("sticker_ids"):
            msg["sticker_items"] = [
                {"id": str(s), "name": "sticker", "format_type": 1} for s in payload["sticker_ids"]
            ]
        if not _has_body(msg):
            raise _empty_message()
        self._store(msg, visible=True)
        if nonce is not None:
            self._nonces[(int(cid), str(nonce))] = (now, int(msg["id"]))
        await self._dispatch_message("MESSAGE_CREATE", guild, msg)
        return _Reply(200, msg)

    async def _get_message(self, rec: RecordedRequest, cid: str, mid: str) -> _Reply:
        _, perms = self._bot_permissions(cid)
        if not perms & READ_MESSAGE_HISTORY:
            raise _missing_access()
        return _Reply(200, self._find_message(cid, mid))

    async def _edit_message(self, rec: RecordedRequest, cid: str, mid: str) -> _Reply:
        guild, perms = self._bot_permissions(cid)
        msg = self._find_message(cid, mid)
        if _archived(self._channel(cid)[1]):
            # "Archived threads are generally immutable" (channel.mdx, Thread fields).
            raise _ApiError(400, 50083, "Thread is archived")
        if msg["author"]["id"] != self.bot_user["id"]:
            raise _ApiError(403, 50005, "Cannot edit a message authored by another user")
        payload = rec.json if isinstance(rec.json, dict) else {}
        errors = _validate_message(payload)
        if errors:
            raise _form_error(errors)
        if payload.get("embeds") and not perms & EMBED_LINKS:
            payload = dict(payload, embeds=[])
        if msg["flags"] & CROSSPOSTED:
            wait = _window_wait(self._published_edits, int(cid), self.published_edit_limit)
            if wait:
                body = {
                    "message": "The write action you are performing on the channel has hit"
                    " the write rate limit.",
                    "code": 20028,
                    "global": False,
                    "retry_after": round(wait, 3),
                }
                # The header is wrong on Discord too (discord-api-docs #6109).
                return _Reply(
                    429,
                    body,
                    {"Via": "1.1 google", "Retry-After": "1", "X-RateLimit-Scope": "shared"},
                )
        new = self._edited(
            guild, msg, payload, perms=perms, attachments=self._attachments(rec, int(cid))
        )
        self._replace(msg, new)
        await self._dispatch_message("MESSAGE_UPDATE", guild, msg)
        return _Reply(200, msg)

    async def _crosspost(self, rec: RecordedRequest, cid: str, mid: str) -> _Reply:
        """Crosspost Message: publish a message of an announcement channel to the
        channels following it (SEND_MESSAGES for one's own message, MANAGE_MESSAGES
        for others'); MESSAGE_UPDATE with the CROSSPOSTED flag."""
        guild, perms = self._bot_permissions(cid)
        channel = self._channel(cid)[1]
        if channel["type"] != 5:
            raise _ApiError(403, 50024, "Cannot execute action on this channel type")
        msg = self._find_message(cid, mid)
        own = msg["author"]["id"] == self.bot_user["id"]
        if not perms & SEND_MESSAGES or (not own and not perms & MANAGE_MESSAGES):
            raise _ApiError(403, 50013, "Missing Permissions")
        if msg["flags"] & CROSSPOSTED:
            raise _ApiError(400, 40033, "This message has already been crossposted.")
        wait = _window_wait(self._publishes, int(cid), self.crosspost_limit)
        if wait:
            body = {"message": "You are being rate limited.", "retry_after": round(wait, 3)}
            body["global"] = False
            retry = str(max(1, math.ceil(wait)))
            headers = {"Via": "1.1 google", "Retry-After": retry, "X-RateLimit-Scope": "shared"}
            return _Reply(429, body, headers)
        msg["flags"] |= CROSSPOSTED
        await self._dispatch_message("MESSAGE_UPDATE", guild, msg)
        return _Reply(200, msg)

    # ----------------------------------------------------------------- threads
    # developers/resources/channel.mdx: Start Thread from Message, Start Thread in Forum
    # or Media Channel, Modify Channel (JSON Params (Thread)).

    async def _thread_from_message(self, rec: RecordedRequest, cid: str, mid: str) -> _Reply:
        """A public thread on a message (an announcement thread in an announcement
        channel), whose id is the message's: "a message can only have a single thread
        created from it". Not in a forum. Needs Create Public Threads."""
        guild, perms = self._bot_permissions(cid)
        parent = self._channel(cid)[1]
        if parent["type"] not in (0, 5):
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        msg = self._find_message(cid, mid)
        if not perms & CREATE_PUBLIC_THREADS:
            raise _ApiError(403, 50013, "Missing Permissions")
        if int(mid) in self._channels:
            raise _ApiError(400, 160004, "A thread has already been created for this message")
        body = rec.json if isinstance(rec.json, dict) else {}
        name, archive_after = _thread_params(body)
        thread_type = 10 if parent["type"] == 5 else 11
        thread = self._new_thread(guild, int(mid), parent, name, thread_type, archive_after)
        msg["flags"] |= HAS_THREAD
        msg["thread"] = copy.deepcopy(thread)
        await self.dispatch(
            "THREAD_CREATE",
            dict(thread, guild_id=guild["id"], newly_created=True),
            intent=GUILDS_INTENT,
        )
        await self._dispatch_message("MESSAGE_UPDATE", guild, msg)
        return _Reply(201, thread)

    async def _start_thread(self, rec: RecordedRequest, cid: str) -> _Reply:
        """A forum (or media) post: a public thread and its first message, whose id is
        the thread's. Needs Send Messages ("CREATE_PUBLIC_THREADS is ignored")."""
        guild, perms = self._bot_permissions(cid)
        parent = self._channel(cid)[1]
        if parent["type"] not in (15, 16):
            # Threads without a message (in text channels) are not modelled: not used.
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        if not perms & SEND_MESSAGES:
            raise _ApiError(403, 50013, "Missing Permissions")
        body = rec.json if isinstance(rec.json, dict) else {}
        name, archive_after = _thread_params(body)
        payload = body.get("message")
        if not isinstance(payload, dict):
            raise _form_error({"message": {"_errors": [{"code": "BASE_TYPE_REQUIRED"}]}})
        errors = _validate_message(payload)
        if errors:
            raise _form_error({"message": errors})
        if int(parent.get("flags") or 0) & REQUIRE_TAG and not body.get("applied_tags"):
            raise _ApiError(400, 40067, "A tag is required to create a forum post in this channel")
        if not perms & EMBED_LINKS:
            payload = dict(payload, embeds=[])
        thread_id = self._snowflake()
        thread = self._new_thread(guild, thread_id, parent, name, 11, archive_after)
        msg = self._build_message(
            guild,
            thread_id,
            payload,
            perms=perms,
            flag_mask=SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS,
        )
        msg["id"] = str(thread_id)  # the starter message's id is the thread's
        if not _has_body(msg):
            raise _empty_message()
        self._store(msg, visible=True)
        await self.dispatch(
            "THREAD_CREATE",
            dict(thread, guild_id=guild["id"], newly_created=True),
            intent=GUILDS_INTENT,
        )
        await self._dispatch_message("MESSAGE_CREATE", guild, msg)
        return _Reply(201, dict(thread, message=msg))

    async def _modify_channel(self, rec: RecordedRequest, cid: str) -> _Reply:
        """Modify Channel, for threads: archiving needs Manage Threads; unarchiving an
        unlocked thread needs only Send Messages."""
        guild, perms = self._bot_permissions(cid)
        channel = self._channel(cid)[1]
        if channel["type"] not in _THREAD_TYPES:
            raise _ApiError(400, 50035, "FakeDiscord models Modify Channel for threads only")
        body = rec.json if isinstance(rec.json, dict) else {}
        meta = channel["thread_metadata"]
        archived = body.get("archived")
        unarchiving = archived is False and not meta["locked"] and set(body) <= {"archived"}
        if not perms & (SEND_MESSAGES if unarchiving else MANAGE_THREADS):
            raise _ApiError(403, 50013, "Missing Permissions")
        if isinstance(archived, bool):
            meta["archived"] = archived
            meta["archive_timestamp"] = _now_iso()
        if isinstance(body.get("locked"), bool):
            meta["locked"] = body["locked"]
        await self.dispatch(
            "THREAD_UPDATE", dict(channel, guild_id=guild["id"]), intent=GUILDS_INTENT
        )
        self._changes.notify()
        return _Reply(200, channel)

    def _new_thread(
        self,
        guild: dict[str, Any],
        thread_id: int,
        parent: dict[str, Any],
        name: str,
        thread_type: int,
        archive_after: int,
    ) -> dict[str, Any]:
        thread = _thread(thread_id, int(parent["id"]), name)
        thread.update(type=thread_type, owner_id=str(self.bot_user_id))
        thread["thread_metadata"].update(
            auto_archive_duration=archive_after, archive_timestamp=_now_iso()
        )
        guild["threads"].append(thread)
        self._channels[thread_id] = (guild, thread)
        self.messages[thread_id] = []
        self._changes.notify()
        return thread

    def threads_of(self, channel_id: int) -> list[dict[str, Any]]:
        """The threads (or forum posts) in a channel, oldest first."""
        return [
            channel
            for _guild, channel in self._channels.values()
            if channel["type"] in _THREAD_TYPES and channel.get("parent_id") == str(channel_id)
        ]

    def crossposted(self, channel_id: int) -> list[dict[str, Any]]:
        """The messages of a channel that were published to its followers."""
        return [m for m in self.messages.get(channel_id, []) if m["flags"] & CROSSPOSTED]

    async def _delete_message(self, rec: RecordedRequest, cid: str, mid: str) -> _Reply:
        guild, perms = self._bot_permissions(cid)
        msg = self._find_message(cid, mid)
        if msg["author"]["id"] != self.bot_user["id"] and not perms & MANAGE_MESSAGES:
            raise _ApiError(403, 50013, "Missing Permissions")
        self._remove_message(msg)
        await self._dispatch_delete(guild, msg)
        return _Reply(204)

    # ----------------------------------------------------------------- interaction REST

    async def _callback(self, rec: RecordedRequest, iid: str, token: str) -> _Reply:
        result = self._interactions.get(int(iid))
        now = asyncio.get_running_loop().time()
        if result is None or result._ack_expired(now):
            if result is not None:
                result.late = True
                result.events.append(("late_callback", rec.json))
            raise _ApiError(404, 10062, "Unknown interaction")
        if token != result.token:
            raise _ApiError(401, 50027, "Invalid Webhook Token")
        if result.response_type is not None:
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = rec.json if isinstance(rec.json, dict) else {}
        rtype = body.get("type")
        data = body.get("data") or {}
        allowed = {2: (4, 5, 9), 3: (4, 5, 6, 7, 9), 4: (8,)}[result.type]
        if rtype not in allowed:
            raise _form_error(
                {
                    "type": {
                        "_errors": [
                            {
                                "code": "BASE_TYPE_CHOICES",
                                "message": f"Value must be one of {allowed}.",
                            }
                        ]
                    }
                }
            )
        guild, channel = self._channel(result.channel_id)
        perms = self._permissions(guild, self.bot_user_id, channel)
        msg: dict[str, Any] | None = None
        if rtype == 4:
            errors = _validate_message(data, ("data",))
            if errors:
                raise _form_error(errors)
            msg = self._interaction_message(guild, result, data, perms)
            if not _has_body(msg):
                raise _empty_message()
        elif rtype == 5:
            flags = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
            msg = self._interaction_message(
                guild, result, {"flags": flags}, perms, flag_mask=LOADING | EPHEMERAL
            )
        elif rtype == 8:
            errors = _validate_choices(data.get("choices"))
            if errors:
                raise _form_error(errors)
            result.choices = data["choices"]
        result.response_type = rtype
        result.response = data
        result.events.append(("callback", body))
        if msg is not None:
            result.message = msg
            ephemeral = bool(msg["flags"] & EPHEMERAL)
            self._store(msg, visible=not ephemeral)
            if not ephemeral:
                await self._dispatch_message("MESSAGE_CREATE", guild, msg)
        if not _is_true(rec.query.get("with_response")):
            return _Reply(204)
        answer: dict[str, Any] = {"interaction": {"id": str(result.id), "type": result.type}}
        if msg is not None:
            answer["interaction"].update(
                response_message_id=msg["id"],
                response_message_loading=bool(msg["flags"] & LOADING),
                response_message_ephemeral=bool(msg["flags"] & EPHEMERAL),
            )
            answer["resource"] = {"type": rtype, "message": msg}
        return _Reply(200, answer)

    def _interaction_message(
        self,
        guild: dict[str, Any],
        result: InteractionResult,
        data: dict[str, Any],
        perms: int,
        *,
        flag_mask: int = EPHEMERAL | SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2,
        message_type: int = 20,
    ) -> dict[str, Any]:
        msg = self._build_message(
            guild,
            result.channel_id,
            data,
            perms=perms,
            flag_mask=flag_mask,
            message_type=message_type,
        )
        user = result.interaction["member"]["user"]
        msg.update(
            webhook_id=str(self.application_id),
            application_id=str(self.application_id),
            interaction_metadata={
                "id": str(result.id),
                "type": result.type,
                "user": user,
                "authorizing_integration_owners": result.interaction[
                    "authorizing_integration_owners"
                ],
                "name": result.interaction["data"]["name"],
            },
        )
        return msg

    def _interaction_for_token(self, app: str, token: str) -> InteractionResult:
        if int(app) != self.application_id:
            raise _ApiError(404, 10015, "Unknown Webhook")
        result = self._tokens.get(token)
        if result is None or result._token_expired(asyncio.get_running_loop().time()):
            raise _ApiError(401, 50027, "Invalid Webhook Token")
        return result

    def _webhook_message(self, result: InteractionResult, mid: str) -> dict[str, Any]:
        if mid == "@original":
            if result.message is None:
                raise _unknown_message()
            return result.message
        found = next((m for m in result.followups if m["id"] == mid), None)
        if found is None:
            raise _unknown_message()
        return found

    async def _get_webhook_message(
        self, rec: RecordedRequest, app: str, token: str, mid: str
    ) -> _Reply:
        result = self._interaction_for_token(app, token)
        return _Reply(200, self._webhook_message(result, mid))

    async def _edit_webhook_message(
        self, rec: RecordedRequest, app: str, token: str, mid: str
    ) -> _Reply:
        result = self._interaction_for_token(app, token)
        msg = self._webhook_message(result, mid)
        payload = rec.json if isinstance(rec.json, dict) else {}
        errors = _validate_message(payload)
        if errors:
            raise _form_error(errors)
        guild, channel = self._channel(result.channel_id)
        perms = self._permissions(guild, self.bot_user_id, channel)
        new = self._edited(
            guild, msg, payload, perms=perms, attachments=self._attachments(rec, result.channel_id)
        )
        self._replace(msg, new)
        result.events.append(("edit_original" if mid == "@original" else "edit_followup", payload))
        if self._is_visible(msg):
            await self._dispatch_message("MESSAGE_UPDATE", guild, msg)
        return _Reply(200, msg)

    async def _delete_webhook_message(
        self, rec: RecordedRequest, app: str, token: str, mid: str
    ) -> _Reply:
        result = self._interaction_for_token(app, token)
        msg = self._webhook_message(result, mid)
        guild, _ = self._channel(result.channel_id)
        visible = self._is_visible(msg)
        self._remove_message(msg)
        if mid == "@original":
            result.message = None
            result.deleted = True
            result.events.append(("delete_original", None))
        else:
            result.followups.remove(msg)
            result.events.append(("delete_followup", mid))
        if visible:
            await self._dispatch_delete(guild, msg)
        return _Reply(204)

    async def _followup(self, rec: RecordedRequest, app: str, token: str) -> _Reply:
        result = self._interaction_for_token(app, token)
        if result.response_type is None:
            raise _ApiError(404, 10015, "Unknown Webhook")
        payload = rec.json if isinstance(rec.json, dict) else {}
        errors = _validate_message(payload)
        if errors:
            raise _form_error(errors)
        guild, channel = self._channel(result.channel_id)
        perms = self._permissions(guild, self.bot_user_id, channel)
        attachments = self._attachments(rec, result.channel_id)
        original = result.message
        if original is not None and original["flags"] & LOADING:
            # Discord: the first followup after a deferred response edits the loading message.
            new = self._edited(guild, original, payload, perms=perms, attachments=attachments)
            self._replace(original, new)
            result.events.append(("followup", payload))
            if self._is_visible(original):
                await self._dispatch_message("MESSAGE_UPDATE", guild, original)
            msg = original
        else:
            msg = self._interaction_message(guild, result, payload, perms, message_type=0)
            msg["attachments"] = attachments
            if not _has_body(msg):
                raise _empty_message()
            ephemeral = bool(msg["flags"] & EPHEMERAL)
            self._store(msg, visible=not ephemeral)
            result.followups.append(msg)
            result.events.append(("followup", payload))
            if not ephemeral:
                await self._dispatch_message("MESSAGE_CREATE", guild, msg)
        if not _is_true(rec.query.get("wait")):
            return _Reply(204)
        return _Reply(200, msg)

    # ----------------------------------------------------------------- gateway

    async def _handle_gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = _Conn(ws)
        self._conns.add(conn)
        self.gateway_paths.append(str(request.rel_url))
        try:
            await conn.send(
                {
                    "op": 10,
                    "d": {"heartbeat_interval": self.heartbeat_interval},
                    "s": None,
                    "t": None,
                }
            )
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                payload = jsonlib.loads(frame.data)
                self.gateway_frames.append(payload)
                await self._gateway_op(conn, payload.get("op"), payload.get("d"))
        finally:
            self._conns.discard(conn)
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None
            self._changes.notify()  # for wait_for_shards
        return ws

    async def _gateway_op(self, conn: _Conn, op: int | None, data: Any) -> None:
        if op == 1:
            await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, data or {})
        elif op == 6:
            await self._resume(conn, data or {})
        elif op == 8 and conn.session is not None:
            await self._member_chunk(conn.session, data or {})
        # op 3 (presence), 4 (voice) and others are only recorded.

    async def _identify(self, conn: _Conn, data: dict[str, Any]) -> None:
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return
        if not data.get("token") or (self.token is not None and data["token"] != self.token):
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents") or 0)
        allowed = self.allowed_intents if self.allowed_intents is not None else intents
        if intents & PRIVILEGED_INTENTS & ~allowed:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        try:
            requested = _identify_shard(data)
        except ValueError:
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return
        shard = requested or (0, 1)
        if not self._identify_allowed(shard[0]):
            # gateway.mdx, "Identifying": "if they exceed this limit, the gateway will
            # respond with an Opcode 9 Invalid Session"; d false: not resumable.
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return
        guilds = [g for gid, g in self.guilds.items() if _on_shard(shard, gid)]
        if self.max_guilds_per_shard is not None and len(guilds) > self.max_guilds_per_shard:
            # 4011: "The session would have handled too many guilds - you are required to
            # shard your connection in order to connect."
            await conn.ws.close(code=4011, message=b"Sharding required.")
            return
        session = _Session(
            session_id=secrets.token_hex(16), intents=intents, conn=conn, shard=shard
        )
        conn.session = session
        self._sessions[session.session_id] = session
        self._session_starts.append(time.monotonic())
        ready: dict[str, Any] = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": g["id"], "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "_trace": ['["fake-gateway",{"micros":0}]'],
        }
        if requested is not None:
            # "Shard information associated with this session, if sent when identifying".
            ready["shard"] = list(shard)
        await self._send_to(session, "READY", ready)
        for guild in guilds:
            await self._send_to(session, "GUILD_CREATE", self._guild_create(guild, intents))
        self.ready.set()
        self._changes.notify()  # for wait_for_shards

    def _identify_allowed(self, shard_id: int) -> bool:
        """Whether an IDENTIFY of `shard_id` is within its bucket's limit now; every one
        counts against the next, refused or not."""
        now = time.monotonic()
        bucket = shard_id % self.max_concurrency
        last = self._last_identify.get(bucket)
        allowed = (
            self.identify_spacing is None or last is None or now - last >= self.identify_spacing
        )
        self._last_identify[bucket] = now
        self.identifies.append((now, shard_id, allowed))
        return allowed

    def _guild_create(self, guild: dict[str, Any], intents: int) -> dict[str, Any]:
        """GUILD_CREATE as Discord sends it: without the presences intent its members are
        the bot's own member only (and members in voice, which the fake has none of)."""
        if intents & GUILD_PRESENCES_INTENT:
            return guild
        members = [m for m in guild["members"] if int(m["user"]["id"]) == self.bot_user_id]
        return dict(guild, members=members)

    async def _send_to(self, session: _Session, event: str, data: dict[str, Any]) -> None:
        async with session.lock:
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.sent.append(frame)
            if session.conn is not None:
                await session.conn.send(frame)

    async def _resume(self, conn: _Conn, data: dict[str, Any]) -> None:
        session = self._sessions.get(str(data.get("session_id")))
        token_ok = self.token is None or data.get("token") == self.token
        if session is None or not token_ok:
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return
        session.conn = conn  # with the shard it identified with
        conn.session = session
        self._changes.notify()  # for wait_for_shards
        last = int(data.get("seq") or 0)
        async with session.lock:
            for frame in [f for f in session.sent if f["s"] > last]:
                await conn.send(frame)
        await self._send_to(session, "RESUMED", {"_trace": ['["fake-gateway",{"micros":0}]']})

    async def _member_chunk(self, session: _Session, data: dict[str, Any]) -> None:
        """Request Guild Members: the GUILD_MEMBERS_CHUNK "Response to Request Guild
        Members" goes to the session that asked, for a guild on its shard only."""
        guild_id = int(data.get("guild_id") or 0)
        guild = self.guilds.get(guild_id)
        if guild is None or not _on_shard(session.shard, guild_id):
            return
        query = (data.get("query") or "").lower()
        user_ids = {str(u) for u in data.get("user_ids") or []}
        members = [
            m
            for m in guild["members"]
            if (not user_ids or m["user"]["id"] in user_ids)
            and m["user"]["username"].lower().startswith(query)
        ]
        limit = int(data.get("limit") or 0)
        if limit:
            members = members[:limit]
        chunk = {
            "guild_id": guild["id"],
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
            "nonce": data.get("nonce"),
        }
        await self._send_to(session, "GUILD_MEMBERS_CHUNK", chunk)


# --------------------------------------------------------------------------- client helpers


@contextlib.contextmanager
def point_discord_at(fake: FakeDiscord) -> Iterator[None]:
    """Point discord.py's REST base and default gateway at the fake; restore on exit."""
    route_base = discord.http.Route.BASE
    gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = route_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway


async def no_identify_delay(shard_id: int | None, *, initial: bool = False) -> None:
    """A ``before_identify_hook`` without the default 5 s sleep before a re-IDENTIFY."""


def assert_no_heartbeat_threads() -> None:
    """Fail if a discord.py gateway heartbeat thread outlives its client.

    A stopped thread may still be waiting on the heartbeat it handed the event loop, for
    up to 10 s (`KeepAliveHandler.run`: `f.result(10)`), which a loaded machine reaches;
    a thread that outlives that has leaked.
    """
    for thread in threading.enumerate():
        if thread.name.startswith("keep-alive-handler"):
            thread.join(12.0)
            assert not thread.is_alive(), f"{thread.name} is still running"


def fast_client_options(**overrides: Any) -> dict[str, Any]:
    """discord.Client keyword arguments that keep tests fast."""
    options: dict[str, Any] = {"intents": discord.Intents.default(), "guild_ready_timeout": 0.1}
    options.update(overrides)
    return options


@contextlib.asynccontextmanager
async def running_client(
    fake: FakeDiscord,
    client: discord.Client,
    *,
    token: str = TOKEN,
    timeout: float = 5.0,
) -> AsyncIterator[discord.Client]:
    """Run ``client.start(token)`` against the fake until ready; close it on exit."""
    if type(client).before_identify_hook is discord.Client.before_identify_hook:
        client.before_identify_hook = no_identify_delay  # type: ignore[method-assign]
    with point_discord_at(fake):
        async with client:
            runner = asyncio.create_task(client.start(token), name="discord-client")
            ready = asyncio.create_task(client.wait_until_ready(), name="discord-client-ready")
            try:
                done, _ = await asyncio.wait(
                    {runner, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if runner in done:
                    runner.result()  # raises what start() raised
                    raise RuntimeError("discord client stopped before it became ready")
                if not done:
                    raise TimeoutError(f"discord client not ready within {timeout}s")
                yield client
            finally:
                ready.cancel()
                await client.close()
                with contextlib.suppress(asyncio.CancelledError):
                    await ready
                if not runner.done():
                    await asyncio.wait({runner}, timeout=timeout)
                if not runner.done():
                    runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
