"""Telegram adapter: the bot (intake, buttons, admin commands) and the sender the notifier uses."""

import os

# Opt in to PTB 22's timedelta `retry_after` (read at call time): without it every 429 logs a
# deprecation warning from inside PTB and fractional waits are rounded to whole seconds.
os.environ.setdefault("PTB_TIMEDELTA", "1")
