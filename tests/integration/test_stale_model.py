"""No grey photo reported as success after a DDColor failure (issue 8's prefetch bug), end to end
against the fake, which keeps real ComfyUI's /free timing and per-node model state."""

from __future__ import annotations

import asyncio

from backend import stale_model
from backend.replies import LoopbackReply
from tests.support.pipeline import running_pipeline
from tests.support.senders import RecordingSender

REPLY = LoopbackReply()
CHECKPOINT = "ddcolor_modelscope.pth"  # what `person` uses by default


async def submit(services, photo: bytes, count: int) -> list[str]:
    return [
        (await services.intake.submit(photo, mode="person", reply=REPLY, user=f"test:{n}")).task_id
        for n in range(count)
    ]


async def test_prefetched_tasks_after_a_missing_checkpoint_never_succeed_grey(settings, photo_bytes, comfy_fake):
    comfy_fake.delay_s = 0.3  # so the second and third prompts are queued inside ComfyUI behind the first
    comfy_fake.missing_checkpoints = {CHECKPOINT}
    sender = RecordingSender()
    async with running_pipeline(settings.model_copy(update={"prefetch": 2}), {"test": sender}) as services:
        await submit(services, photo_bytes, 3)
        # The checkpoint comes back as soon as the worker reacted to the failure, and not before: on a
        # loaded machine (tests in parallel) that takes seconds, and the first prompt must fail.
        deadline = asyncio.get_running_loop().time() + 20
        while ("POST", "/free") not in comfy_fake.requests:
            assert asyncio.get_running_loop().time() < deadline, "the worker never freed ComfyUI"
            await asyncio.sleep(0.02)
        comfy_fake.missing_checkpoints = set()
        results = await sender.wait_for_results(3)
        outputs = {r.task_id: await services.blobs.get(r.output) for r in results if r.status == "ok"}
    # The prompt ComfyUI ran first fails; with prefetch 2 that is not always the first one submitted
    # (the worker's tasks upload concurrently), so any of them may be it.
    assert any(r.status == "failed" and r.error == "model_unavailable" for r in results)
    for result in results:
        if result.status == "ok":
            assert stale_model.chroma(outputs[result.task_id]) > 10, "a grey image reported as success"
        else:
            assert result.error == "model_unavailable"
            assert "other mode" not in result.message and "admins" in result.message
    assert ("POST", "/queue") in comfy_fake.requests  # the waiting prompts were taken back before /free


async def test_prefetched_tasks_run_again_and_colour_once_freed(settings, photo_bytes, comfy_fake):
    """One broken prompt, checkpoint there: the rest are taken back, ComfyUI freed, and they succeed."""
    comfy_fake.delay_s = 0.3
    comfy_fake.fail_next_runtime = "CUDA error: an illegal memory access was encountered"
    comfy_fake.executor.objects[("2", "DDColor_Colorize")] = {"checkpoint": CHECKPOINT, "loaded": False}
    sender = RecordingSender()
    async with running_pipeline(settings.model_copy(update={"prefetch": 2}), {"test": sender}) as services:
        await submit(services, photo_bytes, 3)
        results = await sender.wait_for_results(3)
        ok = [r for r in results if r.status == "ok"]
        for result in ok:
            assert stale_model.chroma(await services.blobs.get(result.output)) > 10
    assert [r.status for r in results].count("failed") == 1 and len(ok) == 2
    assert comfy_fake.executor.frees_applied >= 1


async def test_grey_output_is_retried_once_after_free(settings, photo_bytes, comfy_fake):
    """A node left stale by someone else (another worker, a restart mid-load): grey, /free, colour."""
    comfy_fake.executor.objects[("2", "DDColor_Colorize")] = {"checkpoint": CHECKPOINT, "loaded": False}
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        await submit(services, photo_bytes, 1)
        [result] = await sender.wait_for_results(1)
        assert result.status == "ok"
        assert stale_model.chroma(await services.blobs.get(result.output)) > 10
    assert sum(1 for r in comfy_fake.requests if r == ("POST", "/free")) == 1


async def test_grey_twice_fails_with_a_message_for_the_admin(settings, photo_bytes, comfy_fake, caplog):
    comfy_fake.broken_checkpoints = {CHECKPOINT}  # loads without error (strict=False) and colours nothing
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        await submit(services, photo_bytes, 1)
        [result] = await sender.wait_for_results(1)
    assert result.status == "failed" and result.error == "model_unavailable"
    assert "other mode" not in result.message
    assert any("doctor --probe" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    prompts = sum(1 for r in comfy_fake.requests if r == ("POST", "/prompt"))
    assert prompts == 2, "retried exactly once"
