"""One way to get a Redis client, so every process uses the same timeouts, pool and target.

`REDIS_URL` may be a plain `redis://` / `rediss://` URL (local, managed) or a Sentinel URL:
`redis+sentinel://host1:26379,host2:26379/<master-name>/<db>`; the client then follows failovers.

The pool is bounded and blocking: a burst that needs more connections than
`REDIS_MAX_CONNECTIONS` waits up to `REDIS_POOL_TIMEOUT_S` for one to come free instead of failing
at once (redis-py's default pool raises "Too many connections" the moment it runs dry). A bot lets
hundreds of updates run at once, but each holds a connection only for one command or pipeline, so a
modest pool serves them all with a short wait.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from backend.settings import Settings

# redis-py's ConnectionError and TimeoutError are not the builtin ones: name both families.
REDIS_DOWN = (ConnectionError, OSError, asyncio.TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError)


class SentinelBlockingConnectionPool(SentinelConnectionPool, BlockingConnectionPool):  # type: ignore[misc]
    """The Sentinel pool (follows the master) with the blocking pool's wait for a free connection."""


def connect(settings: Settings) -> Redis:
    timeout = settings.redis_socket_timeout_s
    options = dict(
        socket_timeout=timeout,
        socket_connect_timeout=5,
        health_check_interval=30,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
    )
    if settings.redis_url.startswith("redis+sentinel://"):
        parts = urlsplit(settings.redis_url)
        hosts = []
        for item in parts.netloc.rsplit("@", 1)[-1].split(","):
            host, _, port = item.partition(":")
            hosts.append((host, int(port or 26379)))
        path = [p for p in parts.path.split("/") if p]
        master = path[0] if path else "mymaster"
        db = int(path[1]) if len(path) > 1 else 0
        sentinel = Sentinel(hosts, socket_timeout=timeout)
        return sentinel.master_for(
            master, db=db, password=parts.password, connection_pool_class=SentinelBlockingConnectionPool, **options
        )
    return Redis.from_pool(BlockingConnectionPool.from_url(settings.redis_url, **options))
