"""The operations side of a process, run next to its worker, notifier or bots.

Every `OPS_INTERVAL_S`:
- a worker reports its ComfyUI instances (up, and their own queues) as metrics;
- the process holding the `collector` lease reads the queue-wide numbers and exports them, and
  trims old dead letters; the others export no queue gauges (one source, no double counting);
- a process with a notifier (`repairbot notifier`, `up`: it has the platform senders) that holds
  the `alerts` lease evaluates the alerts and sends what is due to the admins; ComfyUI's health
  comes from what the workers last published (`repairbot:ops:comfyui`), not from probes of its own;
- a filesystem blob store is swept every `BLOB_SWEEP_EVERY_S`.
With `METRICS_PORT` set it also serves /metrics, /livez and /readyz (backend.health).

Leases are plain `SET NX EX` keys renewed by their holder, so when a collector dies another process
takes over within three intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Any

from redis.asyncio import Redis

from backend import alerts, metrics, retention
from backend.backoff import wait_event
from backend.comfyui import ComfyUIClient
from backend.health import Check, HealthServer, redis_check
from backend.redact import redact_url
from backend.redis_conn import REDIS_DOWN
from backend.stream_names import DEFAULT_STREAMS, StreamNames
from backend.tasks import now_ms

log = logging.getLogger(__name__)

RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


COMFYUI_VIEW = "repairbot:ops:comfyui"  # hash: "<process>|<instance>" -> "<1 or 0>:<ms seen>"
VIEW_KEEP_S = 600


class Lease:
    """Held by one process at a time; `hold()` takes or renews it and says whether we have it."""

    def __init__(self, redis: Redis, name: str, ttl_s: float):
        self.key = f"repairbot:ops:{name}"
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self._script = redis.register_script(RENEW_SCRIPT)
        self.redis = redis

    async def hold(self) -> bool:
        return bool(await self._script(keys=[self.key], args=[self.owner, self.ttl_ms]))

    async def release(self) -> None:
        with contextlib.suppress(Exception):
            if await self.redis.get(self.key) == self.owner.encode():
                await self.redis.delete(self.key)


class Ops:
    """Metrics, health, alerts and retention for one process.

    :param worker: the process's Worker, if any (its ComfyUI view: metrics and readiness)
    :param alerter: evaluates the alerts and sends them to the admins (a process with a notifier);
        without it, no alerts
    :param blobs: the blob store, swept when it is a filesystem one
    :param modes: the modes' names, so their metrics exist before the first photo
    :param streams: the stream and group names the queue numbers are read from
    :param ops_interval_s: how often a round runs; the leases last three rounds
    :param metrics_port: where /metrics, /livez and /readyz are served; None serves nothing
    :param blob_sweep_every_s: how often a filesystem blob store is swept
    :param dead_max_len: dead letters beyond the newest this many are trimmed
    :param dead_max_age_s: dead letters older than this are trimmed
    """

    def __init__(
        self,
        redis: Redis,
        *,
        worker: Any = None,
        alerter: alerts.Alerts | None = None,
        blobs: Any = None,
        modes: list[str] | None = None,
        streams: StreamNames = DEFAULT_STREAMS,
        ops_interval_s: float = 5.0,
        metrics_port: int | None = None,
        blob_sweep_every_s: int = 600,
        dead_max_len: int = 10_000,
        dead_max_age_s: int = 14 * 24 * 3600,
    ):
        self.redis = redis
        self.worker = worker
        self.blobs = blobs
        self.streams = streams
        self.ops_interval_s = ops_interval_s
        self.metrics_port = metrics_port
        self.blob_sweep_every_s = blob_sweep_every_s
        self.dead_max_len = dead_max_len
        self.dead_max_age_s = dead_max_age_s
        self.collector = metrics.QueueCollector(dead_stream=streams.dead_stream)
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.collector_lease = Lease(redis, "collector", 3 * ops_interval_s)
        self.alerts_lease = Lease(redis, "alerts", 3 * ops_interval_s)
        self.alerts = alerter
        self.server: HealthServer | None = None
        self._probes: dict[str, ComfyUIClient] = {}  # HTTP-only clients of our own, closed by us
        self.comfyui_up: dict[str, bool] = {}  # the worker's instances, as last seen
        self._next_sweep = 0.0
        metrics.known_modes(modes or [])

    def checks(self) -> list[Check]:
        checks = [redis_check(self.redis)]
        if self.worker is not None:
            checks.append(self._some_comfyui_up)
        return checks

    def _instances(self) -> list[Any]:
        """The worker's ComfyUI instances (none for an executor without ComfyUI, `EXECUTOR=noop`)."""
        return list(getattr(self.worker.executor, "instances", []))

    async def _some_comfyui_up(self) -> str | None:
        """A worker is ready while one of its instances both answers and is in rotation (its breaker)."""
        instances = self._instances()
        if not instances:
            return None
        if not self.comfyui_up:  # not looked yet: the breaker's view alone
            up = any(instance.healthy for instance in instances)
        else:
            up = any(self.comfyui_up.values())
        return None if up else "every ComfyUI instance is down"

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; a failing round is logged and the next one comes anyway."""
        metrics.REGISTRY.register(self.collector)
        try:
            if self.metrics_port is not None:
                self.server = await HealthServer(self.metrics_port, self.checks()).start()
            while not stop.is_set():
                try:
                    await self.tick()
                except REDIS_DOWN as exc:
                    self.collector.numbers = None
                    log.debug("ops round skipped, Redis unreachable: %s", exc)
                except Exception:  # noqa: BLE001 - operations must never take the process down
                    log.exception("ops round failed")
                await wait_event(stop, self.ops_interval_s)
        finally:
            metrics.REGISTRY.unregister(self.collector)
            if self.server is not None:
                await self.server.stop()
            for client in self._probes.values():
                await client.close()
            await self.collector_lease.release()
            await self.alerts_lease.release()

    async def tick(self) -> None:
        if self.worker is not None:
            await self.report_comfyui()
        if await self.collector_lease.hold():
            self.collector.numbers = await metrics.read_queue_numbers(self.redis, self.streams)
            await retention.trim_dead_letters(
                self.redis,
                dead_stream=self.streams.dead_stream,
                dead_max_len=self.dead_max_len,
                dead_max_age_s=self.dead_max_age_s,
            )
        else:
            self.collector.numbers = None
        if self.alerts is not None and await self.alerts_lease.hold():
            await self.evaluate_alerts()
        loop = asyncio.get_running_loop()
        if self.blobs is not None and loop.time() >= self._next_sweep:
            self._next_sweep = loop.time() + self.blob_sweep_every_s
            await retention.sweep_blobs(self.blobs)

    async def report_comfyui(self) -> None:
        """Each of the worker's instances: up when in rotation (its breaker) and answering now; its queue.

        The health check matters while the worker is idle: its breaker only learns from failed tasks.
        Nothing is reported before the worker has started (its first probe sets the breaker).
        """
        if not self.worker.name:
            return
        for instance in self._instances():
            name = redact_url(instance.client.base_url)
            running = pending = 0
            probe = self._probe(instance.client.base_url)
            up = instance.healthy and await probe.health()
            if up:
                with contextlib.suppress(Exception):
                    queued = await asyncio.wait_for(probe.queue(), timeout=5)
                    running, pending = len(queued[0]), len(queued[1])
            self.comfyui_up[name] = up
            metrics.comfyui_seen(name, up, running, pending)
        await self.publish_comfyui_view()

    async def publish_comfyui_view(self) -> None:
        """What this worker sees, for the alerts: they run in a notifier, which may reach no ComfyUI
        itself (on Kubernetes each ComfyUI is a sidecar of its worker)."""
        if not self.comfyui_up:
            return
        seen = f"{now_ms()}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                COMFYUI_VIEW,
                mapping={f"{self.owner}|{name}": f"{int(up)}:{seen}" for name, up in self.comfyui_up.items()},
            )
            pipe.expire(COMFYUI_VIEW, VIEW_KEEP_S)
            await pipe.execute()

    def _probe(self, url: str) -> ComfyUIClient:
        if url not in self._probes:
            self._probes[url] = ComfyUIClient(url)
        return self._probes[url]

    async def workers_comfyui_view(self) -> list[bool]:
        """Every running worker's instances, up or down, as they last told; forgets the long silent."""
        now = now_ms()
        fresh_ms = max(3 * self.ops_interval_s, 15) * 1000
        views = await self.redis.hgetall(COMFYUI_VIEW)
        up, stale = [], []
        for field, value in views.items():
            flag, _, seen = value.decode().partition(":")
            age = now - int(seen or 0)
            if age <= fresh_ms:
                up.append(flag == "1")
            elif age > VIEW_KEEP_S * 1000:
                stale.append(field)
        if stale:
            await self.redis.hdel(COMFYUI_VIEW, *stale)
        return up

    async def evaluate_alerts(self) -> None:
        up = await self.workers_comfyui_view()
        numbers = self.collector.numbers or await metrics.read_queue_numbers(self.redis, self.streams)
        reading = alerts.Reading(
            dead_added=await alerts.read_dead_added(self.redis, self.streams.dead_stream),
            comfyui_up=up,
            oldest_waiting_s=numbers.oldest_waiting_s,
            bot_errors=await alerts.read_bot_errors(self.redis),
            bot_error_traces=await alerts.read_bot_error_traces(self.redis),
            data_lost=await alerts.read_data_lost(self.redis),
        )
        await self.alerts.evaluate(reading)  # type: ignore[union-attr]


async def run_ops_until(ops: Ops, stop: asyncio.Event) -> None:
    """`ops.run(stop)` that never raises into the caller: a process without ops is still a process."""
    try:
        await ops.run(stop)
    except Exception:  # noqa: BLE001 - e.g. METRICS_PORT already in use: say so, keep serving
        log.exception("metrics/health/alerts stopped")
