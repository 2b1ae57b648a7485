"""A worker killed with -9 at each point of a task's life, and one stopped with SIGTERM mid-task."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time

import pytest

from backend.publishing import PUBLISH_SCRIPT
from backend.settings import Settings
from tests.chaos.ledger import assert_clean

LEASE_S = Settings.model_fields["consumer_lease_s"].default  # the consumer lease at default settings


async def kill_owner_when(stack, sub, ledger, event: str) -> str:
    """kill -9 the worker holding the photo's task during its upload (held there until the kill) or
    while ComfyUI runs it. Uploads carry no task id: for "upload" the photo must be alone in flight."""
    if event == "upload":
        arrived, release = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            if not arrived.is_set():
                arrived.set()
                await release.wait()

        stack.on_upload = hold
        await asyncio.wait_for(arrived.wait(), 60)
        task_id = (await stack.task_ids())[sub.chat_id][0]
    else:
        release = None

        async def running_mine() -> str | None:
            task = stack.running_task()
            return task if task in (await stack.task_ids()).get(sub.chat_id, []) else None

        task_id = await stack.wait_for(running_mine, timeout=60, step=0.02)
    owner = await stack.owner_of(task_id)
    component = stack.component_named(owner)
    ledger.fault()
    await stack.kill(component.name)
    ledger.note(f"killed {component.name} ({owner}) at {event}")
    if release is not None:
        release.set()
        stack.on_upload = None
    return task_id


async def watch_takeover(stack, ledger, task_id: str, killed: str) -> None:
    """Detected: the task's entry leaves the killed consumer (taken over, or acknowledged)."""
    while await stack.owner_of(task_id) == killed:
        await asyncio.sleep(0.1)
    ledger.detected()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("moment", ["upload", "prompt"])
async def test_kill9_worker_mid_task(chaos, ledger, moment):
    """Two workers; the one holding a photo dies during its upload / while ComfyUI runs it. Small
    MIN_IDLE_MS: the point here is that nothing is lost or posted twice (timing at defaults: below)."""
    async with chaos(env={"MIN_IDLE_MS": "4000"}, comfy_delay_s=1.0) as stack:
        await stack.start_default(workers=2)
        target = await stack.send_telegram_photo()
        task_id = await kill_owner_when(stack, target, ledger, moment)
        others = await stack.send_telegram_photos(3)
        killed = ledger.notes[-1].split("(")[1].split(")")[0]
        await watch_takeover(stack, ledger, task_id, killed)
        assert await stack.wait_answered([target, *others], timeout=90), stack.logs()
        ledger.recovered()
        await stack.settle()
        await stack.fill_ledger()
    assert_clean(ledger)
    assert ledger.delivered == 4


@pytest.mark.timeout(200)
async def test_kill9_worker_during_comfyui_run_at_default_settings(chaos, ledger):
    """The ledger's time-to-resume: default MIN_IDLE_MS and lease. Two workers; the one running a photo
    in ComfyUI is killed; the other must take the photo over within the lease time, not after a minute."""
    async with chaos(
        env={
            "BLOCK_MS": "2000",
            "RETRY_BACKOFF_S": "1",
            "RETRY_BACKOFF_MAX_S": "30",
            "BREAKER_PROBE_MAX_S": "15",
            "COMFYUI_QUIET_POLL_S": "5",
        },
        comfy_delay_s=3,
    ) as stack:
        await stack.start_default(workers=2)
        target = await stack.send_telegram_photo()
        task_id = await kill_owner_when(stack, target, ledger, "prompt")
        killed = ledger.notes[-1].split("(")[1].split(")")[0]
        await watch_takeover(stack, ledger, task_id, killed)
        ledger.note(f"resumed elsewhere {ledger.detect_s} s after the kill (lease {LEASE_S} s)")
        assert await stack.wait_answered([target], timeout=60), stack.logs()
        ledger.recovered()
        await stack.settle()
        await stack.fill_ledger()
    assert_clean(ledger)
    assert ledger.detect_s is not None and ledger.detect_s <= LEASE_S + 5, ledger


@pytest.mark.timeout(150)
async def test_kill9_worker_between_result_write_and_xack(chaos, ledger):
    """The worker's link to Redis freezes right after the script call that writes the result (and
    acknowledges the task); it is killed before it hears back. The next worker must not run the photo
    again, the chat gets it once."""
    async with chaos(env={"MIN_IDLE_MS": "4000"}) as stack:
        proxy = await stack.proxy("worker-redis", stack.redis_server.port)
        await asyncio.gather(
            stack.spawn("worker1", "worker", env={"REDIS_URL": proxy.url("redis", "/0")}),
            stack.spawn("notifier", "notifier"),
            stack.spawn("telegram", "telegram"),
        )
        frozen = proxy.freeze_after(hashlib.sha1(PUBLISH_SCRIPT.encode()).hexdigest().encode())
        target = await stack.send_telegram_photo()
        await asyncio.wait_for(frozen.wait(), 60)
        ledger.fault()
        await stack.kill("worker1")
        await stack.spawn("worker2", "worker")
        task_id = (await stack.task_ids())[target.chat_id][0]
        while await stack.owner_of(task_id) not in (None,):
            await asyncio.sleep(0.1)
        ledger.detected()
        assert await stack.wait_answered([target], timeout=90), stack.logs()
        ledger.recovered()
        await stack.settle(extra_s=2)
        await stack.fill_ledger()
    assert_clean(ledger)
    assert ledger.reruns == 0, ledger


@pytest.mark.timeout(150)
async def test_sigterm_worker_mid_task(chaos, ledger):
    """SIGTERM with three photos in flight: the worker exits within its grace time and the photos
    it held are finished or handed back, then delivered once by the next worker."""
    grace = 10
    async with chaos(env={"MIN_IDLE_MS": "4000", "SHUTDOWN_GRACE_S": str(grace)}, comfy_delay_s=1.0) as stack:
        await stack.start_default(workers=1)
        subs = await stack.send_telegram_photos(3)
        await stack.wait_for(lambda: len(stack.comfy.prompts) >= 2, timeout=60)
        ledger.fault()
        started = time.monotonic()
        rc = await stack.kill("worker1", signal.SIGTERM, timeout=grace + 20)
        exit_s = round(time.monotonic() - started, 1)
        ledger.note(f"worker exited rc {rc} {exit_s} s after SIGTERM (grace {grace} s)")
        await stack.spawn("worker2", "worker")
        ledger.detected()
        assert await stack.wait_answered(subs, timeout=90), stack.logs()
        ledger.recovered()
        await stack.settle()
        await stack.fill_ledger()
    assert_clean(ledger)
    assert rc == 0 and exit_s <= grace + 5, ledger
