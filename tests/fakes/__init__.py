"""Protocol-level fakes of the Discord, Telegram and Twitch APIs, served on 127.0.0.1."""
