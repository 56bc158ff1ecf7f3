"""Livestream notification bot: webhooks in, Discord, Telegram and console out."""
