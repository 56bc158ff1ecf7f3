"""Telegram's message shape and limits: HTML text, or a cover photo with an HTML caption.

Telegram templates are autoescaped HTML; every `{{ value }}` also gets a word joiner after
each "@", so stream text never becomes a mention. Nothing here imports
python-telegram-bot: `check` and `render` stay light.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from jinja2 import Environment
from markupsafe import Markup

from bot import markup
from bot.errors import TemplateProblem
from bot.events import LIVE_END
from bot.render import Cutter, Rendered, RenderedReply, SafeUrl, flag


@dataclass(frozen=True, slots=True)
class TelegramMessage:
    """One Telegram notification: HTML text, optional cover photo and one link button.

    `caption` is set only when there is a photo and the text fits a caption; otherwise
    the sink sends `text` with sendMessage.
    """

    text: str
    photo_url: str | None = None
    caption: str | None = None
    button_text: str | None = None
    button_url: str | None = None
    disable_preview: bool = True


class TelegramFormat:
    """Telegram's templates, escaping and limits (visible characters after entity parsing,
    in UTF-16 code units)."""

    name = "telegram"
    autoescape = True
    text_max = 4096
    caption_max = 1024
    blocks = ("text", "button", "photo", "link_preview")
    plain_blocks = ()
    sample_options: Mapping[str, Any] = {}
    #: A command reply is one HTML text (status.j2, mutes.j2, help.j2).
    reply_blocks = ("text",)

    def finalize(self, value: object, *, plain: bool) -> object:
        """Every `{{ }}`, before autoescaping: controls stripped, mentions broken."""
        del plain
        if value is None:
            return ""
        if isinstance(value, SafeUrl):
            # Usually an href, where a word joiner would break the link; shown as text,
            # Telegram makes the whole URL one link, with no mention inside it.
            return value
        if isinstance(value, Markup):
            # HTML already (|e, |join and other filters give Markup): stream text may be in
            # it, so its text gets the same treatment, its tags are left alone.
            return Markup(markup.break_telegram_html_mentions(markup.strip_controls(str(value))))
        return markup.break_telegram_mentions(markup.strip_controls(str(value)))

    def install(self, env: Environment) -> None:
        """Telegram has no helpers of its own."""
        del env

    def build(self, rendered: Rendered) -> TelegramMessage:
        """The message for the rendered blocks, cut to Telegram's limits."""
        blocks, ctx, name = rendered.blocks, rendered.context, rendered.name
        text = blocks["text"]
        if not text:
            raise TemplateProblem(f"{name}: block 'text' is empty")
        problems = markup.telegram_html_problems(text)
        if problems:
            raise TemplateProblem(f"{name}: block 'text' is not Telegram HTML: {problems[0]}")
        text = Cutter(self.name, ctx.event.kind)(
            markup.truncate_telegram, text, self.text_max, "text"
        )
        photo = flag(blocks["photo"], default=True, block="photo", name=name)
        preview_links = flag(
            blocks["link_preview"], default=False, block="link_preview", name=name
        )
        photo_url = str(ctx.live.cover) if photo and ctx.live.cover else None
        caption = None
        if photo_url and markup.telegram_visible_len(text) <= self.caption_max:
            caption = text
        # The button label is plain text: undo the HTML escaping of the values in it.
        label = " ".join(html.unescape(blocks["button"]).split())
        # An ended card's button opens its replay once there is one (issue 19).
        link = ctx.replay_url if ctx.replay_url and ctx.event.kind == LIVE_END else None
        link = link or ctx.streamer.url
        has_button = bool(label and link)
        return TelegramMessage(
            text=text,
            photo_url=photo_url,
            caption=caption,
            button_text=label if has_button else None,
            button_url=str(link) if has_button else None,
            disable_preview=not preview_links,
        )

    def build_reply(self, rendered: RenderedReply) -> str:
        """A command reply: Telegram HTML, checked and cut to `text_max`."""
        text, name = rendered.blocks["text"], rendered.name
        if not text:
            raise TemplateProblem(f"{name}: the reply is empty")
        problems = markup.telegram_html_problems(text)
        if problems:
            raise TemplateProblem(f"{name}: not Telegram HTML: {problems[0]}")
        return Cutter(self.name, name)(markup.truncate_telegram, text, self.text_max, "text")

    def preview(self, message: TelegramMessage) -> str:
        """What would be sent, as text for a terminal (`python -m bot render`)."""
        lines = []
        if message.photo_url:
            how = "with the text as caption" if message.caption else "then the text"
            lines.append(f"[photo {message.photo_url}, {how}]")
        lines.append(message.text)
        if message.button_text:
            lines.append(f"[button {message.button_text!r} -> {message.button_url}]")
        lines.append(f"[link preview {'off' if message.disable_preview else 'on'}]")
        return "\n".join(lines)


#: The one instance the sink, the registry and the tests share.
FORMAT: Final = TelegramFormat()
