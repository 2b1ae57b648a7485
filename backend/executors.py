"""What runs a task once the worker has read and pre-checked it: ComfyUI, or nothing at all.

The worker owns the queue (reading, pre-checks, the result, XACK, dead letters); an executor owns
the work in between and says how many tasks it can hold at once. `EXECUTOR=comfyui` (the default)
runs the mode's workflow on the ComfyUI instances; `EXECUTOR=noop` hands the input back as the
output at once, so benchmarks and tests measure the queue layer alone.

ComfyUI: each instance gets `worker_concurrency + prefetch` slots, so while one prompt runs on the
GPU the next ones are already uploaded and queued inside ComfyUI. Transient ComfyUI errors are
retried with backoff; an instance that keeps failing, or stops answering, is taken out of rotation
(the circuit breaker) and probed until it is back, and its capacity drops to 0 meanwhile, so tasks
wait in the stream instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from redis.asyncio import Redis

from backend import images, keys, metrics, stale_model
from backend.backoff import Backoff, wait_event
from backend.blobs import BlobStore, BlobTooLarge
from backend.errors import HandedBack, PermanentTaskError, Refused, TransientTaskError
from backend.event_buffer import EventBuffer
from backend.redis_conn import REDIS_DOWN
from backend.task_handle import TaskState
from backend.tasks import Event, Task

if TYPE_CHECKING:
    from backend.workflows import Mode

log = logging.getLogger(__name__)

PROGRESS_MIN_STEP = 5
BREAKER_THRESHOLD = 3  # transient errors in a row that take an instance out of rotation
CANCEL_POLL_S = 0.5
NOOP_SLOTS = 256
# Below this many bytes a digest check or a PNG chunk rewrite takes well under a millisecond: it
# runs inline, since a hop to a thread and back costs about as much as the work itself.
INLINE_BYTES = 1_000_000


@dataclass(frozen=True)
class Execution:
    """What an executor hands back: the output blob and how long the work itself took."""

    output: str
    run_ms: int


class ComfyUI(Protocol):
    """What the executor needs of one ComfyUI instance: backend.comfyui.ComfyUIClient, or a test's own."""

    base_url: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def health(self) -> bool: ...

    async def run(
        self,
        workflow_for: Callable[[str], dict[str, Any]],
        data: bytes,
        upload_name: str,
        output_node: str,
        *,
        prompt_id: str,
        deadline: float,
        run_timeout_s: float | None = None,
        on_progress: Callable[[int], Any] | None = None,
        on_queued: Callable[[], Any] | None = None,
        on_started: Callable[[], Any] | None = None,
        socket_output: bool = True,
    ) -> tuple[bytes | memoryview, int]: ...

    async def interrupt(self, prompt_id: str) -> None: ...

    async def delete_queued(self, prompt_id: str) -> None: ...

    async def take_back_waiting(self) -> list[str]: ...

    async def free(self) -> None: ...


class Executor(Protocol):
    """Runs one task's work; raises `Refused` or a `RepairError` (transient ones already retried)."""

    def capacity(self) -> int:
        """Tasks it can hold at once right now (0 while it can take none: the worker reads nothing)."""
        ...

    async def start(self) -> None: ...

    def stop(self) -> None:
        """The worker is shutting down: work that is only waiting raises HandedBack from now on."""
        ...

    async def close(self) -> None: ...

    async def execute(self, task: Task, mode: Mode) -> Execution: ...


class NoopExecutor:
    """Does nothing: the output is the input blob itself, so a task costs only its queue work."""

    def capacity(self) -> int:
        return NOOP_SLOTS

    async def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def execute(self, task: Task, mode: Mode) -> Execution:
        return Execution(task.input, 0)


@dataclass
class Instance:
    """One ComfyUI instance as the worker sees it: its client, free slots and health."""

    client: ComfyUI
    slots: int
    busy: int = 0
    healthy: bool = False
    failures: int = 0  # transient errors in a row, whatever the task
    probing: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def free(self) -> int:
        return self.slots - self.busy if self.healthy else 0


class ComfyUIExecutor:
    """Runs a mode's workflow on the ComfyUI instances at `comfyui_urls`.

    :param clients: ComfyUI clients to use instead of one per URL (tests)
    :param on_capacity: called whenever capacity grows
    :param comfyui_urls: the instances, one client each
    :param comfyui_quiet_poll_s: how long a quiet WebSocket waits before the history is polled
    :param slots_per_instance: prompts one instance holds at once (running plus prefetched)
    :param events_stream: where progress events go
    :param events_maxlen: the events stream is trimmed to about this many entries
    :param max_image_bytes: an input or output larger than this is refused
    :param max_image_pixels: an input is shrunk to this many pixels; an output may have four times as many
    :param retry_backoff_s: the first pause after a transient failure
    :param retry_backoff_max_s: the longest pause between retries
    :param breaker_probe_max_s: the longest pause between probes of an instance out of rotation
    :param transient_retries: transient failures of one task before it fails
    :param prompt_queue_timeout_s: how long a prompt may wait inside ComfyUI before it starts
    :param task_timeout_s: how long a started prompt may run
    :param blob_ttl_s: how long a task's bookkeeping is kept
    """

    def __init__(
        self,
        redis: Redis,
        blobs: BlobStore,
        *,
        clients: list[ComfyUI] | None = None,
        on_capacity: Callable[[], None] = lambda: None,
        comfyui_urls: Sequence[str] = ("http://127.0.0.1:8188",),
        comfyui_quiet_poll_s: float = 5.0,
        slots_per_instance: int = 3,
        events_stream: str = "photo_repair_events",
        events_maxlen: int = 5000,
        max_image_bytes: int = 20 * 1024 * 1024,
        max_image_pixels: int = 40_000_000,
        retry_backoff_s: float = 1.0,
        retry_backoff_max_s: float = 30.0,
        breaker_probe_max_s: float = 15.0,
        transient_retries: int = 5,
        prompt_queue_timeout_s: float = 1800.0,
        task_timeout_s: float = 600.0,
        blob_ttl_s: int = 24 * 3600,
    ):
        from backend.comfyui import ComfyUIClient

        self.redis = redis
        self.events = EventBuffer(redis, events_stream, maxlen=events_maxlen)
        self.blobs = blobs
        self.on_capacity = on_capacity
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self.retry_backoff_s = retry_backoff_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self.breaker_probe_max_s = breaker_probe_max_s
        self.transient_retries = transient_retries
        self.prompt_queue_timeout_s = prompt_queue_timeout_s
        self.task_timeout_s = task_timeout_s
        self.blob_ttl_s = blob_ttl_s
        made = clients or [ComfyUIClient(url, quiet_poll_s=comfyui_quiet_poll_s) for url in comfyui_urls]
        self.instances = [Instance(client, slots_per_instance) for client in made]
        self._freed = asyncio.Event()
        self._closing = asyncio.Event()
        self._stopping = asyncio.Event()

    def capacity(self) -> int:
        return sum(i.slots for i in self.instances if i.healthy)

    async def start(self) -> None:
        for instance in self.instances:
            await instance.client.start()
        results = await asyncio.gather(*(i.client.health() for i in self.instances))
        for instance, healthy in zip(self.instances, results):
            if healthy:
                instance.healthy = True
            else:
                self._mark_down(instance, "not reachable at start")

    def stop(self) -> None:
        """Tasks waiting for a slot or sleeping before a retry are handed back at once; running ones go on."""
        self._stopping.set()
        self._freed.set()

    async def close(self) -> None:
        self._closing.set()
        await self.events.flush()
        for instance in self.instances:
            if instance.probing:
                instance.probing.cancel()
            await instance.client.close()

    async def execute(self, task: Task, mode: Mode) -> Execution:
        """Run the task; a cancel is noticed at any point (waiting for a slot, uploading, queued, running)."""
        work = asyncio.create_task(self._execute(task, mode))
        watcher = asyncio.create_task(self._watch_cancel(task.task_id, work))
        try:
            return await work
        except asyncio.CancelledError:
            if watcher.done() and not watcher.cancelled() and watcher.result():
                raise PermanentTaskError("cancelled", detail="cancelled by the user") from None
            raise
        finally:
            watcher.cancel()
            if not work.done():
                work.cancel()  # its prompt is taken out of ComfyUI on the way out: let that finish
                await asyncio.wait([work], timeout=12)

    async def _execute(self, task: Task, mode: Mode) -> Execution:
        source = await self.blobs.get(task.input)
        if source is None:
            raise Refused("input_expired")
        checked = await _maybe_in_thread(
            images.recheck_input,
            source,
            size=len(source),
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
            digest=task.digest,
        )
        raw, run_ms = await self._run_with_retries(task, mode, checked)
        final = await _maybe_in_thread(images.finalize_output, raw, size=len(raw), max_pixels=self.max_image_pixels * 4)
        try:
            output_key = await self._store_output(final)
        except BlobTooLarge as exc:
            raise PermanentTaskError("output_invalid", detail=str(exc)) from None
        return Execution(output_key, run_ms)

    async def _store_output(self, data: images.Encoded) -> str:
        """The output is the costly part: while Redis is unreachable keep it and try again, don't re-run."""
        backoff = Backoff(self.retry_backoff_s, self.retry_backoff_max_s)
        while True:
            try:
                return await self.blobs.put("out", data)
            except REDIS_DOWN as exc:
                delay = backoff.next_delay()
                log.warning("output blob not stored yet (%s); keeping it, retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    # --- the circuit breaker ---------------------------------------------------------------------
    def _mark_down(self, instance: Instance, why: str) -> None:
        if instance.probing is not None and not instance.probing.done():
            return
        log.warning(
            "ComfyUI %s marked down (%s): no new tasks go there until it answers", instance.client.base_url, why
        )
        instance.healthy = False
        instance.probing = asyncio.create_task(self._probe_until_up(instance))

    async def _probe_until_up(self, instance: Instance) -> None:
        backoff = Backoff(self.retry_backoff_s, self.breaker_probe_max_s)
        while not self._closing.is_set():
            await wait_event(self._closing, backoff.next_delay())
            if self._closing.is_set():
                return
            if await instance.client.health():
                instance.healthy = True
                instance.failures = min(instance.failures, BREAKER_THRESHOLD - 1)  # half open: one more strike
                log.info("ComfyUI %s is back", instance.client.base_url)
                self._freed.set()
                self.on_capacity()
                return

    async def _acquire_instance(self) -> Instance:
        """The healthy instance with the most free slots; waits while none has one (not once stopping)."""
        waiting_since = time.monotonic()
        while True:
            self._freed.clear()
            candidates = [i for i in self.instances if i.free > 0]
            if candidates:
                best = max(candidates, key=lambda i: i.free)
                best.busy += 1
                metrics.gpu_slot_waited(time.monotonic() - waiting_since)
                return best
            if self._stopping.is_set():
                raise HandedBack()
            await wait_event(self._freed, 1.0)

    def _release_instance(self, instance: Instance) -> None:
        instance.busy -= 1
        self._freed.set()
        self.on_capacity()

    # --- one task --------------------------------------------------------------------------------
    async def _run_with_retries(self, task: Task, mode: Mode, data: bytes) -> tuple[bytes | memoryview, int]:
        """The output image and its run time in ms (ComfyUI's own, else our wall clock for the attempt).

        Transient errors are retried with backoff. They count against the task's budget only while
        the instance itself looks fine; an instance that is down (or keeps failing for every task) is
        taken out of rotation instead, and the task waits for one that works.
        """
        counted = tries = greys = 0
        backoff = Backoff(self.retry_backoff_s, self.retry_backoff_max_s)
        while True:
            tries += 1
            instance = await self._acquire_instance()
            try:
                result = await self._run_once(task, mode, data, instance, tries)
                instance.failures = 0
                stale, before, after = stale_model.grey_result_of_grey_input(mode, data, result[0])
                if not stale:
                    return result
                greys += 1
                if greys > 1:
                    raise stale_model.broken_model_error(mode, instance.client.base_url, before, after)
                log.warning(
                    "task %s: grey output from ComfyUI %s (stale model?); freeing it and retrying once",
                    task.task_id,
                    instance.client.base_url,
                )
                await stale_model.recover_instance(instance.client, "a grey result")
                continue
            except stale_model.PromptTakenBack:
                log.info("task %s: prompt taken back from a ComfyUI being freed; submitting it again", task.task_id)
                continue
            except TransientTaskError as exc:
                instance.failures += 1
                why = exc.detail or exc.code  # for the log: the root handler's filter removes secrets
                if instance.failures >= BREAKER_THRESHOLD or not await instance.client.health():
                    self._mark_down(instance, why)
                else:
                    counted += 1
                if counted >= self.transient_retries:
                    raise
                log.info("task %s: transient ComfyUI error (%s); retrying", task.task_id, why)
                metrics.task_retried(task.mode)
                await self._event(task, "retrying")
            except PermanentTaskError as exc:
                if exc.code == "comfyui_failed":
                    # A node that failed (DDColor with missing weights) stays broken in ComfyUI's cache and
                    # then "succeeds" with garbage: take our waiting prompts back, then /free (stale_model).
                    await stale_model.recover_instance(instance.client, "a node failure")
                    if stale_model.model_missing(exc.detail):
                        raise PermanentTaskError("model_unavailable", detail=exc.detail) from None
                raise
            finally:
                self._release_instance(instance)
            await wait_event(self._stopping, backoff.next_delay())

    async def _run_once(
        self, task: Task, mode: Mode, data: bytes, instance: Instance, attempt: int
    ) -> tuple[bytes | memoryview, int]:
        client = instance.client
        prompt_id = str(uuid.uuid4())
        upload_name = f"repairbot-{task.task_id}-{attempt}.{images.file_extension(data)}"  # slotted by the client
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.prompt_queue_timeout_s  # until ComfyUI starts it
        progress = _ProgressThrottle(lambda pct: self._event(task, "progress", pct))

        async def queued() -> None:
            """Where the task runs, for status and cancel: bookkeeping that must not stop the run."""
            with contextlib.suppress(*REDIS_DOWN):
                await record()

        async def record() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    keys.task(task.task_id),
                    mapping={"state": TaskState.IN_COMFYUI, "instance": client.base_url, "prompt_id": prompt_id},
                )
                pipe.expire(keys.task(task.task_id), self.blob_ttl_s)
                await pipe.execute()

        started = time.monotonic()
        try:
            image, comfy_ms = await client.run(
                lambda image_name: mode.build(image_name, task_id=task.task_id, params=task.params),
                data,
                upload_name,
                mode.output_node,
                prompt_id=prompt_id,
                deadline=deadline,
                run_timeout_s=self.task_timeout_s,
                on_progress=progress,
                on_queued=queued,
                on_started=lambda: self._event(task, "started"),
            )
            return image, comfy_ms or int((time.monotonic() - started) * 1000)
        except (asyncio.CancelledError, TransientTaskError):
            await self._abandon_prompt(client, prompt_id)  # cancelled, shut down, or given up on
            raise

    async def _watch_cancel(self, task_id: str, work: asyncio.Task[Any]) -> bool:
        """Poll the cancel flag for as long as the task's work goes on; on cancel, stop the work."""
        while not work.done():
            await asyncio.sleep(CANCEL_POLL_S)
            with contextlib.suppress(*REDIS_DOWN):  # a Redis hiccup must not end the watch
                if await self.redis.exists(keys.cancelled(task_id)):
                    work.cancel()
                    return True
        return False

    @staticmethod
    async def _abandon_prompt(client: ComfyUI, prompt_id: str) -> None:
        """Best effort: a waiting prompt is deleted from the queue, a running one interrupted."""
        for action in (client.delete_queued, client.interrupt):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(action(prompt_id), timeout=5)

    # --- progress ---------------------------------------------------------------------------------
    async def _event(self, task: Task, state: str, percent: int = 0) -> None:
        """Lossy by design, and batched with every other task's events (backend.event_buffer)."""
        self.events.emit(Event(task.task_id, state, task.reply, percent=percent))  # type: ignore[arg-type]


class _ProgressThrottle:
    """Turns ComfyUI progress into events, skipping steps smaller than PROGRESS_MIN_STEP percent."""

    def __init__(self, emit: Any):
        self.emit = emit
        self.last = 0

    async def __call__(self, percent: int) -> None:
        percent = max(0, min(100, int(percent)))
        if percent == 0:
            return  # nothing to show yet ("started" says it began)
        if percent - self.last >= PROGRESS_MIN_STEP or (percent == 100 and self.last != 100):
            self.last = percent
            await self.emit(percent)


async def _maybe_in_thread(function: Callable[..., Any], data: images.Encoded, *, size: int, **kwargs: Any) -> Any:
    """Run a CPU-bound image call inline when it is cheap, in a thread when it would stall the loop."""
    if size <= INLINE_BYTES:
        return function(data, **kwargs)
    return await asyncio.to_thread(function, data, **kwargs)
