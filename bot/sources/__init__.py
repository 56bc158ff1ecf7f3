"""Webhook sources, one module per provider; `bot.registry.SOURCES` lists their specs."""

from __future__ import annotations

from bot.sources.base import Source, WebhookRequest

__all__ = ["Source", "WebhookRequest"]
