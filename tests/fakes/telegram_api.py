"""A protocol-level fake of the Telegram Bot API, served by aiohttp on 127.0.0.1.

The real python-telegram-bot talks to it unchanged::

    async with FakeTelegram() as fake:
        fake.add_chat(-100777, "supergroup", title="Streams", admins={42})
        app = (
            ApplicationBuilder()
            .token(fake.token)
            .base_url(f"{fake.api_url}/bot")
            .base_file_url(f"{fake.api_url}/file/bot")
            .build()
        )

API (everything a test needs; the rest is private):

- ``FakeTelegram(*, token=..., bot_username=..., strict_html=True, send_limit=None,
  set_webhook_interval=1.0, webhook_retry_delay=0.2, webhook_retry_cap=5.0,
  webhook_timeout=60.0)`` (the webhook ones: see "Webhooks" below);
  ``await start()``, ``await close()``, or ``async with``. ``send_limit=(n, seconds)``
  enforces a flood limit on sendMessage and sendPhoto across all chats: a fixed window
  opened by the first send in it, and a send beyond ``n`` is answered 429 "Too Many
  Requests: retry after N" with ``parameters.retry_after`` (N is the time left in the
  window rounded up to 0.01 s: real Telegram rounds up to whole seconds, which would
  only slow tests down). ``group_send_limit=(n, seconds)`` is Telegram's limit per
  group, supergroup or channel (20 a minute): at most ``n`` sends to one such chat in
  any ``seconds`` (a rolling window, stricter than any fixed one), each further one
  answered 429 like ``send_limit``'s. Count them with ``calls_to``: ``status == 429``.
  ``api_url`` is ``http://127.0.0.1:PORT``;
  ``token``, ``bot_id`` (the token's numeric prefix) and ``bot_user`` (getMe's User).
- ``add_chat(id, type="private"|"group"|"supergroup"|"channel", *, title=, username=,
  first_name=, admins={user ids}, owner_id=, is_forum=False, bot_status=None) -> FakeChat``.
  ``chat.bot_status`` is the bot's own standing: "member" (default), "administrator"
  (default for channels, or when ``bot_id`` is in ``admins``), "left" or "kicked". Sends to
  a chat the bot may not post in fail as Telegram does: a private chat with "kicked" is
  "Forbidden: bot was blocked by the user", with "left" "Forbidden: bot can't initiate
  conversation with a user"; groups "Forbidden: bot was kicked from the group chat" or
  "... is not a member of the supergroup chat"; a channel needs "administrator". Change
  ``bot_status`` at any time (a user blocks the bot mid-test). "restricted" (supergroups)
  is a member whose own permissions ``chat.bot_rights`` limit ({"can_send_messages":
  False}); for an administrator ``bot_rights`` takes rights away ({"can_post_messages":
  False} in a channel). ``chat.permissions`` are the chat's default member permissions
  (getChat's ``permissions``; ``media_restricted`` is can_send_photos False), binding a
  bot that is a plain member. A send they forbid is 400 "Bad Request: not enough rights
  to send text messages to the chat" (or "... photos ..."). As the Bot API server checks
  access (Client.cpp's check_chat_access), a bot kicked from or not in a group can still
  getChat and getChatMember itself there; a supergroup or channel it is not in answers
  403 unless it is public (has a username) and the request only reads.
- ``migrate_chat(group_id, new_id=None, *, by_user_id=None, service_messages=True) ->
  new id``: the group becomes a supergroup (see its docstring): write requests naming the
  old id get 400 with ``parameters.migrate_to_chat_id`` (PTB's ChatMigrated), and the two
  service messages (``migrate_to_chat_id`` in the group, ``migrate_from_chat_id`` in the
  supergroup) arrive as updates, or later with ``announce_migration(group_id)``.
- ``chats``: ``str(chat id) -> FakeChat``. ``add_user(id, first_name=, username=)``.
- ``messages``: ``str(chat id) -> [Message dict]``, the bot's messages as Telegram holds them:
  edits applied in place (with ``edit_date``), deleted ones removed.
- ``calls``: every request, in arrival order, as ``RecordedCall(method, params, files,
  status, response)``; ``params`` are decoded (JSON-encoded form values become ints, lists,
  dicts; free-text fields stay strings); ``status`` is None while a long poll is pending.
  ``calls_to(method)`` filters answered calls.
- ``push_update(update) -> update_id`` queues any Update dict for getUpdates;
  ``push_message(chat_id, text, *, from_user_id=None, message_thread_id=None,
  reply_to_message_id=None) -> message_id`` queues a user's message (``bot_command``
  entities added for ``/commands``; ``from_user_id`` defaults to the chat for private chats);
  ``push_callback_query(chat_id, message_id, data, *, from_user_id) -> query id``.
  ``updates`` is everything pushed.
- ``await wait_for_call(method, predicate=None, timeout=5, *, start=0, answered=True) ->
  RecordedCall``: the first call at index ``>= start`` (pass ``len(fake.calls)`` as a mark);
  ``answered=False`` also matches a long poll still waiting.
  ``await wait_for_message(chat_id, predicate=None, timeout=5) -> dict``: the first stored
  message matching now or later (use ``predicate`` to wait for a new or edited one).
  Both raise ``TimeoutError`` listing what was seen.
- ``route_webhooks(public_base, backends) -> list``, ``webhook_routes``, ``webhook_posts``
  and ``await wait_for_webhook_post(predicate=None, timeout=5, *, start=0) ->
  WebhookPost``: see "Webhooks" below.
- ``fail_next(method, *, error_code, description=None, retry_after=None,
  migrate_to_chat_id=None, times=1)``: the next ``times`` calls of ``method`` fail with that
  error (recorded, nothing stored). A 429 gets ``"Too Many Requests: retry after N"`` and
  ``parameters.retry_after``; ``retry_after`` may be a fraction such as 0.05 (real Telegram
  sends whole seconds; PTB accepts any value > 0, and 0 is *not* a RetryAfter).
- ``unreachable_photos``: sendPhoto with one of these URLs gets 400 "Bad Request: wrong file
  identifier/HTTP URL specified" (Telegram could not fetch it). Matched without the query:
  a server that cannot serve a path cannot serve it with another query either.
- ``delete_message(chat_id, message_id)``: someone else deleted it; edits then get 400 "Bad
  Request: message to edit not found".
- deleteMessage follows the Bot API's rules: a message already gone is "message to delete
  not found"; "message can't be deleted" for a message sent 48 hours ago or more, and
  for someone else's message in a group, supergroup or channel, unless the bot is an
  administrator there (admins of the fake have every right). Age a message by moving
  its ``date`` back: ``fake.messages[str(chat)][0]["date"] -= 49 * 3600``.

Served methods (POST or GET, case-insensitive, params form-urlencoded, JSON or multipart,
plus the query string): getMe, logOut/close (no-ops), setWebhook, deleteWebhook,
getWebhookInfo, getUpdates, sendMessage, sendPhoto, editMessageText, editMessageCaption,
editMessageReplyMarkup, deleteMessage, setMyCommands, getMyCommands, deleteMyCommands,
getChat, getChatMember, getChatAdministrators, answerCallbackQuery. A wrong token gets 401
"Unauthorized" (404 "Not Found" if malformed), an unknown method 404; PTB turns both into
InvalidToken.

Behaviour copied from Telegram (the Bot API server and TDLib sources, error texts verbatim):

- parse_mode HTML is a port of TDLib's ``parse_html``: the same tags, attributes, entity
  decoding and error texts with UTF-8 byte offsets, e.g. "Bad Request: can't parse entities:
  Unsupported start tag "br" at byte offset 5". One deliberate difference while
  ``strict_html`` is on: a bare ``&`` that starts no entity is an error ('Unescaped "&" at
  byte offset N'), where Telegram keeps it literally, so a template that forgets to escape
  fails in tests rather than rendering "&lt" as "<" in production.
- Text is trimmed of surrounding whitespace, then measured in UTF-16 code units: empty ->
  "message text is empty", > 4096 -> "message is too long", caption > 1024 -> "message
  caption is too long".
- Stored ``entities``/``caption_entities`` also hold what Telegram finds in the text by
  itself (TDLib's ``find_entities``; ``find_entities()`` here): ``mention`` for "@name",
  ``hashtag``, ``cashtag``, ``bot_command``, ``url`` (with a scheme) and ``email``, merged
  with the parsed ones as TDLib merges them. ``text_mention`` comes from
  ``<a href="tg://user?id=N">``. Deliberately stricter than Telegram: a mention counts
  however short (TDLib wants 4 characters or @gif/@vid/@pic) and inside links and code too,
  so a test that finds no ``mention`` entity has shown that nobody is notified.
- An edit replaces the inline keyboard with the one passed, or removes it when none is
  passed, as Telegram does; an edit that changes nothing -> "message is not modified: ...".
- Inline keyboards: a button with no action, a bad URL (BUTTON_URL_INVALID) or
  callback_data over 64 bytes (BUTTON_DATA_INVALID) are rejected.
- ``message_thread_id`` is echoed (with ``is_topic_message``) for an open topic of a forum
  supergroup (``add_chat(..., topics=[...])``, ``set_topic``); a deleted or unknown topic,
  General's id 1 and any thread outside a forum are "message thread not found", a closed
  topic "TOPIC_CLOSED" unless the bot is an admin; ``reply_parameters`` must name a known message
  unless ``allow_sending_without_reply``.
- getUpdates long-polls for ``timeout`` seconds (``timeout=0`` answers at once) and wakes
  on a push; ``offset`` acknowledges; ``allowed_updates`` persists between calls (and is
  shared with setWebhook); a second getUpdates ends a pending one with 409 Conflict.

Webhooks (telegram-bot-api's Client.cpp and WebhookActor.cpp, texts verbatim):

- setWebhook takes url, secret_token, allowed_updates, max_connections (clamped to 1-100,
  default 40, as Telegram clamps), drop_pending_updates and ip_address, and answers
  ``{"ok": true, "result": true, "description": "Webhook was set"}``, or "Webhook is
  already set" when nothing but allowed_updates changed and drop_pending_updates is not
  set. Its checks, in Telegram's order: a setWebhook with a URL within
  ``set_webhook_interval`` seconds of the last one is 429 "Too Many Requests: retry after
  N" (N the interval; Telegram's is 1 s), even an identical one from another process,
  and it counts whether refused or not; then the
  old webhook is closed, so a refused setWebhook leaves none (and drop_pending_updates
  has dropped already); a URL td::parse_url cannot read (another scheme, a bad port, a
  bad host) is "Bad Request: invalid webhook URL specified" (no scheme means https); a
  secret_token over 256 characters "Bad Request: secret token is too long", one not of
  A-Z a-z 0-9 _ - "Bad Request: secret token contains unallowed characters"; then "Bad
  Request: bad webhook: An HTTPS URL must be provided for webhook", "...: Webhook can be
  set up only on ports 80, 88, 443 or 8443", and for an ip_address, or a host that is an
  IP literal or localhost, "...: IP address 127.0.0.1 is reserved" ("Invalid IP address
  specified", "IPv6-only addresses are not allowed"). Other host names count as
  resolving to a public address. A certificate upload is refused (400 in the fake's own
  words: it speaks no TLS).
- An empty url is deleteWebhook, which answers "Webhook was deleted" or "Webhook is
  already deleted" and takes drop_pending_updates; undelivered updates stay pending.
- While a webhook is set, getUpdates is 409 "Conflict: can't use getUpdates method while
  webhook is active; use deleteWebhook to delete the webhook first"; a setWebhook with a
  URL ends a waiting long poll with 409 "Conflict: terminated by setWebhook request".
- getWebhookInfo: url, has_custom_certificate (False), pending_update_count; with a
  webhook, last_error_date and last_error_message after a failure (kept after later
  successes, as Telegram keeps them until the webhook changes), max_connections,
  ip_address (the given one, else "<unknown>": Telegram shows the address it resolved,
  the fake resolves nothing); allowed_updates unless the default, in Telegram's order.
- Delivery. A webhook URL is public https, which a test cannot serve, so the fake also
  plays the TLS reverse proxy in front of the bot: ``route_webhooks("https://bot.example",
  ["http://127.0.0.1:PORT", ...])`` sends webhook URLs on that host and port to the
  plain-HTTP backends, round-robin per POST, path and query kept. It returns the live
  list (``webhook_routes["https://bot.example:443"]``): change it, or call again, when a
  backend restarts. A URL no route covers, or an empty list, is "Connection refused";
  the proxy is transparent, so a backend that is down is "Connection refused" too (a
  real proxy would answer 502). Each pending update, pushed before or after the webhook
  was set and filtered by allowed_updates as getUpdates filters, is POSTed as compact
  JSON with Telegram's headers: Host of the public URL, ``X-Telegram-Bot-Api-Secret-Token``
  when a secret_token was set, Content-Type application/json, Basic authorization from
  ``user:pass@`` in the URL. Only a 2xx delivers (a redirect is not followed; the body is
  ignored, where Telegram would run a method call put in it). Anything else keeps the
  update, sets last_error_*, and resends it: at once after its first failure (or after
  the answer's Retry-After, up to an hour), then after ``webhook_retry_delay`` doubling
  to ``webhook_retry_cap`` (Telegram: 2 s doubling to 60-120 s, too slow for tests). The
  errors: "Wrong response from the webhook: 401 Unauthorized" (the status line's own
  reason), "Connection refused", "Connection timed out", "Read timeout expired" after
  ``webhook_timeout`` seconds (Telegram's 60); a connection closed with no answer is
  resent but, as at Telegram, not shown in getWebhookInfo.
- Order, as Telegram posts: updates are queued by chat (messages and channel posts), by
  user (callback queries), and so on (Client.cpp's webhook_queue_id); within a queue one
  at a time in update_id order, so a failing update holds back that queue's later ones;
  queues go side by side, up to max_connections POSTs at once, one at a time until a POST
  has succeeded in the last 10 seconds. Two chats' updates may arrive out of update_id
  order (and a failing chat does not hold back the others); max_connections=1 keeps it to
  one POST at a time.
- ``webhook_posts`` records every POST that ended as ``WebhookPost(update_id, url,
  status, error)`` (``.ok``: it delivered): url is the backend's (the webhook's own when
  no route led anywhere), status None when no answer came, error Telegram's text or
  None. A POST cut short because the webhook was deleted, replaced or the fake closed is
  not recorded; its update stays pending. The delivery loop runs while a webhook is set;
  ``close()`` stops it (the webhook itself stays set, as at Telegram when a bot stops).

PTB pitfalls this fake exposes (python-telegram-bot 22.8):

- Constructing ``RetryAfter`` reads its own deprecated int property and warns, so under
  ``filterwarnings = error`` a 429 surfaces as PTBDeprecationWarning and AIORateLimiter never
  retries. Set ``PTB_TIMEDELTA=true`` (``monkeypatch.setenv``); ``retry_after`` is then a
  timedelta.
- ``async with app`` with a rejected token raises InvalidToken but leaves the bot's HTTP
  clients open; call ``await app.bot.shutdown()``. InvalidToken's message contains the token.
- httpx logs every request URL, token included, at INFO.
- PTB capitalizes descriptions ("Bad Request: message to edit not found" becomes
  "Message to edit not found", and "Can't parse entities: unsupported start tag ..."); match
  case-insensitively.
- A Bot uses a single connection for getUpdates: a second concurrent poll from the same Bot
  times out in PTB's pool instead of reaching the server.

Not modelled: Markdown parse modes (text passes through unparsed), media other than
photos, inline-mode edits, Telegram's per-chat and per-group rate limits (use
``fail_next``; ``send_limit`` is the overall one), URL normalisation in keyboards,
links to bare domains and phone or card numbers among the found entities, Telegram's
removal of U+2028-U+202E from texts (assert on ``calls`` to see what the bot sent), the
3 s Telegram holds back a 409 Conflict that follows another, and of webhooks: TLS and
self-signed certificates, DNS (host names are taken as resolving), keep-alive
connections (a new one per POST), and Telegram dropping an update it could not post in
time (a day for a message, 150 s for a callback query) or a webhook after 23 hours of 410s.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import hashlib
import ipaddress
import itertools
import json
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web
from yarl import URL

__all__ = [
    "FakeChat",
    "FakeTelegram",
    "HtmlParseError",
    "RecordedCall",
    "WebhookPost",
    "find_entities",
    "merge_found_entities",
    "parse_html",
]

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
# deleteMessage refuses messages this old (unless the bot is a group's administrator).
DELETE_WINDOW_SECONDS = 48 * 3600

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
# getUpdates while a webhook is set, and a long poll that setWebhook ends (Client.cpp's
# process_get_updates_query and abort_long_poll).
WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
TERMINATED_BY_SET_WEBHOOK = "Conflict: terminated by setWebhook request"
#: The header Telegram sends a webhook's secret_token in (WebhookActor::send_update).
SECRET_TOKEN_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Delivered only when asked for explicitly (Bot API docs for allowed_updates).
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_CHAT_TYPES = frozenset({"private", "group", "supergroup", "channel"})
_BOT_STATUSES = frozenset({"member", "administrator", "restricted", "left", "kicked"})
# ChatPermissions (Bot API): a chat's default member permissions (getChat's `permissions`,
# groups and supergroups) and a restricted member's own (ChatMemberRestricted), in the
# order the Bot API server writes them (Client.cpp's json_store_permissions, Bot API
# 10.0), which also adds the old summary can_send_media_messages (see _permissions_json).
PERMISSIONS = (
    "can_send_messages",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
    "can_send_polls",
    "can_send_other_messages",
    "can_add_web_page_previews",
    "can_react_to_messages",
    "can_edit_tag",
    "can_change_info",
    "can_invite_users",
    "can_pin_messages",
    "can_manage_topics",
)
_MEDIA_PERMISSIONS = (
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
)


def _permissions_json(permissions: dict[str, bool]) -> dict[str, bool]:
    """ChatPermissions as the Bot API server sends them, can_send_media_messages too."""
    media = any(permissions[name] for name in _MEDIA_PERMISSIONS)
    return (
        {"can_send_messages": permissions["can_send_messages"]}
        | {"can_send_media_messages": media}
        | {name: permissions[name] for name in PERMISSIONS[1:]}
    )


# Telegram's refusals of a send the chat's permissions (or the bot's restriction) forbid.
NO_TEXT_RIGHTS = "Bad Request: not enough rights to send text messages to the chat"
NO_PHOTO_RIGHTS = "Bad Request: not enough rights to send photos to the chat"
MIGRATED = "Bad Request: group chat was upgraded to a supergroup chat"
# Form values arrive as strings with everything else JSON-encoded (PTB's RequestParameter);
# these are the free-text fields a JSON decode would corrupt ("123", "true", "null").
_STRING_PARAMS = frozenset(
    [
        "text",
        "caption",
        "parse_mode",
        "photo",
        "callback_query_id",
        "url",
        "language_code",
        "business_connection_id",
        "message_effect_id",
        "inline_message_id",
        "secret_token",
        "ip_address",
    ]
)


# --------------------------------------------------------------------------------------
# HTML parse mode: a port of TDLib's parse_html (td/telegram/MessageEntity.cpp)
# --------------------------------------------------------------------------------------


class HtmlParseError(ValueError):
    """The text is not valid Telegram HTML; the message is TDLib's."""


_HTML_TAGS = frozenset(
    [
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "span",
        "pre",
        "code",
        "blockquote",
    ]
)
_SIMPLE_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
}
# TDLib's MessageEntity::get_type_priority: ties on (offset, -length) sort by this.
_ENTITY_PRIORITY = {
    "blockquote": 0,
    "expandable_blockquote": 0,
    "pre": 11,
    "code": 20,
    "text_link": 49,
    "text_mention": 49,
    "bot_command": 50,
    "bold": 90,
    "italic": 91,
    "underline": 92,
    "strikethrough": 93,
    "spoiler": 94,
    "custom_emoji": 99,
}
_NAMED_ENTITIES = {b"lt": ord("<"), b"gt": ord(">"), b"amp": ord("&"), b"quot": ord('"')}
_SPACES = frozenset(b" \t\r\n\v\f\0")  # td::is_space counts NUL, the end of the C string


def _is_space(c: int) -> bool:
    return c in _SPACES


def _decode_html_entity(b: bytes, pos: int) -> tuple[int, int]:
    """(code point, position after it) of the entity at b[pos] == '&', or (0, pos)."""

    def at(i: int) -> int:
        return b[i] if i < len(b) else 0

    end = pos + 1
    code = 0
    if at(pos + 1) == ord("#"):
        end += 1
        if at(pos + 2) == ord("x"):
            end += 1
            while chr(at(end)) in "0123456789abcdefABCDEF":
                code = code * 16 + int(chr(at(end)), 16)
                end += 1
        else:
            while ord("0") <= at(end) <= ord("9"):
                code = code * 10 + at(end) - ord("0")
                end += 1
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return 0, pos
    else:
        while chr(at(end)).isascii() and chr(at(end)).isalpha():
            end += 1
        code = _NAMED_ENTITIES.get(b[pos + 1 : end], 0)
        if not code:
            return 0, pos
    if at(end) == ord(";"):
        end += 1
    return code, end


def _checked_link(url: str) -> str | None:
    """The URL as Telegram stores it for a text_link, or None when it would drop the link."""
    if not url or any(ch.isspace() for ch in url):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = parts.scheme.lower()
    if scheme in {"tg", "ton", "tonsite"}:
        return url
    if scheme not in {"http", "https"} or not parts.hostname:
        return None
    return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, parts.fragment))


def _tg_user_id(url: str) -> int | None:
    match = re.fullmatch(r"tg://user\?id=(\d+)", url)
    return int(match.group(1)) if match else None


def _sort_entities(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        entities,
        key=lambda e: (e["offset"], -e["length"], _ENTITY_PRIORITY.get(e["type"], 50)),
    )


def parse_html(text: str, *, strict_ampersand: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """Parse Telegram HTML into (plain text, Bot API MessageEntity dicts) as TDLib does.

    Raises HtmlParseError with TDLib's message (byte offsets into the UTF-8 text).
    """
    b = text.encode("utf-8")
    n = len(b)

    def at(i: int) -> int:
        return b[i] if i < n else 0

    out = bytearray()
    entities: list[dict[str, Any]] = []
    # (tag, argument, utf16 offset, byte offset in out, expandable)
    stack: list[tuple[str, str, int, int, bool]] = []
    utf16 = 0
    bad_surrogate = False
    i = 0
    while i < n:
        c = b[i]
        if c == ord("&"):
            code, end = _decode_html_entity(b, i)
            if code:
                if 0xD800 <= code <= 0xDFFF:
                    bad_surrogate = True
                utf16 += 1 + (code > 0xFFFF)
                out += chr(code).encode("utf-8", "surrogatepass")
                i = end
                continue
            if strict_ampersand:
                raise HtmlParseError(f'Unescaped "&" at byte offset {i}')
        if c != ord("<"):
            if c & 0xC0 != 0x80:  # first byte of a character
                utf16 += 1 + (c >= 0xF0)
            out.append(c)
            i += 1
            continue

        begin = i
        i += 1
        if at(i) != ord("/"):
            while not _is_space(at(i)) and at(i) != ord(">"):
                i += 1
            if at(i) == 0:
                raise HtmlParseError(f"Unclosed start tag at byte offset {begin}")
            tag = b[begin + 1 : i].decode("utf-8", "replace").lower()
            if tag not in _HTML_TAGS:
                raise HtmlParseError(f'Unsupported start tag "{tag}" at byte offset {begin}')
            argument = ""
            expandable = False
            while at(i) != ord(">"):
                while at(i) != 0 and _is_space(at(i)):
                    i += 1
                if at(i) == ord(">"):
                    break
                if at(i) == 0:
                    raise HtmlParseError(f"Unclosed start tag at byte offset {begin}")
                name_begin = i
                while not _is_space(at(i)) and at(i) not in (ord("="), ord(">")):
                    i += 1
                name = b[name_begin:i].decode("utf-8", "replace")
                if not name:
                    raise HtmlParseError(
                        f'Empty attribute name in the tag "{tag}" at byte offset {begin}'
                    )
                while at(i) != 0 and _is_space(at(i)):
                    i += 1
                value = ""
                if at(i) == ord("="):  # newer TDLib also takes bare attributes (expandable)
                    i += 1
                    while at(i) != 0 and _is_space(at(i)):
                        i += 1
                    if at(i) == 0:
                        raise HtmlParseError(f'Unclosed start tag "{tag}" at byte offset {begin}')
                    if at(i) not in (ord("'"), ord('"')):
                        # A name token: letters, digits, periods, hyphens; not case sensitive.
                        token_begin = i
                        while chr(at(i)).isascii() and (
                            chr(at(i)).isalnum() or at(i) in (ord("."), ord("-"))
                        ):
                            i += 1
                        value = b[token_begin:i].decode("ascii").lower()
                        if not _is_space(at(i)) and at(i) != ord(">"):
                            raise HtmlParseError(
                                f"Unexpected end of name token at byte offset {token_begin}"
                            )
                    else:
                        quote = at(i)
                        i += 1
                        raw = bytearray()
                        while at(i) != quote and at(i) != 0:
                            if at(i) == ord("&"):
                                code, end = _decode_html_entity(b, i)
                                if code:
                                    raw += chr(code).encode("utf-8", "surrogatepass")
                                    i = end
                                    continue
                                if strict_ampersand:
                                    raise HtmlParseError(f'Unescaped "&" at byte offset {i}')
                            raw.append(at(i))
                            i += 1
                        if at(i) == quote:
                            i += 1
                        value = raw.decode("utf-8", "replace")
                    if at(i) == 0:
                        raise HtmlParseError(f"Unclosed start tag at byte offset {begin}")
                if tag == "a" and name == "href":
                    argument = value
                elif tag == "code" and name == "class" and value.startswith("language-"):
                    argument = value[len("language-") :]
                elif tag == "span" and name == "class" and value.startswith("tg-"):
                    argument = value[len("tg-") :]
                elif (tag == "tg-emoji" and name == "emoji-id") or (
                    tag == "blockquote" and name == "expandable"
                ):
                    argument = value
                    expandable = tag == "blockquote"
            if tag == "span" and argument != "spoiler":
                raise HtmlParseError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {begin}'
                )
            stack.append((tag, argument, utf16, len(out), expandable))
            i += 1
            continue

        # an end tag
        if not stack:
            raise HtmlParseError(f"Unexpected end tag at byte offset {begin}")
        while not _is_space(at(i)) and at(i) != ord(">"):
            i += 1
        end_tag = b[begin + 2 : i].decode("utf-8", "replace").lower()
        while _is_space(at(i)) and at(i) != 0:
            i += 1
        if at(i) != ord(">"):
            raise HtmlParseError(f"Unclosed end tag at byte offset {begin}")
        tag, argument, start, start_byte, expandable = stack[-1]
        if end_tag and end_tag != tag:
            raise HtmlParseError(
                f'Unmatched end tag at byte offset {begin}, expected "</{tag}>", '
                f'found "</{end_tag}>"'
            )
        i += 1
        stack.pop()
        length = utf16 - start
        if length <= 0:
            continue
        entity: dict[str, Any] = {"offset": start, "length": length}
        if tag in _SIMPLE_ENTITY_TYPES:
            entities.append({"type": _SIMPLE_ENTITY_TYPES[tag], **entity})
        elif tag == "tg-emoji":
            if not argument.isdigit() or int(argument) == 0:
                raise HtmlParseError("Invalid custom emoji identifier specified")
            entities.append({"type": "custom_emoji", **entity, "custom_emoji_id": argument})
        elif tag == "a":
            url = argument or out[start_byte:].decode("utf-8", "surrogatepass")
            user_id = _tg_user_id(url)
            checked = _checked_link(url)
            if user_id is not None:
                user = {"id": user_id, "is_bot": False, "first_name": ""}
                entities.append({"type": "text_mention", **entity, "user": user})
            elif checked is not None:
                entities.append({"type": "text_link", **entity, "url": checked})
        elif tag == "pre":
            last = entities[-1] if entities else None
            if (
                last is not None
                and last["type"] == "code"
                and (last["offset"], last["length"]) == (start, length)
                and last.get("language")
            ):
                last["type"] = "pre"
            else:
                entities.append({"type": "pre", **entity})
        elif tag == "code":
            last = entities[-1] if entities else None
            if (
                last is not None
                and last["type"] == "pre"
                and (last["offset"], last["length"]) == (start, length)
                and argument
            ):
                last["language"] = argument
            else:
                entities.append({"type": "code", **entity, "language": argument})
        else:  # blockquote
            kind = "expandable_blockquote" if expandable else "blockquote"
            entities.append({"type": kind, **entity})
    if stack:
        raise HtmlParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    if bad_surrogate:
        raise HtmlParseError(
            "Text contains invalid Unicode characters after decoding HTML entities, "
            "check for unmatched surrogate code units"
        )
    for entity in entities:
        if entity["type"] == "code" or not entity.get("language", True):
            entity.pop("language", None)
    return out.decode("utf-8"), _sort_entities(entities)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's limits and entity offsets."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


_TRIM = " \t\r\n\v\f"


def _trim(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Strip surrounding whitespace as Telegram does, shifting and clipping entities."""
    stripped = text.strip(_TRIM)
    if stripped == text or not entities:
        return stripped, entities
    lead = utf16_len(text[: len(text) - len(text.lstrip(_TRIM))])
    total = utf16_len(stripped)
    kept = []
    for entity in entities:
        start = max(entity["offset"] - lead, 0)
        end = min(entity["offset"] + entity["length"] - lead, total)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept


_BOT_COMMAND = re.compile(r"(?<![\w/<>])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/<>])")


def _bot_command_entities(text: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "bot_command",
            "offset": utf16_len(text[: m.start()]),
            "length": utf16_len(m.group()),
        }
        for m in _BOT_COMMAND.finditer(text)
    ]


# --------------------------------------------------------------------------------------
# Entities Telegram finds by itself: TDLib's find_entities and merge_new_entities
# --------------------------------------------------------------------------------------

_HASHTAG = re.compile(r"(?<![\w\u200c\xb7\u0d80-\u0dff])#[\w\u200c\xb7\u0d80-\u0dff]++(?!#)")
_CASHTAG = re.compile(
    r"(?<![\w\u200c\xb7\u0d80-\u0dff$])\$(?:1INCH|[A-Z]{1,8}+)(?![\w\u200c\xb7\u0d80-\u0dff$])"
)
# With a scheme only: TDLib also links bare domains ("twitch.tv/quinn"), which can only
# swallow mentions, so leaving them out makes this fake report more mentions, never fewer.
_URL_START = re.compile(r"(?i)(?<![A-Za-z0-9+\-])(?:https?|ftp|tg|ton)://")
_EMAIL = re.compile(
    r"(?<![\w.+\-])[A-Za-z0-9_\-]{1,35}(?:[.+][A-Za-z0-9_\-]{1,35}){0,10}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9_\-]{0,28}[A-Za-z0-9])?\.){1,6}[A-Za-z]{2,8}(?![\w\-@])"
)
_URL_BAD_END = ".:;,('?!`"
# Entities a found one may sit inside (the rest are "continuous": it must not touch them).
_SPLITTABLE_TYPES = frozenset({"bold", "italic", "underline", "strikethrough", "spoiler"})
_BLOCKQUOTE_TYPES = frozenset({"blockquote", "expandable_blockquote"})


def _is_word_character(ch: str) -> bool:
    """TDLib's is_word_character: a letter, a number or an underscore."""
    return ch == "_" or ch.isalnum()


def _is_url_symbol(ch: str) -> bool:
    """TDLib's is_url_path_symbol: General Punctuation (word joiners, zero-width spaces,
    bidi controls) and separators end a URL, so do a newline, < > " « »."""
    c = ord(ch)
    if ch in '\n<>"\xab\xbb' or ch.isspace():
        return False
    if 0x2000 <= c <= 0x206F:
        return c in (0x200C, 0x200D) or 0x2010 <= c <= 0x2015
    return True


def _find_mentions(text: str) -> list[tuple[int, int]]:
    """TDLib's match_mentions, "@" and 2-32 of [A-Za-z0-9_] between non-word characters.

    TDLib then drops those under 4 characters but @gif, @vid and @pic; the fake keeps them,
    so a test errs on the side of seeing a mention.
    """
    found = []
    pos = text.find("@")
    while pos != -1:
        end = pos + 1
        if pos == 0 or not _is_word_character(text[pos - 1]):
            while end < len(text) and (text[end].isascii() and _is_word_character(text[end])):
                end += 1
            size = end - pos - 1
            after = text[end] if end < len(text) else ""
            if 2 <= size <= 32 and not (after and _is_word_character(after)):
                found.append((pos, end))
        pos = text.find("@", end)
    return found


def _find_urls(text: str) -> list[tuple[int, int]]:
    found = []
    for match in _URL_START.finditer(text):
        end = match.end()
        while end < len(text) and _is_url_symbol(text[end]):
            end += 1
        while end > match.end() and text[end - 1] in _URL_BAD_END:
            end -= 1
        if end > match.end():
            found.append((match.start(), end))
    return found


def find_entities(text: str) -> list[dict[str, Any]]:
    """The entities Telegram adds to a message's plain text on its own: mention, hashtag,
    cashtag, bot_command, url and email, as Bot API MessageEntity dicts (UTF-16 units).

    Like TDLib, the first (then the longest) of overlapping ones wins, so a URL takes in an
    "@name" in its path and an e-mail address its "@domain".
    """
    spans: list[tuple[int, int, str]] = [(a, b, "mention") for a, b in _find_mentions(text)]
    spans += [(m.start(), m.end(), "bot_command") for m in _BOT_COMMAND.finditer(text)]
    for match in _HASHTAG.finditer(text):
        tag = match.group()[1:]
        if any(ch.isalpha() for ch in tag):
            letters = len(tag) if len(tag) <= 256 else 256
            spans.append((match.start(), match.start() + 1 + letters, "hashtag"))
    spans += [(m.start(), m.end(), "cashtag") for m in _CASHTAG.finditer(text)]
    spans += [(a, b, "url") for a, b in _find_urls(text)]
    spans += [(m.start(), m.end(), "email") for m in _EMAIL.finditer(text)]
    spans.sort(key=lambda span: (span[0], -(span[1] - span[0])))
    kept: list[dict[str, Any]] = []
    last_end = 0
    for start, end, kind in spans:
        if start < last_end:
            continue
        last_end = end
        offset = utf16_len(text[:start])
        kept.append({"type": kind, "offset": offset, "length": utf16_len(text[start:end])})
    return kept


def merge_found_entities(
    entities: list[dict[str, Any]], found: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`entities` (from parse_mode or the caller) plus the `found` ones TDLib keeps.

    TDLib drops a found entity that overlaps a link, a text_mention, code or pre, or that
    crosses a blockquote's edge. One deliberate difference: a found mention is always kept,
    even inside a link or code, so that a test asserting "no mention" is at least as strict
    as Telegram, whatever tags the text sits in.
    """

    def overlaps(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return bool(
            a["offset"] < b["offset"] + b["length"] and b["offset"] < a["offset"] + a["length"]
        )

    def crosses(entity: dict[str, Any], quote: dict[str, Any]) -> bool:
        inside = quote["offset"] <= entity["offset"] and (
            entity["offset"] + entity["length"] <= quote["offset"] + quote["length"]
        )
        return overlaps(entity, quote) and not inside

    quotes = [e for e in entities if e["type"] in _BLOCKQUOTE_TYPES]
    continuous = [e for e in entities if e["type"] not in _SPLITTABLE_TYPES | _BLOCKQUOTE_TYPES]
    kept = [
        entity
        for entity in found
        if entity["type"] == "mention"
        or not (
            any(crosses(entity, quote) for quote in quotes)
            or any(overlaps(entity, old) for old in continuous)
        )
    ]
    return _sort_entities([*entities, *kept])


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


class _ApiError(Exception):
    """Becomes an {"ok": false} reply with this code, description and parameters."""

    def __init__(
        self, code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


@dataclass
class FakeChat:
    """A chat the fake knows; see FakeTelegram.add_chat."""

    id: int
    type: str = "private"
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    admins: set[int] = field(default_factory=set)
    owner_id: int | None = None
    is_forum: bool = False
    bot_status: str = "member"
    next_message_id: int = 1
    #: A forum's topics by thread id: "open", "closed" or "deleted". General is not one:
    #: it takes no thread id (a send naming 1 is refused like any unknown thread).
    topics: dict[int, str] = field(default_factory=dict)
    #: Media restricted for members (group permissions): a photo from a bot that is no
    #: admin is refused.
    media_restricted: bool = False
    #: The chat's default member permissions (getChat's `permissions`) that differ from
    #: "allowed", e.g. {"can_send_messages": False}; they bind a bot that is a plain member.
    permissions: dict[str, bool] = field(default_factory=dict)
    #: The bot's own rights that differ from the default: a "restricted" bot's
    #: permissions ({"can_send_photos": False}) or an "administrator" bot's rights
    #: ({"can_post_messages": False} in a channel).
    bot_rights: dict[str, bool] = field(default_factory=dict)
    #: Set by ``migrate_chat``: the supergroup this group became (the group is deactivated).
    migrated_to: int | None = None

    def member_permissions(self) -> dict[str, bool]:
        """The chat's default ChatPermissions, every field."""
        permissions = dict.fromkeys(PERMISSIONS, True)
        if self.media_restricted:
            permissions["can_send_photos"] = False
        return permissions | self.permissions

    def to_dict(self) -> dict[str, Any]:
        """The Chat object as the Bot API sends it."""
        chat: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private":
            chat["first_name"] = self.first_name or f"User {self.id}"
        else:
            chat["title"] = self.title or f"Chat {self.id}"
        if self.username:
            chat["username"] = self.username
        if self.is_forum:
            chat["is_forum"] = True
        return chat


@dataclass
class RecordedCall:
    """One request the fake received and (once ``status`` is set) answered."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    status: int | None = None
    response: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Whether the fake answered with {"ok": true}."""
        return self.status == 200

    @property
    def result(self) -> Any:
        """The ``result`` of a successful reply (None otherwise)."""
        return (self.response or {}).get("result")

    @property
    def description(self) -> str | None:
        """The error description of a failed reply."""
        return (self.response or {}).get("description")


@dataclass
class _Failure:
    error_code: int
    description: str
    parameters: dict[str, Any] | None
    times: int


_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request: chat not found",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: CONFLICT,
    500: "Internal Server Error",
    502: "Bad Gateway",
}

Handler = Callable[[dict[str, Any], dict[str, bytes]], Awaitable[Any]]
_T = TypeVar("_T")


def _decode_form_value(name: str, value: str) -> Any:
    if name in _STRING_PARAMS:
        return value
    if name == "chat_id":
        try:
            return int(value)
        except ValueError:
            return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


# --------------------------------------------------------------------------------------
# Webhooks: setWebhook's checks and how updates are posted (telegram-bot-api's Client.cpp
# and WebhookActor.cpp; the URL parser is TDLib's td::parse_url, tdutils/td/utils/HttpUrl.cpp)
# --------------------------------------------------------------------------------------

# WebhookActor::start_up: "Webhook can be set up only on ports 80, 88, 443 or 8443".
_WEBHOOK_PORTS = frozenset({80, 88, 443, 8443})
# The update types in the Bot API server's order (Client.cpp's get_update_type_name), the
# order getWebhookInfo lists allowed_updates in.
_UPDATE_TYPES = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "custom_event",
    "custom_query",
    "shipping_query",
    "pre_checkout_query",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
    "message_reaction",
    "message_reaction_count",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "purchased_paid_media",
    "managed_bot",
    "guest_message",
)
# TDLib's IPAddress::is_reserved: no webhook may point into these (nor at any IPv6 address).
_RESERVED_NETWORKS = tuple(
    ipaddress.IPv4Network(block)
    for block in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
    )
)
# check_url_part in td::parse_url: what a host or userinfo may hold besides letters and
# digits (RFC 7230 and RFC 3986), %XX escapes and any non-ASCII byte.
_URL_PART_SYMBOLS = frozenset(".-_!$,~*'();&+=")
# The queue each kind of update joins, and what in it names the queue (Client.cpp's
# webhook_queue_id in add_update calls: a chat's messages, a user's callback queries, ...).
# Kinds not listed get a queue of their own.
_WEBHOOK_QUEUES: dict[str, tuple[str, tuple[str, ...]]] = {
    "message": ("chat", ("chat", "id")),
    "edited_message": ("chat", ("chat", "id")),
    "channel_post": ("chat", ("chat", "id")),
    "edited_channel_post": ("chat", ("chat", "id")),
    "business_message": ("business", ("chat", "id")),
    "edited_business_message": ("business", ("chat", "id")),
    "deleted_business_messages": ("business", ("chat", "id")),
    "inline_query": ("inline_query", ("from", "id")),
    "chosen_inline_result": ("chosen_inline_result", ("from", "id")),
    "callback_query": ("callback_query", ("from", "id")),
    "shipping_query": ("payment", ("from", "id")),
    "pre_checkout_query": ("payment", ("from", "id")),
    "poll": ("poll", ("id",)),
    "poll_answer": ("poll", ("poll_id",)),
    "my_chat_member": ("my_chat_member", ("chat", "id")),
    "chat_member": ("member", ("old_chat_member", "user", "id")),
    "chat_join_request": ("member", ("from", "id")),
    "chat_boost": ("boost", ("chat", "id")),
    "removed_chat_boost": ("boost", ("chat", "id")),
    "message_reaction": ("message_reaction", ("chat", "id")),
    "message_reaction_count": ("message_reaction_count", ("chat", "id")),
    "business_connection": ("business_connection", ("user", "id")),
    "purchased_paid_media": ("purchased_paid_media", ("from", "id")),
}
# WebhookActor: an update that fails is resent, Retry-After honoured up to an hour.
_MAX_RETRY_AFTER = 3600
# WebhookActor::create_new_connections: without a successful post in the last 10 seconds
# Telegram keeps to one connection; after one, up to max_connections.
_ACTIVE_WINDOW = 10.0


@dataclass(frozen=True)
class _WebhookUrl:
    """A webhook URL as td::parse_url reads it."""

    https: bool
    userinfo: str
    host: str  # lower-cased
    port: int  # 443 or 80 when the URL names none
    target: str  # path and query, as the request line carries them

    @property
    def base(self) -> str:
        """scheme://host:port, the key of ``FakeTelegram.webhook_routes``."""
        return f"{'https' if self.https else 'http'}://{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        """HttpHeaderCreator::get_host_header: the port only when not the scheme's own."""
        default = 443 if self.https else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def _url_part_ok(part: str, *, allow_colon: bool) -> bool:
    """check_url_part in td::parse_url."""
    i = 0
    while i < len(part):
        c = part[i]
        if (c.isascii() and c.isalnum()) or c in _URL_PART_SYMBOLS or (allow_colon and c == ":"):
            i += 1
        elif c == "%":
            if not re.fullmatch(r"[0-9A-Fa-f]{2}", part[i + 1 : i + 3]):
                return False
            i += 3
        elif ord(c) >= 128:
            i += 1
        else:
            return False
    return True


def _parse_webhook_url(url: str) -> _WebhookUrl | None:
    """A port of td::parse_url(url, Https), or None where it fails (setWebhook then answers
    "invalid webhook URL specified"). Like Telegram, a URL without a scheme is https."""
    scheme = re.match(r"([^:/?#@\[\]]*)://", url)
    if scheme is None:
        https, rest = True, url
    elif scheme[1].lower() in ("http", "https"):
        https, rest = scheme[1].lower() == "https", url[scheme.end() :]
    else:
        return None  # "Unsupported URL protocol"
    authority = re.match(r"[^/?#]*", rest)
    assert authority is not None
    userinfo_host_port, query = authority[0], rest[authority.end() :]
    colon = len(userinfo_host_port) - 1
    while colon > 0 and userinfo_host_port[colon] not in ":]@":
        colon -= 1
    port = 0
    userinfo_host = userinfo_host_port
    if colon > 0 and userinfo_host_port[colon] == ":":
        digits = userinfo_host_port[colon + 1 :].lstrip("0") or "0"
        port = int(digits) if re.fullmatch(r"[0-9]{1,9}", digits) else -1
        port = port or -1
        userinfo_host = userinfo_host_port[:colon]
    if not 0 <= port <= 65535:
        return None  # "Wrong port number specified in the URL"
    userinfo, _, host = userinfo_host.rpartition("@")
    is_ipv6 = host.startswith("[") and host.endswith("]") and len(host) > 1
    if is_ipv6:
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None  # "Wrong IPv6 address specified in the URL"
    if not host or host == ".":
        return None
    host = host.lower()
    if not is_ipv6 and not (
        _url_part_ok(host, allow_colon=False) and _url_part_ok(userinfo, allow_colon=True)
    ):
        return None  # "Disallowed character in URL host", "Wrong percent-encoded ..."
    query = query.rstrip(" \t\r\n\v\f") or "/"
    if not query.startswith("/"):
        query = "/" + query
    target = "".join(f"%{ord(c):02X}" if ord(c) <= 0x20 else c for c in query)
    return _WebhookUrl(https, userinfo, host, port or (443 if https else 80), target)


def _ip_address_problem(text: str) -> str | None:
    """WebhookActor::check_ip_address: why Telegram will not post to this address."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return "Invalid IP address specified"
    if not isinstance(address, ipaddress.IPv4Address):
        return "IPv6-only addresses are not allowed"
    if any(address in network for network in _RESERVED_NETWORKS):
        return f"IP address {address} is reserved"
    return None


def _host_problem(host: str) -> str | None:
    """Why the host's address is refused, for the hosts whose address the fake knows
    without DNS: IP literals and localhost (the Bot API server resolves the host and
    checks the address as it checks a given ip_address)."""
    if host.startswith("["):
        return "IPv6-only addresses are not allowed"
    if host == "localhost" or host.endswith(".localhost"):
        return _ip_address_problem("127.0.0.1")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return None  # a name: the fake takes it as resolving to a public address
    return _ip_address_problem(host)


def _webhook_queue(update: dict[str, Any]) -> Hashable:
    """The queue an update is posted in: one at a time and in order within a queue, queues
    side by side (Client.cpp's webhook_queue_id)."""
    for kind, (queue, path) in _WEBHOOK_QUEUES.items():
        value: Any = update.get(kind)
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            return (queue, value)
    return ("update", update.get("update_id"))


def _to_bool(value: Any) -> bool:
    """Client::to_bool: "true", "yes" or "1", any case, spaces around ignored."""
    return str(value).strip().lower() in ("true", "yes", "1")


def _td_integer(value: Any, default: int) -> int:
    """td::to_integer as get_integer_arg reads an argument: an empty one is the default,
    otherwise its leading digits (0 if none)."""
    if value is None or value == "":
        return default
    text = json.dumps(value) if isinstance(value, bool) else str(value)
    digits = re.match(r"-?[0-9]*", text)
    assert digits is not None
    return int(digits[0]) if digits[0] not in ("", "-") else 0


@dataclass
class WebhookPost:
    """One POST of an update to a webhook, once it is answered or has failed."""

    update_id: int
    #: Where it went: the backend's URL with the webhook's path and query (the webhook's
    #: own URL when no route leads anywhere).
    url: str
    #: The backend's HTTP status, None when no answer came (connection refused, timeout).
    status: int | None
    #: Telegram's text for the failure (getWebhookInfo's last_error_message), None on 2xx.
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether this POST delivered the update (a 2xx answer)."""
        return self.error is None


@dataclass
class _Retry:
    """An update's resend schedule (WebhookActor's Update: fail_count_, delay_, wakeup_at_)."""

    fails: int = 0
    delay: float | None = None
    wakeup_at: float = 0.0


@dataclass
class _Webhook:
    """The webhook that is set, and what its delivery loop knows."""

    url: str
    parsed: _WebhookUrl
    secret_token: str
    max_connections: int
    ip_address: str  # the one given to setWebhook, "" if none
    last_error_date: int = 0
    last_error_message: str = ""
    #: time.monotonic() of the last 2xx; Telegram starts "long ago" (WebhookActor::start_up).
    last_success: float = -math.inf
    retries: dict[int, _Retry] = field(default_factory=dict)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def same_as(self, url: str, secret_token: str, max_connections: int, ip: str) -> bool:
        """Whether setWebhook with these changes nothing (process_set_webhook_query)."""
        return (
            url == self.url
            and secret_token == self.secret_token
            and max_connections == self.max_connections
            and bool(ip) == bool(self.ip_address)
            and (not ip or ip == self.ip_address)
        )


@dataclass
class _Described:
    """A handler's result that Telegram answers with a ``description`` too."""

    result: Any
    description: str


class FakeTelegram:
    """The fake Bot API server; see the module docstring for its API."""

    def __init__(
        self,
        *,
        token: str = "123456:TEST-token-for-the-fake",
        bot_username: str = "streambot_test",
        strict_html: bool = True,
        send_limit: tuple[int, float] | None = None,
        group_send_limit: tuple[int, float] | None = None,
        set_webhook_interval: float = 1.0,
        webhook_retry_delay: float = 0.2,
        webhook_retry_cap: float = 5.0,
        webhook_timeout: float = 60.0,
    ) -> None:
        self.token = token
        self.send_limit = send_limit
        self.group_send_limit = group_send_limit
        #: setWebhook with a URL is refused (429) this soon after the last one.
        self.set_webhook_interval = set_webhook_interval
        #: An update that failed twice waits this long, doubling each time up to the cap.
        self.webhook_retry_delay = webhook_retry_delay
        self.webhook_retry_cap = webhook_retry_cap
        #: How long each POST to a webhook may take before it counts as failed.
        self.webhook_timeout = webhook_timeout
        self.bot_username = bot_username
        self.strict_html = strict_html
        prefix = token.split(":", 1)[0]
        self.bot_id = int(prefix) if prefix.isdigit() else 123456
        self.bot_user: dict[str, Any] = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Stream Bot",
            "username": bot_username,
        }
        self.chats: dict[str, FakeChat] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[RecordedCall] = []
        self.updates: list[dict[str, Any]] = []
        self.unreachable_photos: set[str] = set()
        self.commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.api_url = ""
        #: Every POST of an update to the webhook, in the order they ended.
        self.webhook_posts: list[WebhookPost] = []
        #: "https://host:port" -> the local backends its webhook URLs go to (route_webhooks).
        self.webhook_routes: dict[str, list[str]] = {}

        self._user_messages: dict[tuple[str, int], dict[str, Any]] = {}
        self._pending: list[dict[str, Any]] = []
        self._last_update_id = 0
        self._allowed_updates: list[str] = []
        self._poll: asyncio.Future[str] | None = None
        self._callback_queries: dict[str, bool] = {}
        self._query_ids = itertools.count(1)
        self._file_ids: dict[str, list[dict[str, Any]]] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._migrated_by: dict[int, int | None] = {}
        self._send_window = (0.0, 0)  # (opened at, sends counted), for send_limit
        self._group_sends: dict[int, collections.deque[float]] = {}  # group_send_limit
        self._webhook: _Webhook | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._next_set_webhook_at = 0.0  # time.monotonic()
        self._route_turns: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._methods: dict[str, tuple[str, Handler]] = {
            name.lower(): (name, handler)
            for name, handler in (
                ("getMe", self._get_me),
                ("logOut", self._true),
                ("close", self._true),
                ("setWebhook", self._set_webhook),
                ("deleteWebhook", self._delete_webhook),
                ("getWebhookInfo", self._get_webhook_info),
                ("getUpdates", self._get_updates),
                ("sendMessage", self._send_message),
                ("sendPhoto", self._send_photo),
                ("editMessageText", self._edit_message_text),
                ("editMessageCaption", self._edit_message_caption),
                ("editMessageReplyMarkup", self._edit_message_reply_markup),
                ("deleteMessage", self._delete_message),
                ("setMyCommands", self._set_my_commands),
                ("getMyCommands", self._get_my_commands),
                ("deleteMyCommands", self._delete_my_commands),
                ("getChat", self._get_chat),
                ("getChatMember", self._get_chat_member),
                ("getChatAdministrators", self._get_chat_administrators),
                ("answerCallbackQuery", self._answer_callback_query),
            )
        }

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port and set ``api_url``."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_route("*", "/file/bot{token}/{path:.*}", self._file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.api_url = f"http://{host}:{port}"

    async def close(self) -> None:
        """Answer any pending long poll, stop posting to the webhook and stop the server
        (idempotent). The webhook stays set, as it does at Telegram when a bot stops."""
        self._closing = True
        self._wake_poll("closing")
        try:
            await self._stop_webhook_delivery()
        finally:
            if self._runner is not None:
                runner, self._runner = self._runner, None
                await runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- test-facing state -------------------------------------------------------------

    def add_chat(
        self,
        chat_id: int,
        type: str = "private",
        *,
        title: str | None = None,
        username: str | None = None,
        first_name: str | None = None,
        admins: Iterable[int] = (),
        owner_id: int | None = None,
        is_forum: bool = False,
        bot_status: str | None = None,
        topics: Iterable[int] = (),
    ) -> FakeChat:
        """Register a chat the bot is in (see the module docstring for ``bot_status``);
        a forum's open `topics` by thread id (``set_topic`` closes or deletes one)."""
        if type not in _CHAT_TYPES:
            raise ValueError(f"unknown chat type {type!r}")
        if is_forum and type != "supergroup":
            raise ValueError("only supergroups can be forums")
        admin_ids = set(admins)
        if bot_status is None:
            is_admin = type == "channel" or self.bot_id in admin_ids
            bot_status = "administrator" if is_admin else "member"
        if bot_status not in _BOT_STATUSES:
            raise ValueError(f"unknown bot_status {bot_status!r}")
        chat = FakeChat(
            id=chat_id,
            type=type,
            title=title,
            username=username,
            first_name=first_name,
            admins=admin_ids,
            owner_id=owner_id,
            is_forum=is_forum,
            bot_status=bot_status,
            topics=dict.fromkeys(topics, "open"),
        )
        self.chats[str(chat_id)] = chat
        self.messages.setdefault(str(chat_id), [])
        if type == "private":
            self.add_user(chat_id, first_name=first_name, username=username)
        return chat

    @staticmethod
    def _manages_topics(chat: FakeChat) -> bool:
        # An administrator bot in a forum has can_manage_topics (as _member reports it).
        return chat.bot_status == "administrator"

    def migrate_chat(
        self,
        chat_id: int,
        new_id: int | None = None,
        *,
        by_user_id: int | None = None,
        service_messages: bool = True,
    ) -> int:
        """Upgrade the group `chat_id` to a supergroup, as Telegram does when a group's
        history is made visible, a public link set, topics enabled or the member limit
        reached; returns the supergroup's id (by default -100... made from the old one).

        The supergroup keeps the group's title, members, admins and the bot's standing
        and rights. The group is deactivated: a write request naming it (a send, an edit,
        a delete, a member list) is answered 400 "Bad Request: group chat was upgraded to
        a supergroup chat" with ``parameters.migrate_to_chat_id`` (Client.cpp's
        check_chat_access; the Bot API's ResponseParameters: "migrate_to_chat_id ... The
        group has been migrated to a supergroup with the specified identifier"), while
        getChat and getChatMember of the bot still answer for the old group. Its
        messages stay in ``messages[str(chat_id)]``: the supergroup's history starts
        anew with its own message ids (clients show the old one above it), so an old
        message cannot be edited through the new id ("message to edit not found").

        With `service_messages` (the default) both service messages arrive as updates
        (``announce_migration``); pass False to send them later, or never.
        """
        old = self.chats[str(chat_id)]
        if old.type != "group":
            raise ValueError(f"only a group can become a supergroup, not a {old.type}")
        if old.migrated_to is not None:
            raise ValueError(f"chat {chat_id} became {old.migrated_to} already")
        new_id = new_id if new_id is not None else -(10**12 + abs(chat_id))
        if str(new_id) in self.chats:
            raise ValueError(f"chat {new_id} exists already")
        new = FakeChat(
            id=new_id,
            type="supergroup",
            title=old.title,
            admins=set(old.admins),
            owner_id=old.owner_id,
            bot_status=old.bot_status,
            media_restricted=old.media_restricted,
            permissions=dict(old.permissions),
            bot_rights=dict(old.bot_rights),
        )
        self.chats[str(new_id)] = new
        self.messages.setdefault(str(new_id), [])
        old.migrated_to = new_id
        self._migrated_by[chat_id] = by_user_id
        if service_messages:
            self.announce_migration(chat_id)
        self._notify()
        return new_id

    def announce_migration(self, chat_id: int) -> tuple[int, int]:
        """Queue the two service messages of the group `chat_id`'s upgrade: in the group,
        one with ``migrate_to_chat_id``; in the supergroup, its first message, with
        ``migrate_from_chat_id`` (Bot API, Message: "migrate_to_chat_id: Optional. The
        group has been migrated to a supergroup with the specified identifier";
        "migrate_from_chat_id: Optional. The supergroup has been migrated from a group
        with the specified identifier"). Returns their update ids."""
        old = self.chats[str(chat_id)]
        if old.migrated_to is None:
            raise ValueError(f"chat {chat_id} was not migrated")
        new = self.chats[str(old.migrated_to)]
        by = self._migrated_by.get(chat_id)
        if by is None:
            by = old.owner_id if old.owner_id is not None else min(old.admins, default=1)
        sender = self.add_user(by)
        now = int(time.time())
        first = self.push_update(
            {
                "message": {
                    "message_id": self._next_message_id(old),
                    "from": sender,
                    "chat": old.to_dict(),
                    "date": now,
                    "migrate_to_chat_id": new.id,
                }
            }
        )
        second = self.push_update(
            {
                "message": {
                    "message_id": self._next_message_id(new),
                    "from": sender,
                    "chat": new.to_dict(),
                    "date": now,
                    "migrate_from_chat_id": old.id,
                }
            }
        )
        return first, second

    def set_topic(self, chat_id: int, thread_id: int, state: str) -> None:
        """Open, close or delete a forum topic ("open", "closed", "deleted")."""
        if state not in ("open", "closed", "deleted"):
            raise ValueError(f"unknown topic state {state!r}")
        self.chats[str(chat_id)].topics[thread_id] = state

    def add_user(
        self, user_id: int, *, first_name: str | None = None, username: str | None = None
    ) -> dict[str, Any]:
        """Register (or return) a user; unknown users get a generated first name."""
        user = self.users.get(user_id)
        if user is None:
            user = {"id": user_id, "is_bot": False, "first_name": first_name or f"User {user_id}"}
            if username:
                user["username"] = username
            self.users[user_id] = user
        return user

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue an Update dict for getUpdates, or for the webhook while one is set
        (``update_id`` assigned if missing)."""
        update = copy.deepcopy(update)
        if "update_id" not in update:
            update["update_id"] = self._last_update_id + 1
        self._last_update_id = max(self._last_update_id, int(update["update_id"]))
        self.updates.append(update)
        self._pending.append(update)
        self._wake_poll("update")
        if self._webhook is not None:
            self._webhook.wakeup.set()
        self._notify()
        return int(update["update_id"])

    def push_message(
        self,
        chat_id: int,
        text: str,
        *,
        from_user_id: int | None = None,
        message_thread_id: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> int:
        """Queue a user's text message in a chat; returns its message_id."""
        key = str(chat_id)
        if key not in self.chats:
            if chat_id <= 0:
                raise KeyError(f"chat {chat_id} was not added")
            self.add_chat(chat_id, "private")
        chat = self.chats[key]
        if from_user_id is None:
            if chat.type != "private":
                raise ValueError("from_user_id is required outside private chats")
            from_user_id = chat_id
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat),
            "from": self.add_user(from_user_id),
            "chat": chat.to_dict(),
            "date": int(time.time()),
            "text": text,
        }
        if entities := _bot_command_entities(text):
            message["entities"] = entities
        if message_thread_id is not None:
            message["message_thread_id"] = message_thread_id
            if chat.is_forum:
                message["is_topic_message"] = True
        if reply_to_message_id is not None:
            replied = self._find_any_message(key, reply_to_message_id)
            if replied is not None:
                message["reply_to_message"] = copy.deepcopy(replied)
        self._user_messages[(key, message["message_id"])] = message
        self.push_update({"message": message})
        return int(message["message_id"])

    def push_callback_query(
        self, chat_id: int, message_id: int, data: str, *, from_user_id: int
    ) -> str:
        """Queue a press of an inline button with callback ``data``; returns the query id."""
        key = str(chat_id)
        message = self._find_bot_message(key, message_id)
        if message is None:
            raise KeyError(f"no bot message {message_id} in chat {chat_id}")
        query_id = str(next(self._query_ids))
        self._callback_queries[query_id] = False
        self.push_update(
            {
                "callback_query": {
                    "id": query_id,
                    "from": self.add_user(from_user_id),
                    "message": copy.deepcopy(message),
                    "chat_instance": f"ci{chat_id}",
                    "data": data,
                }
            }
        )
        return query_id

    def delete_message(self, chat_id: int | str, message_id: int) -> None:
        """Someone else deleted this message: later edits get "message to edit not found"."""
        key = str(chat_id)
        self.messages[key] = [
            m for m in self.messages.get(key, []) if m["message_id"] != message_id
        ]
        self._user_messages.pop((key, message_id), None)
        self._notify()

    def fail_next(
        self,
        method: str,
        *,
        error_code: int,
        description: str | None = None,
        retry_after: float | None = None,
        migrate_to_chat_id: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with this Bot API error."""
        parameters: dict[str, Any] = {}
        if retry_after is not None:
            if retry_after <= 0:
                raise ValueError("retry_after must be > 0 (PTB ignores 0)")
            parameters["retry_after"] = _number(retry_after)
        if migrate_to_chat_id is not None:
            parameters["migrate_to_chat_id"] = migrate_to_chat_id
        if description is None:
            if error_code == 429:
                description = f"Too Many Requests: retry after {_number(retry_after or 1)}"
                parameters.setdefault("retry_after", _number(retry_after or 1))
            else:
                description = _DEFAULT_DESCRIPTIONS.get(error_code, f"Error {error_code}")
        self._failures.setdefault(method.lower(), []).append(
            _Failure(error_code, description, parameters or None, times)
        )

    def route_webhooks(self, public_base: str, backends: Sequence[str]) -> list[str]:
        """Play the TLS reverse proxy in front of the bot: webhook URLs under
        `public_base` ("https://bot.example" or "https://bot.example:8443", no path) are
        posted to the plain-HTTP `backends` ("http://127.0.0.1:PORT"), one after the other
        per POST, path and query kept. Returns the live list (also
        ``webhook_routes[base]``): change it, or call again, when a backend moves; an
        empty list refuses every connection. Refuses a base Telegram would refuse."""
        if not public_base.lower().startswith("https://"):
            raise ValueError(f"Telegram posts only to https:// URLs, not {public_base!r}")
        parsed = _parse_webhook_url(public_base)
        if parsed is None or parsed.target != "/" or parsed.userinfo:
            raise ValueError(f"{public_base!r} is not scheme://host[:port]")
        problem = _host_problem(parsed.host)
        if parsed.port not in _WEBHOOK_PORTS:
            problem = "Webhook can be set up only on ports 80, 88, 443 or 8443"
        if problem is not None:
            raise ValueError(f"setWebhook would refuse {public_base!r}: {problem}")
        for backend in backends:
            if urlsplit(backend).scheme not in ("http", "https") or not urlsplit(backend).netloc:
                raise ValueError(f"a backend is an http:// URL, not {backend!r}")
        routes = self.webhook_routes.setdefault(parsed.base, [])
        routes[:] = [backend.rstrip("/") for backend in backends]
        if self._webhook is not None:
            self._webhook.wakeup.set()
        return routes

    async def wait_for_webhook_post(
        self,
        predicate: Callable[[WebhookPost], bool] | None = None,
        timeout: float = 5,
        *,
        start: int = 0,
    ) -> WebhookPost:
        """The first ended POST to the webhook at index >= ``start`` (pass
        ``len(fake.webhook_posts)`` as a mark) matching ``predicate``, now or later."""

        def find() -> WebhookPost | None:
            for post in self.webhook_posts[start:]:
                if predicate is None or predicate(post):
                    return post
            return None

        return await self._wait(
            find, timeout, lambda: f"no matching webhook post: {self.webhook_posts[start:]}"
        )

    def calls_to(self, method: str) -> list[RecordedCall]:
        """The answered calls of one method, in order."""
        return [c for c in self.calls if c.method == method and c.status is not None]

    async def wait_for_call(
        self,
        method: str,
        predicate: Callable[[RecordedCall], bool] | None = None,
        timeout: float = 5,
        *,
        start: int = 0,
        answered: bool = True,
    ) -> RecordedCall:
        """The first call of ``method`` at index >= ``start`` matching ``predicate``.

        Only answered calls count unless ``answered=False`` (a long poll that is waiting).
        """

        def find() -> RecordedCall | None:
            for call in self.calls[start:]:
                if (
                    call.method == method
                    and (call.status is not None or not answered)
                    and (predicate is None or predicate(call))
                ):
                    return call
            return None

        def why() -> str:
            seen = [(c.method, c.status) for c in self.calls[start:]]
            return f"no matching {method} call; calls since {start}: {seen}"

        return await self._wait(find, timeout, why)

    async def wait_for_message(
        self,
        chat_id: int | str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 5,
    ) -> dict[str, Any]:
        """The first stored bot message in the chat matching ``predicate``, now or later."""
        key = str(chat_id)

        def find() -> dict[str, Any] | None:
            for message in self.messages.get(key, []):
                if predicate is None or predicate(message):
                    return message
            return None

        return await self._wait(
            find, timeout, lambda: f"no matching message in {key}: {self.messages.get(key)}"
        )

    # ---- internals: plumbing -----------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(
        self, find: Callable[[], _T | None], timeout: float, why: Callable[[], str]
    ) -> _T:
        try:
            async with asyncio.timeout(timeout):
                while (found := find()) is None:
                    await self._changed.wait()
                return found
        except TimeoutError:
            raise TimeoutError(f"after {timeout}s: {why()}") from None

    def _wake_poll(self, reason: str) -> None:
        if self._poll is not None and not self._poll.done():
            self._poll.set_result(reason)

    def _take_failure(self, method: str) -> _Failure | None:
        queue = self._failures.get(method.lower())
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        return failure

    async def _read_params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        params: dict[str, Any] = {k: _decode_form_value(k, v) for k, v in request.query.items()}
        files: dict[str, bytes] = {}
        if request.method != "POST" or not request.body_exists:
            return params, files
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise _bad("can't parse JSON encoded request") from None
            if not isinstance(body, dict):
                raise _bad("JSON object expected")
            params.update(body)
            if isinstance(params.get("chat_id"), str):
                params["chat_id"] = _decode_form_value("chat_id", params["chat_id"])
            return params, files
        form = await request.post()
        for name, value in form.items():
            if isinstance(value, web.FileField):
                files[name] = value.file.read()
            else:
                params[name] = _decode_form_value(name, str(value))
        return params, files

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        raw_method = request.match_info["method"]
        method, handler = self._methods.get(raw_method.lower(), (raw_method, None))
        call = RecordedCall(method=method, params={})
        self.calls.append(call)
        try:
            call.params, call.files = await self._read_params(request)
            self._notify()
            if token != self.token:
                malformed = re.fullmatch(r"\d+:[\w-]+", token) is None
                raise (
                    _ApiError(404, "Not Found") if malformed else _ApiError(401, "Unauthorized")
                )
            if handler is None:
                raise _ApiError(404, "Not Found")
            if (failure := self._take_failure(method)) is not None:
                raise _ApiError(failure.error_code, failure.description, failure.parameters)
            result = await handler(call.params, call.files)
            described = result if isinstance(result, _Described) else None
            if described is not None:
                result = described.result
            status, body = 200, {"ok": True, "result": copy.deepcopy(result)}
            if described is not None:
                body["description"] = described.description
        except _ApiError as exc:
            status, body = exc.code, exc.body()
        call.status, call.response = status, body
        self._notify()
        return web.json_response(body, status=status)

    async def _file(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
        )

    # ---- internals: webhook delivery ---------------------------------------------------

    async def _stop_webhook_delivery(self) -> None:
        """Cancel the delivery loop (and the POSTs it has out) and wait until it is gone."""
        task, self._webhook_task = self._webhook_task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error  # a bug in the loop: surface it rather than stop posting quietly

    async def _drop_webhook(self) -> None:
        """The webhook is gone (deleted or replaced): what it did not post stays pending."""
        await self._stop_webhook_delivery()
        self._webhook = None

    async def _deliver_webhook(self, hook: _Webhook) -> None:
        """Post pending updates to the webhook until cancelled, as WebhookActor does: one
        update at a time per queue (a chat's messages, a user's callback queries, ...,
        see _webhook_queue), in update_id order within it, queues side by side on up to
        max_connections connections, or one while nothing succeeded for 10 seconds."""
        timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
        # A fresh connection per POST: a backend restarted by a test leaves no stale
        # keep-alive connection for the next POST to fail on.
        connector = aiohttp.TCPConnector(force_close=True)
        in_flight: dict[Hashable, asyncio.Task[None]] = {}
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
        ) as session:
            try:
                while True:
                    hook.wakeup.clear()
                    for queue, task in list(in_flight.items()):
                        if task.done():
                            del in_flight[queue]
                            task.result()  # a bug in _post_update ends the loop loudly
                    next_at = self._start_posts(hook, session, in_flight)
                    delay = None if next_at is None else max(0.0, next_at - time.monotonic())
                    try:
                        async with asyncio.timeout(delay):
                            await hook.wakeup.wait()
                    except TimeoutError:
                        pass
            finally:
                for task in in_flight.values():
                    task.cancel()
                if in_flight:
                    await asyncio.wait(in_flight.values())

    def _start_posts(
        self,
        hook: _Webhook,
        session: aiohttp.ClientSession,
        in_flight: dict[Hashable, asyncio.Task[None]],
    ) -> float | None:
        """Start a POST for each queue whose first update is due, as connections allow;
        returns when the next resend is due (None if none waits)."""
        self._drop_unwanted()
        now = time.monotonic()
        active = now - hook.last_success <= _ACTIVE_WINDOW
        connections = hook.max_connections if active else 1
        next_at: float | None = None
        seen: set[Hashable] = set()
        for update in self._pending:
            queue = _webhook_queue(update)
            if queue in seen:
                continue  # a queue's later updates wait for its first
            seen.add(queue)
            if queue in in_flight:
                continue
            retry = hook.retries.get(int(update["update_id"]))
            if retry is not None and retry.wakeup_at > now:
                next_at = retry.wakeup_at if next_at is None else min(next_at, retry.wakeup_at)
                continue
            if len(in_flight) >= connections:
                break
            task = asyncio.create_task(
                self._post_update(hook, session, update), name="fake-telegram-webhook-post"
            )
            task.add_done_callback(lambda _task: hook.wakeup.set())
            in_flight[queue] = task
        return next_at

    def _webhook_backend(self, parsed: _WebhookUrl) -> str | None:
        """The backend the next POST to this URL goes to (round-robin per public base)."""
        backends = self.webhook_routes.get(parsed.base)
        if not backends:
            return None
        turn = self._route_turns.get(parsed.base, 0)
        self._route_turns[parsed.base] = turn + 1
        return backends[turn % len(backends)] + parsed.target

    async def _post_update(
        self, hook: _Webhook, session: aiohttp.ClientSession, update: dict[str, Any]
    ) -> None:
        """POST one update (WebhookActor::send_update) and judge the answer
        (WebhookActor::handle): only a 2xx delivers it; anything else is resent later."""
        update_id = int(update["update_id"])
        body = {"update_id": update_id} | {k: v for k, v in update.items() if k != "update_id"}
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        target = self._webhook_backend(hook.parsed)
        outcome: tuple[int | None, str | None, bool, int]
        if target is None:
            outcome = (None, "Connection refused", True, 0)  # nothing listens there
        else:
            outcome = await self._exchange(session, target, data, self._webhook_headers(hook))
        status, error, public, retry_after = outcome
        self.webhook_posts.append(WebhookPost(update_id, target or hook.url, status, error))
        if error is None:
            hook.last_success = time.monotonic()
            hook.retries.pop(update_id, None)
            self._pending = [u for u in self._pending if u is not update]
        else:
            # on_webhook_error; Telegram keeps the last error even after later successes
            # (webhook_success clears nothing; only a new or deleted webhook does).
            if public:
                hook.last_error_date = int(time.time())
                hook.last_error_message = error
            self._resend_later(hook, update_id, retry_after)
        self._notify()

    @staticmethod
    def _webhook_headers(hook: _Webhook) -> dict[str, str]:
        """The headers of WebhookActor::send_update (the fake adds no User-Agent either)."""
        headers = {"Host": hook.parsed.host_header}
        if hook.parsed.userinfo:
            credentials = base64.b64encode(hook.parsed.userinfo.encode()).decode()
            headers["Authorization"] = f"Basic {credentials}"
        if hook.secret_token:
            headers[SECRET_TOKEN_HEADER] = hook.secret_token
        headers["Content-Type"] = "application/json"
        headers["Accept-Encoding"] = "gzip, deflate"
        return headers

    @staticmethod
    async def _exchange(
        session: aiohttp.ClientSession, target: str, data: bytes, headers: dict[str, str]
    ) -> tuple[int | None, str | None, bool, int]:
        """One POST: (status, Telegram's error text or None, whether getWebhookInfo shows
        that error, the answer's Retry-After in seconds or 0)."""
        try:
            async with session.post(
                URL(target, encoded=target.isascii()),
                data=data,
                headers=headers,
                allow_redirects=False,  # a redirect is a wrong response like any non-2xx
            ) as response:
                await response.read()
                if 200 <= response.status <= 299:
                    return response.status, None, True, 0
                # "Wrong response from the webhook: " << response->code_ << " " << reason_
                error = f"Wrong response from the webhook: {response.status} {response.reason}"
                header = response.headers.get("Retry-After", "")  # HttpQuery::get_retry_after
                return response.status, error, True, int(header) if header.isdigit() else 0
        except aiohttp.ConnectionTimeoutError:
            return None, "Connection timed out", True, 0  # strerror(ETIMEDOUT)
        except TimeoutError:
            return None, "Read timeout expired", True, 0  # HttpConnectionBase::timeout_expired
        except aiohttp.ServerDisconnectedError:
            # A hangup (handle(nullptr)): the update is resent, getWebhookInfo shows nothing.
            return None, "Webhook connection closed", False, 0
        except aiohttp.ClientOSError as exc:
            # The socket's error as strerror words it (td's Status::public_message for an
            # OS error), e.g. "Connection refused"; asyncio's own message is not that.
            return None, os.strerror(exc.errno) if exc.errno else str(exc), True, 0
        except aiohttp.ClientError as exc:
            return None, f"Wrong response from the webhook: {exc}", True, 0

    def _resend_later(self, hook: _Webhook, update_id: int, retry_after: int) -> None:
        """WebhookActor::on_update_error: after the first failure the update is resent at
        once (or after the answer's Retry-After), then after a delay that doubles each time
        (Telegram: 2 s up to 60-120 s; here webhook_retry_delay up to webhook_retry_cap)."""
        retry = hook.retries.setdefault(update_id, _Retry())
        wait = float(min(max(retry_after, 0), _MAX_RETRY_AFTER))
        if retry_after == 0 and retry.fails > 0:
            retry.delay = (
                self.webhook_retry_delay
                if retry.delay is None
                else min(self.webhook_retry_cap, retry.delay * 2)
            )
            wait = retry.delay
        retry.fails += 1
        retry.wakeup_at = time.monotonic() + wait

    # ---- internals: lookups and validation ---------------------------------------------

    def _chat(self, params: dict[str, Any], name: str = "chat_id") -> FakeChat:
        chat_id = params.get(name)
        if chat_id is None or chat_id == "":
            raise _bad(f"{name} is empty")
        if isinstance(chat_id, str) and chat_id.startswith("@"):
            wanted = chat_id[1:].lower()
            for candidate in self.chats.values():
                if candidate.username and candidate.username.lower() == wanted:
                    return candidate
            raise _bad("chat not found")
        chat = self.chats.get(str(chat_id))
        if chat is None:
            raise _bad("chat not found")
        return chat

    def _check_access(self, chat: FakeChat, access: str) -> None:
        """The Bot API server's check_chat_access (telegram-bot-api/Client.cpp) for one of
        its AccessRights: "read" (getChat, getChatMember of the bot itself), "members"
        (getChatAdministrators, getChatMember of anyone else), "edit" (editMessage*) or
        "write" (send*, deleteMessage)."""
        status = chat.bot_status
        write = access == "write"
        edit = access in ("edit", "write")
        if chat.type == "private":
            if edit and status == "kicked":
                raise _ApiError(403, "Forbidden: bot was blocked by the user")
            if edit and status == "left":
                raise _ApiError(403, "Forbidden: bot can't initiate conversation with a user")
            return
        if chat.type == "group":
            if access == "members":  # "member list is inaccessible in deactivated groups"
                write = edit = True
            if chat.migrated_to is not None:
                # Client.cpp fails only write (and member list) requests of a deactivated
                # group this way; an edit there is refused too, here with the same answer.
                if write or edit:
                    raise _ApiError(400, MIGRATED, {"migrate_to_chat_id": chat.migrated_to})
                return
            if edit and status == "kicked":
                raise _ApiError(403, "Forbidden: bot was kicked from the group chat")
            if edit and status == "left":
                raise _ApiError(403, "Forbidden: bot is not a member of the group chat")
            return
        kind = chat.type  # supergroup or channel
        if status == "kicked":
            raise _ApiError(403, f"Forbidden: bot was kicked from the {kind} chat")
        # A public chat (one with a username) can be read by anyone.
        if status == "left" and (edit or not chat.username):
            raise _ApiError(403, f"Forbidden: bot is not a member of the {kind} chat")
        if write and kind == "channel" and not self._bot_right(chat, "can_post_messages"):
            raise _bad("need administrator rights in the channel chat")

    def _bot_right(self, chat: FakeChat, right: str) -> bool:
        """Whether the bot has `right` in `chat`: an administrator's rights, a restricted
        bot's own permissions, or the chat's defaults for a plain member."""
        if chat.type == "private" or chat.owner_id == self.bot_id:
            return True
        if chat.bot_status == "administrator":
            return chat.bot_rights.get(right, True)
        if chat.type == "channel":
            return False
        if chat.bot_status == "restricted":
            return chat.bot_rights.get(right, chat.member_permissions().get(right, True))
        return chat.member_permissions().get(right, True)

    def _check_send(self, chat: FakeChat, right: str) -> None:
        """A send the bot's rights in a group forbid, refused as Telegram refuses it."""
        if chat.type in ("group", "supergroup") and not self._bot_right(chat, right):
            raise _ApiError(400, NO_PHOTO_RIGHTS if right == "can_send_photos" else NO_TEXT_RIGHTS)

    @staticmethod
    def _int(params: dict[str, Any], name: str) -> int | None:
        value = params.get(name)
        if value is None or value == "":
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise _bad(f"invalid {name} specified") from None

    def _next_message_id(self, chat: FakeChat) -> int:
        message_id = chat.next_message_id
        chat.next_message_id += 1
        return message_id

    def _find_bot_message(self, key: str, message_id: int) -> dict[str, Any] | None:
        for message in self.messages.get(key, []):
            if message["message_id"] == message_id:
                return message
        return None

    def _find_any_message(self, key: str, message_id: int) -> dict[str, Any] | None:
        found = self._find_bot_message(key, message_id)
        return found if found is not None else self._user_messages.get((key, message_id))

    def _formatted(
        self, params: dict[str, Any], text_name: str, entities_name: str
    ) -> tuple[str, list[dict[str, Any]]]:
        text = params.get(text_name)
        if text is None:
            return "", []
        text = str(text)
        parse_mode = str(params.get("parse_mode") or "")
        if parse_mode.lower() == "html":
            try:
                text, entities = parse_html(text, strict_ampersand=self.strict_html)
            except HtmlParseError as exc:
                raise _bad(f"can't parse entities: {exc}") from None
        elif parse_mode.lower() in {"", "markdown", "markdownv2"}:
            entities = params.get(entities_name) or []
            if not isinstance(entities, list):
                raise _bad(f"can't parse {entities_name} JSON object")
        else:
            raise _bad("unsupported parse_mode")
        text, entities = _trim(text, entities)
        return text, merge_found_entities(entities, find_entities(text))

    def _reply_markup(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """The inline keyboard to store on the message (other keyboards are not echoed)."""
        markup = params.get("reply_markup")
        if markup is None or markup == "":
            return None
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" not in markup:
            return None
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad(
                'can\'t parse inline keyboard button: Field "inline_keyboard" must be '
                "of type Array"
            )
        for row in rows:
            for button in row:
                self._check_button(button)
        return {"inline_keyboard": [[dict(button) for button in row] for row in rows]}

    @staticmethod
    def _check_button(button: Any) -> None:
        if not isinstance(button, dict):
            raise _bad(
                "can't parse inline keyboard button: InlineKeyboardButton must be an Object"
            )
        if not isinstance(button.get("text"), str):
            raise _bad('can\'t parse inline keyboard button: Field "text" must be of type String')
        actions = set(button) - {"text", "style", "icon_custom_emoji_id"}
        if not actions:
            raise _bad(
                "can't parse inline keyboard button: Text buttons are unallowed in the "
                "inline keyboard"
            )
        if "url" in button:
            url = str(button["url"])
            parts = urlsplit(url)
            web_url = parts.scheme in {"http", "https"} and bool(parts.hostname)
            if not (web_url or parts.scheme == "tg") or any(ch.isspace() for ch in url):
                raise _bad("BUTTON_URL_INVALID")
        if "callback_data" in button:
            data = str(button["callback_data"]).encode("utf-8")
            if not 1 <= len(data) <= MAX_CALLBACK_DATA_BYTES:
                raise _bad("BUTTON_DATA_INVALID")

    def _new_message(self, chat: FakeChat, params: dict[str, Any]) -> dict[str, Any]:
        """A Message skeleton for a send: ids, sender, thread and reply checked."""
        thread_id = self._int(params, "message_thread_id")
        if thread_id is not None:
            # As Telegram: only an existing topic of a forum takes messages; General (1)
            # takes no thread id; a closed topic only from admins who manage topics.
            state = chat.topics.get(thread_id) if chat.is_forum else None
            if state in (None, "deleted"):
                raise _bad("message thread not found")
            if state == "closed" and not self._manages_topics(chat):
                raise _bad("TOPIC_CLOSED")
        reply = params.get("reply_parameters")
        reply_to = None
        if isinstance(reply, dict) or params.get("reply_to_message_id") is not None:
            reply = (
                reply
                if isinstance(reply, dict)
                else {
                    "message_id": params.get("reply_to_message_id"),
                    "allow_sending_without_reply": params.get("allow_sending_without_reply"),
                }
            )
            reply_chat = self._chat(reply) if reply.get("chat_id") is not None else chat
            reply_id = self._int(reply, "message_id")
            if reply_id is None:
                raise _bad("message to be replied not found")
            reply_to = self._find_any_message(str(reply_chat.id), reply_id)
            if reply_to is None and not reply.get("allow_sending_without_reply"):
                raise _bad("message to be replied not found")
        message: dict[str, Any] = {"message_id": self._next_message_id(chat)}
        if chat.type == "channel":
            message["sender_chat"] = chat.to_dict()
        else:
            message["from"] = dict(self.bot_user)
        message["chat"] = chat.to_dict()
        message["date"] = int(time.time())
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if reply_to is not None:
            reply_copy = copy.deepcopy(reply_to)
            reply_copy.pop("reply_to_message", None)
            message["reply_to_message"] = reply_copy
        if params.get("protect_content") is True:
            message["has_protected_content"] = True
        return message

    def _store(self, chat: FakeChat, message: dict[str, Any]) -> dict[str, Any]:
        self.messages.setdefault(str(chat.id), []).append(message)
        return message

    def _photo_sizes(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> list[dict[str, Any]]:
        photo = params.get("photo")
        if isinstance(photo, str) and photo.startswith("attach://"):
            upload = files.get(photo[len("attach://") :])
        else:
            upload = files.get("photo")
        if upload is not None:
            source = hashlib.sha256(upload).hexdigest()
            size = len(upload)
        elif isinstance(photo, str) and photo:
            if photo in self._file_ids:
                return self._file_ids[photo]
            fetched = photo.partition("?")[0]
            if not re.match(r"https?://", photo) or fetched in self.unreachable_photos:
                raise _bad("wrong file identifier/HTTP URL specified")
            source = hashlib.sha256(photo.encode()).hexdigest()
            size = 48_000
        else:
            raise _bad("there is no photo in the request")
        sizes: list[dict[str, Any]] = [
            {
                "file_id": f"AgAC-fake-{source[:16]}-{w}",
                "file_unique_id": f"AQAD{source[:8]}{w}",
                "width": w,
                "height": h,
                "file_size": max(1, size * w // 1280),
            }
            for w, h in ((90, 51), (320, 180), (800, 450), (1280, 720))
        ]
        for size_info in sizes:
            self._file_ids[size_info["file_id"]] = sizes
        return sizes

    def _edit_target(self, params: dict[str, Any]) -> tuple[FakeChat, dict[str, Any]]:
        if params.get("inline_message_id"):
            raise _bad("MESSAGE_ID_INVALID")
        chat = self._chat(params)
        self._check_access(chat, "edit")
        message_id = self._int(params, "message_id")
        if message_id is None:
            raise _bad("message identifier is not specified")
        message = self._find_bot_message(str(chat.id), message_id)
        if message is None:
            if (str(chat.id), message_id) in self._user_messages:
                raise _bad("message can't be edited")
            raise _bad("message to edit not found")
        return chat, message

    @staticmethod
    def _apply(message: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        """Set or drop (None/empty) fields, or raise "not modified" if nothing changes."""
        if all(message.get(k) == (v or None) for k, v in changes.items()):
            raise _ApiError(400, NOT_MODIFIED)
        for key, value in changes.items():
            if value:
                message[key] = value
            else:
                message.pop(key, None)
        message["edit_date"] = int(time.time())
        return message

    # ---- internals: methods ------------------------------------------------------------

    async def _true(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        return True

    async def _get_me(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _set_webhook(self, params: dict[str, Any], files: dict[str, bytes]) -> _Described:
        """Client.cpp's process_set_webhook_query, do_set_webhook and finish_set_webhook,
        then WebhookActor::start_up's checks, in their order."""
        url = str(params.get("url") or "")
        if not url:
            return await self._remove_webhook(params)
        now = time.monotonic()
        if now < self._next_set_webhook_at:
            # "if (now < next_allowed_set_webhook_time_) { query->set_retry_after_error(1);"
            # and next_allowed_set_webhook_time_ = now + 1 whatever comes of the request.
            wait = _number(self.set_webhook_interval)
            raise _ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        self._next_set_webhook_at = now + self.set_webhook_interval
        secret_token = str(params.get("secret_token") or "")
        # get_webhook_max_connections: get_integer_arg(query, "max_connections", 40, 1, 100),
        # which clamps rather than refuses.
        max_connections = min(max(_td_integer(params.get("max_connections"), 40), 1), 100)
        ip = str(params.get("ip_address") or "")
        drop = _to_bool(params.get("drop_pending_updates"))
        certificate = self._certificate(params, files)
        hook = self._webhook
        if (
            hook is not None
            and hook.same_as(url, secret_token, max_connections, ip)
            and certificate is None
            and not drop
        ):
            self._update_allowed(params)
            return _Described(True, "Webhook is already set")
        self._wake_poll("set_webhook")
        # The old webhook is closed before the new one is checked: a refused setWebhook
        # leaves none (on_webhook_closed clears webhook_url_, then fails the query).
        await self._drop_webhook()
        if drop:
            self._pending.clear()  # do_set_webhook: clear_tqueue(), before any check
        parsed = _parse_webhook_url(url)
        if parsed is None:
            raise _bad("invalid webhook URL specified")
        if len(secret_token.encode()) > 256:
            raise _bad("secret token is too long")
        if not re.fullmatch(r"[A-Za-z0-9_-]*", secret_token):
            # td::is_base64url_characters
            raise _bad("secret token contains unallowed characters")
        if certificate is not None:
            # Not Telegram's text: the fake speaks no TLS, so it cannot honour a
            # self-signed certificate (nor check it, as the Bot API server does).
            raise _bad("certificate upload is not modelled by the fake Bot API")
        self._update_allowed(params)  # finish_set_webhook, before WebhookActor checks
        if (problem := self._webhook_problem(parsed, ip)) is not None:
            raise _bad(f"bad webhook: {problem}")
        hook = _Webhook(url, parsed, secret_token, max_connections, ip)
        self._webhook = hook
        self._webhook_task = asyncio.create_task(
            self._deliver_webhook(hook), name="fake-telegram-webhook"
        )
        return _Described(True, "Webhook was set")

    @staticmethod
    def _certificate(params: dict[str, Any], files: dict[str, bytes]) -> bytes | None:
        """The uploaded certificate (Client::get_webhook_certificate), if any."""
        if "certificate" in files:
            return files["certificate"]
        name = str(params.get("certificate") or "")
        if name.startswith("attach://"):
            return files.get(name.removeprefix("attach://"))
        return None

    @staticmethod
    def _webhook_problem(parsed: _WebhookUrl, ip: str) -> str | None:
        """WebhookActor::start_up and its address checks: why the webhook is "bad"."""
        if not parsed.https:
            return "An HTTPS URL must be provided for webhook"
        if parsed.port not in _WEBHOOK_PORTS:
            return "Webhook can be set up only on ports 80, 88, 443 or 8443"
        if ip:
            return _ip_address_problem(ip)  # fix_ip_address: the host is not resolved
        return _host_problem(parsed.host)

    async def _delete_webhook(self, params: dict[str, Any], files: dict[str, bytes]) -> _Described:
        return await self._remove_webhook(params)

    async def _remove_webhook(self, params: dict[str, Any]) -> _Described:
        """deleteWebhook, or setWebhook with an empty url (the same path in Client.cpp).
        Updates not yet posted stay pending for getUpdates."""
        drop = _to_bool(params.get("drop_pending_updates"))
        if self._webhook is None and not drop:
            self._update_allowed(params)
            return _Described(True, "Webhook is already deleted")
        had_one = self._webhook is not None
        await self._drop_webhook()
        if drop:
            self._pending.clear()
        return _Described(True, "Webhook was deleted" if had_one else "Webhook is already deleted")

    async def _get_webhook_info(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        """JsonWebhookInfo, field by field in its order."""
        self._drop_unwanted()
        hook = self._webhook
        info: dict[str, Any] = {
            "url": hook.url if hook is not None else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }
        if hook is not None:
            if hook.last_error_date:
                info["last_error_date"] = hook.last_error_date
                info["last_error_message"] = hook.last_error_message
            info["max_connections"] = hook.max_connections
            # Telegram shows the address it resolved the host to; the fake resolves none.
            info["ip_address"] = hook.ip_address or "<unknown>"
        asked = {str(kind).lower() for kind in self._allowed_updates}
        allowed = [kind for kind in _UPDATE_TYPES if kind in asked]
        if allowed and set(allowed) != set(_UPDATE_TYPES) - _OPT_IN_UPDATES:
            info["allowed_updates"] = allowed
        return info

    def _update_allowed(self, params: dict[str, Any]) -> None:
        """allowed_updates, when given as a list, replaces the stored one (an empty list
        is the default set); getUpdates and setWebhook share it."""
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = [str(kind) for kind in allowed]

    def _drop_unwanted(self) -> None:
        """Telegram never stores updates the bot did not ask for."""
        allowed = set(self._allowed_updates)

        def wanted(update: dict[str, Any]) -> bool:
            kinds = set(update) - {"update_id"}
            return bool(kinds & allowed) if allowed else bool(kinds - _OPT_IN_UPDATES)

        self._pending = [u for u in self._pending if wanted(u)]

    def _deliverable(self, offset: int | None, limit: int) -> list[dict[str, Any]]:
        if offset is not None:
            if offset < 0:
                self._pending = self._pending[offset:]
            else:
                self._pending = [u for u in self._pending if u["update_id"] >= offset]
        self._drop_unwanted()
        return self._pending[:limit]

    async def _get_updates(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> list[dict[str, Any]]:
        if self._webhook is not None:
            raise _ApiError(409, WEBHOOK_ACTIVE)
        offset = self._int(params, "offset")
        limit = min(max(self._int(params, "limit") or 100, 1), 100)
        timeout = float(params.get("timeout") or 0)
        self._update_allowed(params)
        self._wake_poll("conflict")
        poll: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._poll = poll
        try:
            updates = self._deliverable(offset, limit)
            if updates or timeout <= 0 or self._closing:
                return updates
            try:
                async with asyncio.timeout(timeout):
                    reason = await poll
            except TimeoutError:
                reason = "timeout"
            if reason == "conflict":
                raise _ApiError(409, CONFLICT)
            if reason == "set_webhook":
                raise _ApiError(409, TERMINATED_BY_SET_WEBHOOK)
            return self._deliverable(None, limit)
        finally:
            if self._poll is poll:
                self._poll = None

    def _count_send(self, chat: FakeChat) -> None:
        """Count a send against ``send_limit`` and a group's ``group_send_limit``, or
        refuse it with Telegram's 429 (counting nothing)."""
        if self.group_send_limit is not None and chat.type != "private":
            limit, seconds = self.group_send_limit
            now = time.monotonic()
            sends = self._group_sends.setdefault(chat.id, collections.deque())
            while sends and sends[0] <= now - seconds:
                sends.popleft()
            if len(sends) >= limit:
                wait = math.ceil((sends[0] + seconds - now) * 100) / 100 or 0.01
                raise _ApiError(
                    429, f"Too Many Requests: retry after {_number(wait)}", {"retry_after": wait}
                )
            self._count_overall_send()
            sends.append(now)
            return
        self._count_overall_send()

    def _count_overall_send(self) -> None:
        if self.send_limit is None:
            return
        limit, seconds = self.send_limit
        now = time.monotonic()
        opened, used = self._send_window
        if now >= opened + seconds:
            opened, used = now, 0
        if used >= limit:
            wait = math.ceil((opened + seconds - now) * 100) / 100 or 0.01
            raise _ApiError(
                429, f"Too Many Requests: retry after {_number(wait)}", {"retry_after": wait}
            )
        self._send_window = (opened, used + 1)

    async def _send_message(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        chat = self._chat(params)
        self._check_access(chat, "write")
        self._check_send(chat, "can_send_messages")
        self._count_send(chat)
        text, entities = self._formatted(params, "text", "entities")
        if not text:
            raise _bad("message text is empty")
        if utf16_len(text) > MAX_TEXT_LENGTH:
            raise _bad("message is too long")
        markup = self._reply_markup(params)
        message = self._new_message(chat, params)
        message["text"] = text
        if entities:
            message["entities"] = entities
        if isinstance(params.get("link_preview_options"), dict):
            message["link_preview_options"] = params["link_preview_options"]
        if markup:
            message["reply_markup"] = markup
        return self._store(chat, message)

    async def _send_photo(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        chat = self._chat(params)
        self._check_access(chat, "write")
        self._check_send(chat, "can_send_photos")
        self._count_send(chat)
        caption, entities = self._formatted(params, "caption", "caption_entities")
        if utf16_len(caption) > MAX_CAPTION_LENGTH:
            raise _bad("message caption is too long")
        markup = self._reply_markup(params)
        sizes = self._photo_sizes(params, files)
        message = self._new_message(chat, params)
        message["photo"] = sizes
        if caption:
            message["caption"] = caption
        if entities:
            message["caption_entities"] = entities
        if params.get("show_caption_above_media") is True:
            message["show_caption_above_media"] = True
        if params.get("has_spoiler") is True:
            message["has_media_spoiler"] = True
        if markup:
            message["reply_markup"] = markup
        return self._store(chat, message)

    async def _edit_message_text(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        _chat, message = self._edit_target(params)
        if "text" not in message:
            raise _bad("there is no text in the message to edit")
        text, entities = self._formatted(params, "text", "entities")
        if not text:
            raise _bad("message text is empty")
        if utf16_len(text) > MAX_TEXT_LENGTH:
            raise _bad("message is too long")
        markup = self._reply_markup(params)
        changes = {"text": text, "entities": entities, "reply_markup": markup}
        return self._apply(message, changes)

    async def _edit_message_caption(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        _chat, message = self._edit_target(params)
        if "photo" not in message:
            raise _bad("there is no caption in the message to edit")
        caption, entities = self._formatted(params, "caption", "caption_entities")
        if utf16_len(caption) > MAX_CAPTION_LENGTH:
            raise _bad("message caption is too long")
        markup = self._reply_markup(params)
        changes = {"caption": caption, "caption_entities": entities, "reply_markup": markup}
        return self._apply(message, changes)

    async def _edit_message_reply_markup(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        _chat, message = self._edit_target(params)
        return self._apply(message, {"reply_markup": self._reply_markup(params)})

    async def _delete_message(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        chat = self._chat(params)
        self._check_access(chat, "write")
        message_id = self._int(params, "message_id")
        if message_id is None:
            raise _bad("message identifier is not specified")
        key = str(chat.id)
        message = self._find_any_message(key, message_id)
        if message is None:
            raise _bad("message to delete not found")
        if chat.type == "private" or chat.bot_status != "administrator":
            # In a private chat the bot may delete the user's messages too.
            theirs = chat.type != "private" and self._find_bot_message(key, message_id) is None
            too_old = time.time() - message["date"] >= DELETE_WINDOW_SECONDS
            if theirs or too_old:
                raise _bad("message can't be deleted")
        self.delete_message(key, message_id)
        return True

    @staticmethod
    def _commands_key(params: dict[str, Any]) -> tuple[str, str]:
        scope = params.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")

    async def _set_my_commands(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad('field "commands" must be of type Array')
        for command in commands:
            if not isinstance(command, dict):
                raise _bad("BOT_COMMAND_INVALID")
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[self._commands_key(params)] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _get_my_commands(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> list[dict[str, Any]]:
        return self.commands.get(self._commands_key(params), [])

    async def _delete_my_commands(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        self.commands.pop(self._commands_key(params), None)
        return True

    async def _get_chat(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        chat = self._chat(params)
        self._check_access(chat, "read")
        info = {
            **chat.to_dict(),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }
        if chat.type in ("group", "supergroup"):
            info["permissions"] = _permissions_json(chat.member_permissions())
        return info

    def _member(self, chat: FakeChat, user_id: int) -> dict[str, Any]:
        user = dict(self.bot_user) if user_id == self.bot_id else self.add_user(user_id)
        if user_id == chat.owner_id:
            return {"status": "creator", "user": user, "is_anonymous": False}
        if user_id == self.bot_id and chat.bot_status != "administrator":
            if chat.bot_status == "kicked":
                return {"status": "kicked", "user": user, "until_date": 0}
            if chat.bot_status == "restricted":
                # ChatMemberRestricted: is_member, until_date and every ChatPermissions field.
                rights = _permissions_json({r: self._bot_right(chat, r) for r in PERMISSIONS})
                return {
                    "status": "restricted",
                    "user": user,
                    "is_member": True,
                    "until_date": 0,
                    **rights,
                }
            return {"status": chat.bot_status, "user": user}
        if user_id in chat.admins or user_id == self.bot_id:
            rights = {
                "can_be_edited": False,
                "is_anonymous": False,
                "can_manage_chat": True,
                "can_delete_messages": True,
                "can_manage_video_chats": True,
                "can_restrict_members": True,
                "can_promote_members": False,
                "can_change_info": True,
                "can_invite_users": True,
                "can_post_stories": False,
                "can_edit_stories": False,
                "can_delete_stories": False,
                "can_pin_messages": True,
            }
            if chat.type == "channel":
                rights |= {"can_post_messages": True, "can_edit_messages": True}
            if chat.is_forum:
                rights["can_manage_topics"] = True
            if user_id == self.bot_id:
                rights |= {k: v for k, v in chat.bot_rights.items() if k in rights}
            return {"status": "administrator", "user": user, **rights}
        return {"status": "member", "user": user}

    async def _get_chat_member(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> dict[str, Any]:
        chat = self._chat(params)
        user_id = self._int(params, "user_id")
        if user_id is None:
            raise _bad("user_id is empty")
        self._check_access(chat, "read" if user_id == self.bot_id else "members")
        if chat.type == "private" and user_id not in (chat.id, self.bot_id):
            raise _bad("user not found")
        if chat.type == "private":
            user = dict(self.bot_user) if user_id == self.bot_id else self.add_user(user_id)
            return {"status": "member", "user": user}
        return self._member(chat, user_id)

    async def _get_chat_administrators(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> list[dict[str, Any]]:
        chat = self._chat(params)
        self._check_access(chat, "members")
        if chat.type == "private":
            raise _bad("there are no administrators in the private chat")
        ids = [chat.owner_id] if chat.owner_id is not None else []
        ids += sorted(chat.admins - set(ids))
        if chat.bot_status == "administrator" and self.bot_id not in ids:
            ids.append(self.bot_id)
        return [self._member(chat, user_id) for user_id in ids]

    async def _answer_callback_query(
        self, params: dict[str, Any], files: dict[str, bytes]
    ) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        if self._callback_queries.get(query_id, True):
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        self._callback_queries[query_id] = True
        return True
