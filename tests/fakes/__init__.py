"""Protocol-level fakes of the Discord and Telegram APIs, served on 127.0.0.1."""
