"""Webhook sources, one module per provider, and the explicit registry of their kinds."""

from __future__ import annotations

from typing import Final

from bot.sources.base import Source, SourceFactory, WebhookRequest
from bot.sources.onliverec import OneLiveRecSource

SOURCE_TYPES: Final[dict[str, SourceFactory]] = {
    OneLiveRecSource.kind: OneLiveRecSource,
}

__all__ = ["SOURCE_TYPES", "Source", "SourceFactory", "WebhookRequest"]
