"""The executor seam: EXECUTOR=noop runs the queue alone; ComfyUI gets the stored bytes as they are."""

from __future__ import annotations

import io

from PIL import Image

from backend import images
from backend.tasks import Task
from tests.support.pipeline import running_pipeline
from tests.support.senders import RecordingSender

REPLY = {"platform": "test"}


async def test_noop_executor_hands_the_input_back_without_comfyui(settings, photo_bytes, comfy_fake):
    settings = settings.model_copy(update={"executor": "noop"})
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        submitted = [await services.intake.submit(photo_bytes, mode="person", reply=REPLY, user=f"test:{n}")
                     for n in range(5)]
        results = await sender.wait_for_results(5)
        assert {r.task_id for r in results} == {s.task_id for s in submitted}
        assert all(r.status == "ok" and r.output == r.input for r in results)
        assert (await services.admin.status())["running"] == 0
    assert not [path for method, path in comfy_fake.requests if path.endswith("/prompt")]


async def test_comfyui_gets_the_stored_jpeg_as_sent_under_its_digest(settings, photo_bytes, comfy_fake):
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        await services.intake.submit(photo_bytes, mode="person", reply=REPLY, user="test:1")
        [result] = await sender.wait_for_results(1)
        assert result.status == "ok"
        [(_, fields)] = await services.redis.xrange(settings.tasks_stream)
        task = Task.decode(fields)
        stored = await services.blobs.get(task.input)
        assert task.digest == images.content_digest(stored)
        assert stored.startswith(b"\xff\xd8") and len(stored) <= len(photo_bytes)
        uploads = {path: data for (kind, path), data in comfy_fake.files.files.items() if kind == "input"}
        [(name, uploaded)] = uploads.items()
        assert name.endswith(".jpg") and uploaded == stored
        output = Image.open(io.BytesIO(await services.blobs.get(result.output)))
        assert output.format == "PNG" and "prompt" not in output.info
