"""Send claims taken, kept and closed for many results at once, against a real redis-server."""

from __future__ import annotations

import asyncio

from backend import keys
from backend.delivery import ACQUIRED, DELIVERED, HELD_ELSEWHERE, SendClaims


async def test_claims_taken_together_each_get_their_own_answer(redis):
    await redis.set(keys.delivered("d" * 32), "1")
    await redis.set(keys.send_claim("h" * 32), "another-notifier", px=10_000)
    claims = SendClaims(redis)
    delivered, held, fresh = (claims.for_task(letter * 32) for letter in "dhf")
    states = await asyncio.gather(delivered.try_acquire(), held.try_acquire(), fresh.try_acquire())
    assert states == [DELIVERED, HELD_ELSEWHERE, ACQUIRED]
    assert await redis.get(keys.send_claim("f" * 32)) == fresh.token.encode()
    assert await redis.get(keys.send_claim("h" * 32)) == b"another-notifier", "someone else's claim is left alone"


async def test_results_marked_delivered_together_are_acknowledged_and_their_claims_released(redis):
    await redis.xgroup_create("results", "notifiers", id="0", mkstream=True)
    entry_ids = [(await redis.xadd("results", {"n": str(n)})).decode() for n in range(2)]
    await redis.xreadgroup("notifiers", "n-0", {"results": ">"})
    claims = SendClaims(redis)
    mine = [claims.for_task(letter * 32) for letter in "ab"]
    assert await asyncio.gather(*(claim.try_acquire() for claim in mine)) == [ACQUIRED, ACQUIRED]
    await redis.hset(keys.send_parts("a" * 32), "photo", "sent")
    await asyncio.gather(
        *(claim.delivered("results", "notifiers", entry_id, ttl_s=60) for claim, entry_id in zip(mine, entry_ids))
    )
    for letter in "ab":
        assert 0 < await redis.ttl(keys.delivered(letter * 32)) <= 60
        assert not await redis.exists(keys.send_claim(letter * 32), keys.send_parts(letter * 32))
        assert not await redis.exists(keys.send_rounds(letter * 32))
    assert (await redis.xpending("results", "notifiers"))["pending"] == 0
    assert await claims.for_task("a" * 32).try_acquire() == DELIVERED


async def test_claims_held_outlive_their_ttl_and_one_taken_away_is_marked_lost(redis):
    claims = SendClaims(redis, ttl_ms=300)
    kept, stolen = claims.for_task("k" * 32), claims.for_task("s" * 32)
    assert await asyncio.gather(kept.try_acquire(), stolen.try_acquire()) == [ACQUIRED, ACQUIRED]
    async with kept.held(), stolen.held():
        await redis.set(keys.send_claim("s" * 32), "another-notifier")  # as if ours had lapsed and been taken
        await asyncio.sleep(0.9)  # three TTLs: only the renewals keep `kept` alive
        assert await redis.get(keys.send_claim("k" * 32)) == kept.token.encode()
        assert not kept.lost and stolen.lost
    assert not await redis.exists(keys.send_claim("k" * 32)), "released on the way out"
    assert await redis.get(keys.send_claim("s" * 32)) == b"another-notifier"
