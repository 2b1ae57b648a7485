"""Telegram adapter: the bot (intake, buttons, admin commands) and the sender the notifier uses."""
