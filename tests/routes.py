"""Route targets the way bot.toml names them, for tests that build routes in code."""

from __future__ import annotations

from collections.abc import Iterable

from bot.config import Target


def chats(
    *, discord: Iterable[int | str] = (), telegram: Iterable[str] = ()
) -> tuple[Target, ...]:
    """A route's targets: Discord channel ids, then Telegram chat ids (or chat/topic)."""
    return (
        *(Target("discord", str(channel)) for channel in discord),
        *(Target("telegram", str(chat)) for chat in telegram),
    )
