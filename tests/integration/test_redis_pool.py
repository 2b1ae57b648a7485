"""The Redis pool is bounded and blocking: a burst bigger than the pool waits instead of failing."""

import asyncio

from redis.asyncio import BlockingConnectionPool

from backend.redis_conn import SentinelBlockingConnectionPool, connect


async def test_a_burst_larger_than_the_pool_waits_for_connections(settings):
    settings = settings.model_copy(update={"redis_max_connections": 4, "redis_pool_timeout_s": 10.0})
    redis = connect(settings)
    try:
        pool = redis.connection_pool
        assert isinstance(pool, BlockingConnectionPool) and pool.max_connections == 4

        async def one_user(n: int) -> int:
            # What intake does per photo: a few commands and a transaction, all at once for 200 users.
            await redis.exists("repairbot:paused")
            async with redis.pipeline(transaction=True) as pipe:
                pipe.sadd(f"burst:user:{n}", "task")
                pipe.expire(f"burst:user:{n}", 60)
                await pipe.execute()
            return int(await redis.scard(f"burst:user:{n}"))

        answers = await asyncio.gather(*(one_user(n) for n in range(200)))
        assert answers == [1] * 200
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 4
    finally:
        await redis.aclose()


def test_sentinel_urls_get_the_blocking_pool_too(settings):
    settings = settings.model_copy(
        update={
            "redis_url": "redis+sentinel://s1:26379/photos/0",
            "redis_max_connections": 7,
            "redis_pool_timeout_s": 3.0,
        }
    )
    pool = connect(settings).connection_pool
    assert isinstance(pool, SentinelBlockingConnectionPool) and isinstance(pool, BlockingConnectionPool)
    assert pool.max_connections == 7 and pool.timeout == 3.0 and pool.service_name == "photos"
