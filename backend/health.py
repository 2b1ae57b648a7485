"""The operations HTTP port (`METRICS_PORT`): `/metrics`, `/livez` and `/readyz`, in the process's loop.

- `/livez` is 200 while the event loop answers at all: a hung or dead process gets restarted.
- `/readyz` is 200 while every readiness check passes, 503 with the reasons otherwise. Checks are
  computed per request, so readiness comes back by itself when Redis (or ComfyUI) does: Redis must
  answer PING, and a worker needs at least one ComfyUI instance it sends tasks to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis.asyncio import Redis

from backend import metrics

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[str | None]]  # None when fine, else why not ready
PING_TIMEOUT_S = 2.0


def redis_check(redis: Redis) -> Check:
    async def check() -> str | None:
        try:
            await asyncio.wait_for(redis.ping(), timeout=PING_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            return f"Redis unreachable ({type(exc).__name__})"
        return None

    return check


class HealthServer:
    """Serves the three endpoints on `port` (0 picks a free one: see `.port` after `start`)."""

    def __init__(self, port: int, checks: list[Check], host: str = "0.0.0.0"):
        self.host = host
        self.requested_port = port
        self.checks = checks
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> HealthServer:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("metrics and health on port %d (/metrics, /livez, /readyz)", self.port)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def not_ready(self) -> list[str]:
        reasons = await asyncio.gather(*(check() for check in self.checks))
        return [reason for reason in reasons if reason]

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(metrics.scrape)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def _livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        reasons = await self.not_ready()
        if reasons:
            return web.Response(status=503, text="not ready: " + "; ".join(reasons) + "\n")
        return web.Response(text="ready\n")
