"""The Discord fake refuses what Discord refuses, so the bot tests can't pass on leniency alone."""

from __future__ import annotations

import aiohttp

from tests.fakes.discord_api import FakeDiscord


async def post(fake: FakeDiscord, path: str, body: dict, **headers: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(fake.api_base + path, json=body, headers=headers) as response:
            assert response.headers["Content-Type"] == "application/json"
            return response.status, await response.json()


async def test_bot_routes_need_the_bot_token(discord_fake):
    assert await post(discord_fake, "/channels/500/messages", {"content": "hi"}) == (
        401,
        {"code": 0, "message": "401: Unauthorized"},
    )
    status, _ = await post(discord_fake, "/channels/500/messages", {"content": "hi"}, Authorization="Bot t")
    assert status == 200


async def test_an_interaction_is_answered_once(discord_fake):
    interaction = discord_fake.slash("colorize", [])
    callback = f"/interactions/{interaction['id']}/{interaction['token']}/callback"
    assert (await post(discord_fake, callback, {"type": 5}))[0] == 200
    assert await post(discord_fake, callback, {"type": 5}) == (
        400,
        {"code": 40060, "message": "Interaction has already been acknowledged."},
    )
    discord_fake.calls.clear()  # the deliberate refusal is not a bot bug for the fixture's check


async def test_a_callback_for_an_interaction_never_sent_is_unknown(discord_fake):
    assert await post(discord_fake, "/interactions/123/itok-nope/callback", {"type": 5}) == (
        404,
        {"code": 10062, "message": "Unknown interaction"},
    )
    discord_fake.calls.clear()


async def test_webhook_calls_with_an_expired_token_are_refused(discord_fake):
    interaction = discord_fake.slash("colorize", [])
    discord_fake.expire_token(interaction["token"])
    assert await post(discord_fake, f"/webhooks/111/{interaction['token']}?wait=1", {"content": "late"}) == (
        401,
        {"code": 50027, "message": "Invalid Webhook Token"},
    )
