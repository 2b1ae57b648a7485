"""Fixtures for the Discord bot tests: the Discord fake, settings pointing at it, and a running bot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route
from pydantic import SecretStr

from backend.services import Services
from backend.settings import Settings
from bots.discord.app import RepairBot
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
    # Discord answers an interaction once; a flow that tries twice fails for real users.
    assert not fake.refusals(40060), "an interaction was acknowledged twice"
    assert not fake.refusals(10062), "a callback for an interaction Discord never sent"


@pytest.fixture
def discord_settings(settings: Settings, discord_fake: FakeDiscord) -> Settings:
    return settings.model_copy(
        update={
            "discord_bot_token": SecretStr("test-token"),
            "discord_api_base": discord_fake.api_base,
            "discord_gateway_url": discord_fake.gateway_url,
            "discord_admin_ids": [ADMIN_ID],
        }
    )


@contextlib.asynccontextmanager
async def running_bot(settings: Settings, services: Services | None = None) -> AsyncIterator[RepairBot]:
    """The real bot connected to the fake's gateway, ready for interactions."""
    own_services = services is None
    services = services or Services.create(settings)
    bot = RepairBot(services, guild_ready_timeout=0.05)
    runner = asyncio.create_task(bot.start(settings.discord_bot_token.get_secret_value()))
    ready = asyncio.create_task(bot.wait_until_ready())
    await asyncio.wait({runner, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        runner.result()  # raises why the bot could not start
    assert ready.done(), "the bot did not become ready"
    try:
        yield bot
    finally:
        await bot.close()
        await runner
        if own_services:
            await services.close()
        assert not bot.command_errors, bot.command_errors


@pytest.fixture
async def bot(discord_settings: Settings) -> AsyncIterator[RepairBot]:
    async with running_bot(discord_settings) as running:
        yield running


@pytest.fixture
def start_bot():
    """`async with start_bot(settings, services=None) as bot:` for tests that need their own bot."""
    return running_bot


async def store_finished_result(services: Services, photo_bytes: bytes, task_id: str, *, user: str = "discord:42"):
    """A finished `person` task of `user` as the worker keeps it, for a result button to find."""
    from backend import keys
    from backend.replies import DiscordReply
    from backend.tasks import Result
    from tests.fakes.discord_api import APP_ID

    stored = Result(
        task_id=task_id,
        status="ok",
        mode="person",
        user=user,
        input=await services.blobs.put("in", photo_bytes),
        output=await services.blobs.put("out", photo_bytes),
        reply=DiscordReply(application_id=APP_ID, channel_id="500", user_id="42"),
    )
    await services.redis.hset(keys.result(task_id), mapping=stored.encode())
    return stored
