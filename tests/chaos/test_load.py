"""A burst of 200 photos from 200 users, and one user flooding while another is served: every photo
gets its result or a specific refusal, never "something went wrong"."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chaos.ledger import assert_clean


@pytest.mark.timeout(300)
async def test_burst_of_200_photos(chaos, ledger):
    async with chaos(env={"MIN_IDLE_MS": "10000"}, comfy_delay_s=0.0) as stack:
        await stack.start_default(workers=2)
        started = time.monotonic()
        subs = [await stack.send_telegram_photo() for _ in range(200)]  # as fast as the fake takes them
        ledger.note(f"200 photos pushed in {time.monotonic() - started:.1f} s")
        assert await stack.wait_answered(subs, timeout=240), stack.logs()
        await stack.settle()
        await stack.fill_ledger()
        refusals = sorted({stack.outcome(s).last_text for s in subs if stack.outcome(s).refused})
        if refusals:
            ledger.note(f"refusals: {refusals}")
    assert_clean(ledger)
    assert ledger.delivered + ledger.refused == 200, ledger


@pytest.mark.timeout(180)
async def test_one_user_flooding_while_another_is_served(chaos, ledger):
    """User A sends 20 photos at once; user B sends one right after. A gets results up to the per-user
    limits (active plus backlog) and a specific answer for the rest; B is served without waiting
    behind A's flood."""
    async with chaos(env={"MIN_IDLE_MS": "10000", "USER_MAX_ACTIVE": "3"}, comfy_delay_s=0.3) as stack:
        await stack.start_default(workers=1)
        flooder = stack.new_chat()
        flood = [await stack.send_telegram_photo(flooder) for _ in range(20)]
        other = await stack.send_telegram_photo()
        sent = time.monotonic()
        assert await stack.wait_answered([other], timeout=60), stack.logs()
        waited = round(time.monotonic() - sent, 1)
        # The backlog lives outside the streams: wait until the flooder's results stop coming.
        deadline, delivered = time.monotonic() + 90, -1
        while time.monotonic() < deadline:
            now = sum(stack.outcome(s).delivered for s in flood)
            if now == delivered and await stack.quiescent():
                break
            delivered = now
            await asyncio.sleep(3)
        await stack.fill_ledger()
        outcomes = [stack.outcome(s, final=True) for s in flood]
        ledger.note(
            f"the other user waited {waited} s; the flooder got {sum(o.delivered for o in outcomes)} "
            f"results and {sum(o.refused for o in outcomes)} refusals "
            f"({sorted({o.last_text for o in outcomes if o.refused})})"
        )
    assert_clean(ledger)
    assert stack.outcome(other).delivered, ledger
    assert waited < 15, ledger  # not behind all twenty of the flooder's photos
