"""One way to get a Redis client, so every process uses the same timeouts and the same target.

`REDIS_URL` may be a plain `redis://` / `rediss://` URL (local, managed) or a Sentinel URL:
`redis+sentinel://host1:26379,host2:26379/<master-name>/<db>`; the client then follows failovers.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from backend.settings import Settings


def connect(settings: Settings) -> Redis:
    timeout = settings.redis_socket_timeout_s
    options = dict(socket_timeout=timeout, socket_connect_timeout=5, health_check_interval=30)
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
        return sentinel.master_for(master, db=db, password=parts.password, **options)
    return Redis.from_url(settings.redis_url, **options)
