"""Where discord.py connects: the REST base and the gateway URL come from settings.

discord.py has no per-client option for the host; these two class attributes are process-global, so
every client in the process (bot and sender) talks to the same Discord, real or fake.
"""

from __future__ import annotations

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from backend.settings import Settings


def point_at(settings: Settings) -> None:
    Route.BASE = settings.discord_api_base.rstrip("/")
    if settings.discord_gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def bot_token(settings: Settings) -> str:
    if settings.discord_bot_token is None or not settings.discord_bot_token.get_secret_value():
        raise RuntimeError("DISCORD_BOT_TOKEN is not set")
    return settings.discord_bot_token.get_secret_value()
