"""A part the platform already took stays marked sent through a Redis outage, so the next try skips it."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from backend.delivery import PartStore
from tests.support.redis_server import RedisServer


async def test_a_sent_part_is_marked_once_redis_is_back(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    redis = Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    try:
        store = PartStore(redis)
        parts = await store.parts("t1")
        await parts.sending("photo")
        server.stop(kill=True)  # the platform answered; Redis is gone before the mark
        marking = asyncio.create_task(parts.done("photo"))
        await asyncio.sleep(1.0)
        assert not marking.done(), "the mark waits for Redis instead of being dropped"
        assert parts.sent("photo"), "this process already knows the part is out"
        server.start()
        await asyncio.wait_for(marking, timeout=15)
        again = await store.parts("t1")
        assert again.sent("photo") and not again.was_in_flight("photo")
    finally:
        await redis.aclose()
        server.stop()
