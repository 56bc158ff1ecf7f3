"""Chat commands, declared once for every platform (bot/chat/commands.py)."""
