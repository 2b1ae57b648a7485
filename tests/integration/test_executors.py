"""The executor seam: EXECUTOR=noop runs the queue alone; ComfyUI gets the stored bytes as they are."""

from __future__ import annotations

import io

from PIL import Image

from backend import images
from backend.replies import LoopbackReply
from backend.tasks import Task
from tests.support.pipeline import running_pipeline
from tests.support.senders import RecordingSender

REPLY = LoopbackReply()


async def test_noop_executor_hands_the_input_back_without_comfyui(settings, photo_bytes, comfy_fake):
    settings = settings.model_copy(update={"executor": "noop"})
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        submitted = [
            await services.intake.submit(photo_bytes, mode="person", reply=REPLY, user=f"test:{n}") for n in range(5)
        ]
        results = await sender.wait_for_results(5)
        assert {r.task_id for r in results} == {s.task_id for s in submitted}
        assert all(r.status == "ok" and r.output == r.input for r in results)
        assert (await services.admin.status()).running == 0
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


async def test_events_emitted_together_go_out_in_one_pipeline_newest_progress_kept(redis, settings):
    from backend.event_buffer import EventBuffer
    from backend.tasks import Event

    buffer = EventBuffer(redis, settings.events_stream, maxlen=1000)
    reply = LoopbackReply()
    buffer.emit(Event("a" * 32, "started", reply))
    for percent in (10, 20, 30):
        buffer.emit(Event("a" * 32, "progress", reply, percent=percent))
    buffer.emit(Event("b" * 32, "started", reply))
    await buffer.flush()
    written = [Event.decode(fields) for _, fields in await redis.xrange(settings.events_stream)]
    assert [(e.task_id[0], e.state, e.percent) for e in written] == [
        ("a", "started", 0),
        ("a", "progress", 30),
        ("b", "started", 0),
    ]
    await redis.aclose()
    buffer.emit(Event("c" * 32, "started", reply))  # Redis gone: dropped quietly, nothing raised
    await buffer.flush()
