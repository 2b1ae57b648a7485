"""Fixtures for the Discord bot tests: the Discord fake, settings pointing at it, and a running bot."""

from __future__ import annotations

import pytest
import yarl
from pydantic import SecretStr
from discord.gateway import DiscordWebSocket
from discord.http import Route

from backend.settings import Settings
from tests.fakes.discord_api import FakeDiscord

ADMIN_ID = 4242
USER_ID = 42


@pytest.fixture
async def discord_fake(monkeypatch: pytest.MonkeyPatch) -> FakeDiscord:
    """The fake, with discord.py's process-global endpoints pointing at it (restored afterwards)."""
    fake = await FakeDiscord().start()
    monkeypatch.setattr(Route, "BASE", fake.api_base)
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
    yield fake
    await fake.stop()


@pytest.fixture
def discord_settings(settings: Settings, discord_fake: FakeDiscord) -> Settings:
    return settings.model_copy(update={
        "discord_bot_token": SecretStr("test-token"),
        "discord_api_base": discord_fake.api_base,
        "discord_gateway_url": discord_fake.gateway_url,
        "discord_admin_ids": [ADMIN_ID],
    })
