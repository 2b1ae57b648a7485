"""The same platform event delivered twice: a Telegram message re-delivered by polling under a new
update_id, a webhook POST retried by Telegram, a Discord interaction dispatched twice. One task, one
ComfyUI run, one result in the chat."""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.ledger import assert_clean
from tests.chaos.platforms import Submission
from tests.support.redis_server import free_port


@pytest.mark.timeout(120)
async def test_same_telegram_update_twice_polling(chaos, ledger):
    async with chaos(env={"MIN_IDLE_MS": "4000"}) as stack:
        await stack.start_default(workers=1)
        chat = stack.new_chat()
        message = stack.telegram_message(chat, stack.photo())
        await stack.telegram.push_update({"message": message})
        await asyncio.sleep(0.3)
        await stack.telegram.push_update({"message": message})  # after a crash before the offset was confirmed
        sub = Submission("telegram", chat, message_id=message["message_id"])
        stack.subs.append(sub)
        assert await stack.wait_answered([sub], timeout=60), stack.logs()
        await stack.settle(extra_s=2)
        await stack.fill_ledger()
    assert_clean(ledger)
    assert ledger.runs == 1, ledger


@pytest.mark.timeout(120)
async def test_same_telegram_update_twice_webhook(chaos, ledger):
    port = free_port()
    secret = "chaos-webhook-secret"
    env = {
        "TELEGRAM_WEBHOOK_URL": f"http://127.0.0.1:{port}/telegram",
        "TELEGRAM_WEBHOOK_LISTEN": "127.0.0.1",
        "TELEGRAM_WEBHOOK_PORT": str(port),
        "TELEGRAM_WEBHOOK_SECRET": secret,
        "MIN_IDLE_MS": "4000",
    }
    async with chaos(env=env) as stack:
        await stack.start_default(workers=1)
        chat = stack.new_chat()
        message = stack.telegram_message(chat, stack.photo())
        update = {"update_id": 424242, "message": message}
        first = await stack.telegram.post_webhook(update, secret=secret)
        second = await stack.telegram.post_webhook(update, secret=secret)  # Telegram's retry after a timeout
        ledger.note(f"webhook answered {first} then {second}")
        sub = Submission("telegram", chat, message_id=message["message_id"])
        stack.subs.append(sub)
        assert await stack.wait_answered([sub], timeout=60), stack.logs()
        await stack.settle(extra_s=2)
        await stack.fill_ledger()
    assert_clean(ledger)
    assert ledger.runs == 1, ledger


@pytest.mark.timeout(120)
async def test_same_discord_interaction_twice(chaos, ledger):
    async with chaos(env={"MIN_IDLE_MS": "4000"}, discord=True) as stack:
        await stack.start_default(workers=1, bot="discord")
        user = stack.new_chat()
        interaction = stack.discord_interaction(user, stack.photo())
        await stack.discord.push_interaction(interaction)
        await asyncio.sleep(0.3)
        await stack.discord.push_interaction(interaction)  # the gateway replays it after a resume
        sub = Submission("discord", user, token=interaction["token"])
        stack.subs.append(sub)
        assert await stack.wait_answered([sub], timeout=60), stack.logs()
        await stack.settle(extra_s=2)
        await stack.fill_ledger()
    assert_clean(ledger)
    assert ledger.runs == 1, ledger
