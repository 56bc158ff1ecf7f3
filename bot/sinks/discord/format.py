"""Discord's message shape and limits: an embed card built from the template's blocks.

Every `{{ value }}` in a Discord template is escaped as literal markdown that mentions
nobody; `author` and `footer` are shown without markdown, so they only get the invisible
mention breaks. Nothing here imports discord.py: `check` and `render` stay light.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from jinja2 import Environment
from markupsafe import Markup

from bot import i18n, markup
from bot.errors import TemplateProblem
from bot.events import LIVE_END, LIVE_START, Event
from bot.i18n import N_
from bot.render import Cutter, Rendered, RenderedReply, SafeUrl, as_datetime, colour, flag

#: Embed colour per event kind (templates may override with the `colour` block).
KIND_COLOURS: Final[Mapping[str, int]] = {
    "live_start": 0xE5312B,  # live red
    "title_change": 0x5865F2,  # Discord blurple
    "category_change": 0x9B59B6,  # purple
    "live_end": 0x4F545C,  # muted grey: it is over
    "error": 0xF0A020,  # amber
}
DEFAULT_COLOUR: Final = 0x95A5A6  # recorded kinds rendered by default.j2

#: The embed field the category goes in, named in the card's language.
CATEGORY_FIELD: Final = N_("Category")
#: "1-100 character channel name" (channel.mdx, Start Thread from Message).
THREAD_NAME_MAX: Final = 100
_TIME_STYLES: Final = frozenset("tTdDfFR")


@dataclass(frozen=True, slots=True)
class DiscordMessage:
    """One Discord message in API shape: content, one embed (or {}), allowed_mentions.

    `text` is the same card as content alone, for a channel where the bot lacks Embed
    Links (Discord would drop the embed and post the bare content line).
    """

    content: str
    embed: dict[str, Any]
    allowed_mentions: dict[str, Any]
    text: str = ""
    #: A link button under the card, (label, url): an ended card's replay.
    button: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class DiscordReply:
    """A command's answer: markdown content and/or one embed (API shape, or {})."""

    content: str
    embed: dict[str, Any]


def escape_text(text: str) -> str:
    """Text from a stream or a user as literal Discord markdown that mentions nobody.

    The project's escaper (the one the templates use): besides what
    `discord.utils.escape_markdown` + `escape_mentions` cover, it also escapes headings,
    quotes and lists at line starts and breaks every `<@&id>`, `<#id>` and `</cmd:id>`.
    """
    return markup.escape_discord(markup.strip_controls(text))


def thread_name(event: Event) -> str:
    """A session thread's (or forum post's) name: the streamer and the stream's title,
    1-100 characters. A channel name mentions nobody, but controls and newlines go."""
    name = " ".join(markup.strip_controls(event.name).split()) or "stream"
    title = event.live.title if event.live is not None else None
    title = " ".join(markup.strip_controls(title).split()) if title else ""
    whole = f"{name}: {title}" if title else name
    return whole if len(whole) <= THREAD_NAME_MAX else whole[: THREAD_NAME_MAX - 1] + "…"


def discord_time(value: object, style: str = "R") -> Markup:
    """`discord_time(dt, style="R")`: a Discord timestamp `<t:UNIX:R>`, shown in each
    reader's own time zone and language; "" for None."""
    moment = as_datetime(value)
    if moment is None:
        return Markup("")
    if style not in _TIME_STYLES:
        raise ValueError(f"discord_time style must be one of t T d D f F R, not {style!r}")
    return Markup(f"<t:{int(moment.timestamp())}:{style}>")


def codeblock_filter(value: object) -> Markup:
    """`codeblock`: the value in a ``` block, which nothing in it can close."""
    text = "" if value is None else markup.strip_controls(str(value))
    return Markup(markup.discord_code_block(markup.neutralise_mentions(text)))


def role_pings(roles: Iterable[int | str], *, limit: int) -> list[int]:
    """The roles to ping: positive ids, each once, at most `limit` (Discord's cap)."""
    out: list[int] = []
    for role in roles:
        role_id = int(role)
        if role_id > 0 and role_id not in out:
            out.append(role_id)
    return out[:limit]


class DiscordFormat:
    """Discord's templates, escaping and limits (Discord's documented limits, in UTF-16)."""

    name = "discord"
    autoescape = False
    content_max = 2000
    title_max = 256
    description_max = 4096
    field_name_max = 256
    field_value_max = 1024
    footer_max = 2048
    author_max = 256
    #: A button's label: at most 80 characters (Discord's component limits).
    button_label_max = 80
    embed_total_max = 6000
    #: Discord refuses more than 100 ids in allowed_mentions.roles.
    max_role_mentions = 100
    blocks = ("content", "title", "description", "category", "image", "colour")
    plain_blocks = ("author", "footer", "button")
    #: What `check` renders every kind with: a role ping, so the content budget is tried.
    sample_options: Mapping[str, Any] = {"mention_roles": (1,)}

    #: Blocks of a command reply (status.j2, mutes.j2, help.j2, ...): content, or an
    #: embed with up to `reply_fields` fields (`fieldN_name`, `fieldN`).
    reply_fields = 5
    reply_blocks = (
        "text",
        "title",
        "description",
        "colour",
        "footer",
        *(f"field{n}{part}" for n in range(1, reply_fields + 1) for part in ("_name", "")),
    )
    #: Where /status stops listing streams ("...and 3 more"), within `description_max`.
    status_description_budget = 3900

    def finalize(self, value: object, *, plain: bool) -> object:
        """Every `{{ }}`: literal markdown that mentions nobody (`plain`: no backslashes)."""
        if value is None:
            return ""
        if isinstance(value, SafeUrl):
            return str(value)
        if isinstance(value, Markup):
            # Markdown already (discord_time, |codeblock, |e); what it holds may still be
            # stream text, and neither a bidi control nor @everyone is markup anyone needs.
            return markup.neutralise_everyone(markup.strip_controls(str(value)))
        text = markup.strip_controls(str(value))
        if plain:
            # Not markdown, so no backslashes; the invisible mention breaks cost nothing.
            return markup.neutralise_mentions(text)
        return markup.escape_discord(text)

    def install(self, env: Environment) -> None:
        """Discord's own template helpers."""
        env.globals["discord_time"] = discord_time
        env.filters["codeblock"] = codeblock_filter

    def build(
        self,
        rendered: Rendered,
        *,
        mention_roles: Sequence[int] = (),
        mention_everyone: bool = False,
    ) -> DiscordMessage:
        """The message for the rendered blocks; `mention_roles` (and `@everyone`, when a
        route asks for it) are pinged on live_start, and nothing else ever is: stream text
        is escaped, and allowed_mentions names exactly these."""
        blocks, ctx, kind = rendered.blocks, rendered.context, rendered.context.event.kind
        pinging = kind == LIVE_START
        roles = role_pings(mention_roles, limit=self.max_role_mentions) if pinging else []
        everyone = pinging and mention_everyone
        hue = colour(blocks["colour"], KIND_COLOURS.get(kind, DEFAULT_COLOUR), rendered.name)
        show_image = flag(blocks["image"], default=True, block="image", name=rendered.name)

        md, plain = markup.truncate_discord, markup.truncate_plain
        cut = Cutter(self.name, kind)
        prefix = " ".join(
            [*(["@everyone"] if everyone else []), *(f"<@&{role}>" for role in roles)]
        )
        room = self.content_max - (len(prefix) + 1 if prefix else 0)
        content = cut(md, blocks["content"], room, "content")
        content = f"{prefix} {content}" if prefix and content else prefix or content
        title = cut(md, blocks["title"], self.title_max, "embed.title")
        description = cut(md, blocks["description"], self.description_max, "embed.description")
        category = cut(md, blocks["category"], self.field_value_max, "embed Category field")
        author = cut(plain, blocks["author"], self.author_max, "embed.author.name")
        footer = cut(plain, blocks["footer"], self.footer_max, "embed.footer.text")
        field = i18n.translations(ctx.locale).gettext(CATEGORY_FIELD)
        others = sum(
            markup.utf16_len(part)
            for part in (title, author, footer, category, field if category else "")
        )
        # The others come to at most 256 + 256 + 2048 + 1024 + 8 units, so trimming the
        # description alone always brings the embed within its total.
        description = cut(
            md, description, self.embed_total_max - others, "embed.description (embed total)"
        )

        url = ctx.streamer.url
        embed: dict[str, Any] = {}
        if author:
            embed["author"] = {"name": author}
            if ctx.streamer.avatar:
                embed["author"]["icon_url"] = str(ctx.streamer.avatar)
            if url:
                embed["author"]["url"] = str(url)
        if title:
            embed["title"] = title
            if url:
                embed["url"] = str(url)
        if description:
            embed["description"] = description
        if category:
            embed["fields"] = [{"name": field, "value": category, "inline": True}]
        if show_image and ctx.live.cover:
            embed["image"] = {"url": str(ctx.live.cover)}
        if footer:
            embed["footer"] = {"text": footer}
        if embed:
            embed["color"] = hue
            embed["timestamp"] = ctx.event.occurred_at.isoformat()
        if not content and not embed:
            raise TemplateProblem(f"{rendered.name}: every block is empty")
        text = self._text_card(
            cut,
            content=content,
            author=author,
            title=title,
            description=description,
            category=f"{field}: {category}" if category else "",
            url=str(url) if url else "",
        )
        label = cut(plain, blocks["button"], self.button_label_max, "button label").strip()
        link = ctx.replay_url if ctx.replay_url and kind == LIVE_END else None
        return DiscordMessage(
            content=content,
            embed=embed,
            text=text,
            button=(label, str(link)) if label and link else None,
            allowed_mentions={
                "parse": ["everyone"] if everyone else [],
                "roles": [str(role) for role in roles],
                "users": [],
                "replied_user": False,
            },
        )

    def _text_card(
        self,
        cut: Cutter,
        *,
        content: str,
        author: str,
        title: str,
        description: str,
        category: str,
        url: str,
    ) -> str:
        """The card in the content alone: the content line (role pings first), then the
        title, the description, the category line ("Category: Celeste") and the link,
        within Discord's 2000.

        Every part is markdown already escaped by the template, except the author, which
        is plain text there and is escaped here. The link goes in <...>, so it stays a
        plain link even once the channel allows previews again.
        """
        head = content or (f"**{markup.escape_discord(author)}**" if author else "")
        fixed = [head] if head else []
        if title:
            fixed.append(f"**{title}**")
        tail = [category] if category else []
        if url and not any(url in part for part in (*fixed, description)):
            tail.append(f"<{url}>")
        # The description is the one part that can be long: it gets what the others leave.
        room = self.content_max - sum(markup.utf16_len(part) + 1 for part in (*fixed, *tail))
        if description and room > 0:
            description = cut(
                markup.truncate_discord, description, room, "content (card without embed)"
            )
            fixed.append(description)
        text = "\n".join(part for part in (*fixed, *tail) if part)
        return cut(markup.truncate_discord, text, self.content_max, "content (card without embed)")

    def build_reply(self, rendered: RenderedReply) -> DiscordReply:
        """A command reply: the `text` block as content, the others as one embed."""
        blocks, name = rendered.blocks, rendered.name
        md, plain = markup.truncate_discord, markup.truncate_plain
        cut = Cutter(self.name, name)
        content = cut(md, blocks["text"], self.content_max, "content")
        fields: list[dict[str, Any]] = []
        for n in range(1, self.reply_fields + 1):
            value = blocks[f"field{n}"]
            if value:
                label = blocks[f"field{n}_name"] or "\u200b"  # Discord wants a name
                fields.append(
                    {
                        "name": cut(plain, label, self.field_name_max, f"field{n}_name"),
                        "value": cut(md, value, self.field_value_max, f"field{n}"),
                        "inline": False,
                    }
                )
        title = cut(md, blocks["title"], self.title_max, "embed.title")
        footer = cut(plain, blocks["footer"], self.footer_max, "embed.footer.text")
        others = markup.utf16_len(title) + markup.utf16_len(footer)
        others += sum(markup.utf16_len(f"{f['name']}{f['value']}") for f in fields)
        room = min(self.description_max, self.embed_total_max - others)
        description = cut(md, blocks["description"], room, "embed.description")
        embed: dict[str, Any] = {}
        if title:
            embed["title"] = title
        if description:
            embed["description"] = description
        if fields:
            embed["fields"] = fields
        if footer:
            embed["footer"] = {"text": footer}
        if embed:
            embed["color"] = colour(blocks["colour"], DEFAULT_COLOUR, name)
        if not content and not embed:
            raise TemplateProblem(f"{name}: every block is empty")
        return DiscordReply(content=content, embed=embed)

    def preview(self, message: DiscordMessage) -> str:
        """What would be sent, as text for a terminal (`python -m bot render`)."""
        lines = [message.content] if message.content else []
        embed = message.embed
        if embed:
            bar = "│ "
            lines.append(f"[embed, colour #{embed.get('color', 0):06X}]")
            if "author" in embed:
                lines.append(bar + embed["author"]["name"])
            if "title" in embed:
                link = f"  <{embed['url']}>" if "url" in embed else ""
                lines.append(f"{bar}{embed['title']}{link}")
            if "description" in embed:
                lines.extend(bar + line for line in embed["description"].splitlines())
            for item in embed.get("fields", ()):
                lines.append(f"{bar}{item['name']}: {item['value']}")
            if "image" in embed:
                lines.append(f"{bar}[image {embed['image']['url']}]")
            footer = embed.get("footer", {}).get("text", "")
            lines.append(
                f"{bar}{footer} · {embed['timestamp']}" if footer else bar + embed["timestamp"]
            )
        roles = message.allowed_mentions.get("roles") or []
        lines.append(f"[pings roles {', '.join(roles)}]" if roles else "[pings nobody]")
        return "\n".join(lines)


#: The one instance the sink, the registry and the tests share.
FORMAT: Final = DiscordFormat()
