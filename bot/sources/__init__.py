"""Webhook sources, one module per provider, and the explicit registry of their kinds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from bot.config import SourceConfig
from bot.sources.base import Source, WebhookRequest
from bot.sources.fastpix import FastPixSource
from bot.sources.livepeer import LivepeerSource
from bot.sources.onliverec import OneLiveRecSource

#: Source kind (`[[sources]] kind`) -> the class that handles it.
SOURCE_TYPES: Final[dict[str, Callable[[SourceConfig], Source]]] = {
    OneLiveRecSource.kind: OneLiveRecSource,
    LivepeerSource.kind: LivepeerSource,
    FastPixSource.kind: FastPixSource,
}

__all__ = ["SOURCE_TYPES", "Source", "WebhookRequest"]
