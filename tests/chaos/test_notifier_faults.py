"""The notifier killed with -9 while Telegram holds the answer to a sendPhoto it already accepted,
and a soak with the notifier killed at random while three workers drain a queue."""

from __future__ import annotations

import random

import pytest

from backend.settings import Settings
from tests.chaos.conftest import CHAOS_LONG
from tests.chaos.ledger import assert_clean

LEASE_S = Settings.model_fields["consumer_lease_s"].default  # the consumer lease at default settings


async def kill_notifier_counting_in_flight(stack, ledger) -> set[bytes]:
    """kill -9 the notifier; sends Telegram accepted but hasn't answered yet may show up twice.
    Returns the result entries the dead notifier still held."""
    consumer = stack.consumer_of("notifier")
    in_flight = stack.telegram.replies_in_flight()
    ledger.fault()
    await stack.kill("notifier")
    ledger.in_flight_at_kill += in_flight
    return await stack.entries_of("photo_repair_results", "notifiers", consumer)


@pytest.mark.timeout(200)
async def test_kill9_notifier_mid_send_at_default_settings(chaos, ledger):
    """Ten results; Telegram takes 2 s to answer each sendPhoto. The notifier dies after a few
    deliveries with one answer in flight; the restarted one (default MIN_IDLE_MS and lease) must
    finish the rest without posting again what was already in the chats."""
    async with chaos(env={"BLOCK_MS": "2000"}, comfy_delay_s=0.05) as stack:
        stack.telegram.photo_answer_delay_s = 2.0
        await stack.start_default(workers=1)
        subs = await stack.send_telegram_photos(10)
        await stack.wait_for(
            lambda: len(stack.telegram.calls_to("sendPhoto")) >= 3 and stack.telegram.in_flight, timeout=90
        )
        killed = stack.consumer_of("notifier")
        held = await kill_notifier_counting_in_flight(stack, ledger)
        await stack.spawn("notifier", "notifier")

        async def taken_over() -> bool:
            return not (held & await stack.entries_of("photo_repair_results", "notifiers", killed))

        await stack.wait_for(taken_over, timeout=120, step=0.1)
        ledger.detected()
        ledger.note(
            f"{len(held)} results held by the killed notifier, taken over {ledger.detect_s} s after the kill "
            f"(lease {LEASE_S} s)"
        )
        assert await stack.wait_answered(subs, timeout=120), stack.logs()
        ledger.recovered()
        await stack.settle()
        await stack.fill_ledger()
    assert_clean(ledger, duplicates_allowed=ledger.in_flight_at_kill)
    assert ledger.detect_s is not None and ledger.detect_s <= LEASE_S + 5, ledger


@pytest.mark.timeout(900 if CHAOS_LONG else 240)
async def test_soak_three_workers_notifier_killed_at_random(chaos, ledger):
    """300 photos under CHAOS_LONG (60 by default), three workers, the notifier killed with -9 every
    2–4 s and started again until every photo is answered. Small MIN_IDLE_MS: the soak measures
    correctness, not waiting."""
    count = 300 if CHAOS_LONG else 60
    rng = random.Random(7)
    async with chaos(env={"MIN_IDLE_MS": "3000"}, comfy_delay_s=0.25) as stack:
        stack.telegram.photo_answer_delay_s = 0.2
        await stack.start_default(workers=3)
        subs = await stack.send_telegram_photos(count, pause_s=0.02)
        kills = 0
        while not await stack.wait_answered(subs, timeout=rng.uniform(2, 4)):
            await kill_notifier_counting_in_flight(stack, ledger)
            kills += 1
            await stack.spawn("notifier", "notifier")
            if kills >= (100 if CHAOS_LONG else 30):
                break
        ledger.recovered()
        ledger.note(f"notifier killed {kills} times")
        assert await stack.wait_answered(subs, timeout=120), stack.logs()
        await stack.settle()
        await stack.fill_ledger()
    assert_clean(ledger, duplicates_allowed=ledger.in_flight_at_kill)
    assert ledger.delivered == count
