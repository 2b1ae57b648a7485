"""Prometheus metrics: every name prefixed `repairbot_`, units in the names, bounded labels.

Instrumented code calls the small named helpers at the bottom (`task_started(mode)`, ...), so a
worker or notifier line stays one call and the metric's name and labels live only here. Label values
are clamped to known sets (modes from the workflows, error codes from the text catalog, platforms),
so a bad record can never create a new time series.

Queue-wide numbers are not counted per process: one collector process at a time (a lease, see
`backend.ops`) reads them with the constant-time commands `repairbot status` uses (XINFO GROUPS, the
XPENDING summary, XLEN, one XRANGE ... COUNT 1) and exports them; the others export none, so a
sum() over pods never double counts.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from redis.asyncio import Redis

from backend import keys
from backend.admin import group_info
from backend.errors import Refused
from backend.stream_names import StreamNames
from backend.tasks import now_ms
from backend.texts import CATALOG

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only double the scrape for a dashboard that never reads them
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(namespace="repairbot", registry=REGISTRY)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
PLATFORMS = ("telegram", "discord", "cli")
RUN_BUCKETS_S = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
END_TO_END_BUCKETS_S = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
WAIT_BUCKETS_S = (0.005, 0.05, 0.25, 1, 2.5, 5, 10, 30, 60, 300)

_known_modes: set[str] = set()


def known_modes(modes: Iterable[str]) -> None:
    """Tell the metrics which modes exist (the workflow manifest); anything else is labelled `other`."""
    _known_modes.update(modes)


@functools.lru_cache(maxsize=4096)
def _child(metric: Any, *labels: str) -> Any:
    """A metric's child for these label values, looked up once: `labels()` takes a lock and builds its
    key on every call, a few microseconds on each task's path. The labels are bounded, so is this."""
    return metric.labels(*labels)


def _mode(mode: str) -> str:
    return mode if mode in _known_modes else OTHER


def _code(code: str) -> str:
    return code if code in CATALOG["en"] else OTHER


def _platform(platform: str) -> str:
    return platform if platform in PLATFORMS else OTHER


# --- tasks (worker) -----------------------------------------------------------------------------
TASKS_STARTED = Counter("repairbot_tasks_started_total", "Tasks a worker began to run.", ["mode"], registry=REGISTRY)
TASKS_SUCCEEDED = Counter(
    "repairbot_tasks_succeeded_total", "Tasks that ended with an image.", ["mode"], registry=REGISTRY
)
TASKS_FAILED = Counter(
    "repairbot_tasks_failed_total",
    "Tasks that ended failed, by stable error code.",
    ["mode", "code"],
    registry=REGISTRY,
)
TASKS_RETRIED = Counter(
    "repairbot_tasks_retried_total", "Transient ComfyUI errors a task was retried after.", ["mode"], registry=REGISTRY
)
TASKS_CANCELLED = Counter(
    "repairbot_tasks_cancelled_total", "Tasks cancelled by their user or an admin.", ["mode"], registry=REGISTRY
)
TASKS_DEAD_LETTERED = Counter(
    "repairbot_tasks_dead_lettered_total",
    "Task entries moved to the dead-letter stream (malformed, or too many deliveries).",
    ["mode"],
    registry=REGISTRY,
)
TASK_RUN_SECONDS = Histogram(
    "repairbot_task_run_seconds",
    "Time a successful task ran in ComfyUI.",
    ["mode"],
    buckets=RUN_BUCKETS_S,
    registry=REGISTRY,
)
TASK_END_TO_END_SECONDS = Histogram(
    "repairbot_task_end_to_end_seconds",
    "From submission to the finished result being written, any status.",
    ["mode"],
    buckets=END_TO_END_BUCKETS_S,
    registry=REGISTRY,
)
GPU_SLOT_WAIT_SECONDS = Histogram(
    "repairbot_gpu_slot_wait_seconds",
    "Time a task in hand waited for a free ComfyUI slot.",
    buckets=WAIT_BUCKETS_S,
    registry=REGISTRY,
)

# --- ComfyUI, as this worker sees it ---------------------------------------------------------------
COMFYUI_UP = Gauge(
    "repairbot_comfyui_up",
    "1 when this worker sends tasks to the instance, 0 while it is down.",
    ["instance"],
    registry=REGISTRY,
)
COMFYUI_QUEUE = Gauge(
    "repairbot_comfyui_queue_prompts", "Prompts in the instance's own queue.", ["instance", "state"], registry=REGISTRY
)

# --- notifier ----------------------------------------------------------------------------------
SENDS = Counter(
    "repairbot_notifier_sends_total",
    "Results handed to a platform: delivered, dead_lettered (undeliverable) or left_pending.",
    ["platform", "outcome"],
    registry=REGISTRY,
)
SEND_RETRIES = Counter(
    "repairbot_notifier_send_retries_total", "Sends tried again after an error.", ["platform"], registry=REGISTRY
)
RATE_LIMITED = Counter(
    "repairbot_notifier_rate_limited_total",
    "Sends the platform asked to retry after a while.",
    ["platform"],
    registry=REGISTRY,
)
DELIVERY_SECONDS = Histogram(
    "repairbot_result_delivery_seconds",
    "From the result being written to it being sent.",
    ["platform"],
    buckets=WAIT_BUCKETS_S,
    registry=REGISTRY,
)

# --- intake ------------------------------------------------------------------------------------
INTAKE_ACCEPTED = Counter("repairbot_intake_accepted_total", "Photos queued.", ["platform", "mode"], registry=REGISTRY)
INTAKE_REFUSED = Counter(
    "repairbot_intake_refused_total", "Photos refused at intake, by reason.", ["reason"], registry=REGISTRY
)

# --- alerts and retention ------------------------------------------------------------------------
ALERTS_SENT = Counter("repairbot_alerts_sent_total", "Alerts sent to admin chats.", ["alert"], registry=REGISTRY)
DEAD_LETTERS_TRIMMED = Counter(
    "repairbot_dead_letters_trimmed_total", "Dead letters removed by retention (age or length).", registry=REGISTRY
)
BLOBS_SWEPT = Counter(
    "repairbot_blobs_swept_total", "Expired blob files removed from the filesystem store.", registry=REGISTRY
)


# --- one-line helpers for the instrumented code -----------------------------------------------------
def task_started(mode: str) -> None:
    _child(TASKS_STARTED, _mode(mode)).inc()


def task_retried(mode: str) -> None:
    _child(TASKS_RETRIED, _mode(mode)).inc()


def task_finished(mode: str, status: str, code: str, *, run_ms: int, queued_ms: int) -> None:
    """One finished task: its outcome counter, its run time (when ok) and its end-to-end time."""
    label = _mode(mode)
    if status == "ok":
        _child(TASKS_SUCCEEDED, label).inc()
        _child(TASK_RUN_SECONDS, label).observe(run_ms / 1000)
    elif status == "cancelled":
        _child(TASKS_CANCELLED, label).inc()
    else:
        _child(TASKS_FAILED, label, _code(code)).inc()
    _child(TASK_END_TO_END_SECONDS, label).observe((run_ms + queued_ms) / 1000)


def task_dead_lettered(mode: str) -> None:
    _child(TASKS_DEAD_LETTERED, _mode(mode)).inc()


def gpu_slot_waited(seconds: float) -> None:
    GPU_SLOT_WAIT_SECONDS.observe(seconds)


def send_delivered(platform: str, finished_at_ms: int) -> None:
    _child(SENDS, _platform(platform), "delivered").inc()
    _child(DELIVERY_SECONDS, _platform(platform)).observe(max(0, now_ms() - finished_at_ms) / 1000)


def send_ended(platform: str, outcome: str) -> None:
    """A send that did not deliver: `dead_lettered` or `left_pending`."""
    _child(SENDS, _platform(platform), outcome).inc()


def send_retried(platform: str, *, rate_limited: bool) -> None:
    _child(SEND_RETRIES, _platform(platform)).inc()
    if rate_limited:
        _child(RATE_LIMITED, _platform(platform)).inc()


def intake_accepted(platform: str, mode: str) -> None:
    _child(INTAKE_ACCEPTED, _platform(platform), _mode(mode)).inc()


def intake_refused(reason: str) -> None:
    _child(INTAKE_REFUSED, _code(reason)).inc()


def comfyui_seen(instance: str, up: bool, running: int = 0, pending: int = 0) -> None:
    _child(COMFYUI_UP, instance).set(1 if up else 0)
    _child(COMFYUI_QUEUE, instance, "running").set(running)
    _child(COMFYUI_QUEUE, instance, "pending").set(pending)


def scrape() -> bytes:
    """The text exposition of this process's metrics (what GET /metrics returns)."""
    return generate_latest(REGISTRY)


# --- queue-wide numbers ---------------------------------------------------------------------------
@dataclass
class QueueNumbers:
    """What the collector process exports; ages in seconds."""

    streams: dict[str, int] = field(default_factory=dict)  # stream -> XLEN
    groups: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> lag, pending, oldest_pending_s
    oldest_waiting_s: float = 0.0
    depth: int = 0  # tasks waiting or running: the workers' lag + pending
    results_backlog: int = 0  # results still to send: the notifiers' lag + pending
    paused: bool = False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _age_s(entry_id: Any, now: int) -> float:
    return max(0, now - int(_text(entry_id).split("-")[0])) / 1000


async def read_queue_numbers(redis: Redis, streams: StreamNames) -> QueueNumbers:
    """Constant-time reads (per stream: XLEN, XINFO GROUPS, XPENDING summary, XRANGE COUNT 1)."""
    numbers = QueueNumbers()
    now = now_ms()
    for stream in (streams.tasks_stream, streams.results_stream, streams.dead_stream):
        numbers.streams[stream] = int(await redis.xlen(stream))
    for stream, group in (
        (streams.tasks_stream, streams.workers_group),
        (streams.results_stream, streams.notifiers_group),
    ):
        info = await group_info(redis, stream, group)
        if info is None:
            numbers.groups[group] = {"lag": numbers.streams[stream], "pending": 0, "oldest_pending_s": 0}
            continue
        lag = info.get("lag")
        pending = int(info.get("pending") or 0)
        oldest = 0.0
        if pending:
            summary = await redis.xpending(stream, group)
            if summary.get("min"):
                oldest = _age_s(summary["min"], now)
        numbers.groups[group] = {
            "lag": int(lag if lag is not None else numbers.streams[stream]),
            "pending": pending,
            "oldest_pending_s": oldest,
        }
        if stream == streams.tasks_stream:
            last = _text(info.get("last-delivered-id") or "0-0")
            first_waiting = await redis.xrange(stream, min=f"({last}", max="+", count=1)
            if first_waiting:
                numbers.oldest_waiting_s = _age_s(first_waiting[0][0], now)
    workers, notifiers = numbers.groups[streams.workers_group], numbers.groups[streams.notifiers_group]
    numbers.depth = int(workers["lag"] + workers["pending"])
    numbers.results_backlog = int(notifiers["lag"] + notifiers["pending"])
    numbers.paused = bool(await redis.exists(keys.PAUSED))
    return numbers


class QueueCollector:
    """Exports the latest QueueNumbers, or nothing while this process is not the collector.

    :param dead_stream: the stream whose length is exported as the dead letters' count
    """

    def __init__(self, *, dead_stream: str = "photo_repair_dead"):
        self.dead_stream = dead_stream
        self.numbers: QueueNumbers | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        numbers = self.numbers
        if numbers is None:
            return []
        stream_len = GaugeMetricFamily("repairbot_stream_length_entries", "XLEN of each stream.", labels=["stream"])
        for stream, length in numbers.streams.items():
            stream_len.add_metric([stream], length)
        lag = GaugeMetricFamily(
            "repairbot_group_lag_entries", "Entries not yet delivered to the group.", labels=["group"]
        )
        pending = GaugeMetricFamily(
            "repairbot_group_pending_entries", "Entries delivered but not acknowledged.", labels=["group"]
        )
        oldest = GaugeMetricFamily(
            "repairbot_group_oldest_pending_age_seconds",
            "Age of the oldest unacknowledged entry of the group.",
            labels=["group"],
        )
        for group, values in numbers.groups.items():
            lag.add_metric([group], values["lag"])
            pending.add_metric([group], values["pending"])
            oldest.add_metric([group], values["oldest_pending_s"])
        return [
            stream_len,
            lag,
            pending,
            oldest,
            GaugeMetricFamily(
                "repairbot_queue_depth_tasks", "Tasks waiting or running (workers' lag + pending).", value=numbers.depth
            ),
            GaugeMetricFamily(
                "repairbot_queue_oldest_waiting_age_seconds",
                "Age of the oldest task no worker has taken yet.",
                value=numbers.oldest_waiting_s,
            ),
            GaugeMetricFamily(
                "repairbot_dead_letters_entries",
                "Entries in the dead-letter stream.",
                value=numbers.streams.get(self.dead_stream, 0),
            ),
            GaugeMetricFamily(
                "repairbot_results_backlog_entries",
                "Results still to send (notifiers' lag + pending).",
                value=numbers.results_backlog,
            ),
            GaugeMetricFamily("repairbot_paused", "1 while the queue is paused.", value=1 if numbers.paused else 0),
        ]

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []  # the families come and go with the lease


def _count_refusal(exc: Refused) -> None:
    if not getattr(exc, "counted", False):
        exc.counted = True  # type: ignore[attr-defined]
        intake_refused(exc.code)


def counting_refusals(method: Any) -> Any:
    """Decorates an intake method: each Refused it raises is counted once, nested calls too."""
    if not inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        def checked(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except Refused as exc:
                _count_refusal(exc)
                raise

        return checked

    @functools.wraps(method)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except Refused as exc:
            _count_refusal(exc)
            raise

    return wrapped
