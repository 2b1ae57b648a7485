"""Each platform answering 429 with retry_after and 5xx while results go out: every result still
arrives once."""

from __future__ import annotations

import pytest

from tests.chaos.ledger import assert_clean


@pytest.mark.timeout(150)
async def test_telegram_429_and_5xx(chaos, ledger):
    async with chaos(env={"MIN_IDLE_MS": "4000"}) as stack:
        await stack.start_default(workers=1)
        stack.telegram.fail_next("sendPhoto", 429, retry_after=1, times=2)
        stack.telegram.fail_next("sendDocument", 502, "Bad Gateway", times=2)
        stack.telegram.fail_next("sendPhoto", 500, "Internal Server Error", times=1)
        ledger.fault()
        subs = await stack.send_telegram_photos(4)
        assert await stack.wait_answered(subs, timeout=90), stack.logs()
        ledger.recovered()
        await stack.settle()
        await stack.fill_ledger()
    assert_clean(ledger)
    assert ledger.delivered == 4, ledger


@pytest.mark.timeout(150)
async def test_discord_429_and_5xx(chaos, ledger):
    async with chaos(env={"MIN_IDLE_MS": "4000"}, discord=True) as stack:
        await stack.start_default(workers=1, bot="discord")
        webhook = r"/webhooks/\d+/[^/]+"
        stack.discord.rate_limit("POST", webhook, times=2, retry_after=0.5)
        stack.discord.server_error("POST", webhook, times=2, status=502)
        stack.discord.server_error("PATCH", webhook + "/messages/@original", times=1, status=500)
        ledger.fault()
        subs = [await stack.send_discord_photo() for _ in range(3)]
        assert await stack.wait_answered(subs, timeout=90), stack.logs()
        ledger.recovered()
        await stack.settle()
        await stack.fill_ledger()
    assert_clean(ledger)
    assert ledger.delivered == 3, ledger
