"""The backend in-process against a real redis-server and the ComfyUI fake."""

import asyncio
import io

import pytest
from PIL import Image

from backend import keys
from backend.errors import Refused
from backend.replies import LoopbackReply
from backend.services import Services
from backend.tasks import Task
from tests.support.pipeline import running_pipeline
from tests.support.senders import RecordingSender, SendPermanent, SendRetry
from tests.support.workflows import workflows_with_broken_mode

REPLY = LoopbackReply()


def is_tinted(data: bytes) -> bool:
    """The fake's DDColor tints grey input: red above blue, and no ComfyUI metadata left."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and "prompt" not in image.info and "workflow" not in image.info
    r, g, b = image.convert("RGB").resize((8, 8)).getpixel((4, 4))
    return r > b


async def test_photo_is_colorized_and_delivered_once(settings, photo_bytes, comfy_fake):
    sender = RecordingSender()
    comfy_fake.delay_s = 0.3  # long enough to show "started": progress that comes after the result is dropped
    async with running_pipeline(settings, {"test": sender}) as services:
        submitted = await services.intake.submit(photo_bytes, mode="person", reply=REPLY, user="test:1")
        assert submitted.position >= 1
        [result] = await sender.wait_for_results(1)
        assert result.status == "ok" and result.task_id == submitted.task_id
        assert is_tinted(await services.blobs.get(result.output))
        assert result.mode == "person" and result.input
        for _ in range(200):  # marked delivered in the notifier's next batch, just after the send
            if await services.redis.exists(keys.delivered(result.task_id)):
                break
            await asyncio.sleep(0.01)
        assert await services.redis.exists(keys.delivered(result.task_id))
        assert not await services.redis.sismember(keys.user_active("test:1"), result.task_id)
        states = [e.state for e in sender.events if e.task_id == result.task_id]
        assert "started" in states
        status = await services.admin.status()
        assert status.queued == 0 and status.running == 0
        assert status.workers and status.comfyui[0].healthy is True
        await asyncio.sleep(1)
        assert len(sender.results) == 1, "delivered once"


async def test_validation_error_fails_once_without_retry_loop(settings, photo_bytes, comfy_fake, tmp_path):
    settings = settings.model_copy(update={"workflows_dir": workflows_with_broken_mode(tmp_path)})
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        await services.intake.submit(photo_bytes, mode="broken", reply=REPLY, user="test:1")
        [result] = await sender.wait_for_results(1)
        assert result.status == "failed" and result.error == "comfyui_rejected"
        assert "try another photo" in result.message
        await asyncio.sleep(1.0)
        assert len(sender.results) == 1
        assert sum(1 for method, path in comfy_fake.requests if path.endswith("/prompt") and method == "POST") == 1
        assert (await services.admin.status()).running == 0


async def test_runtime_error_gives_failed_result_with_message(settings, photo_bytes, comfy_fake):
    sender = RecordingSender()
    comfy_fake.fail_next_runtime = "CUDA out of memory"
    async with running_pipeline(settings, {"test": sender}) as services:
        await services.intake.submit(photo_bytes, mode="person", reply=REPLY, user="test:1")
        [result] = await sender.wait_for_results(1)
        assert result.status == "failed" and result.error == "comfyui_failed"
        assert "try again" in result.message
        await asyncio.sleep(0.5)
        assert len(sender.results) == 1
        assert (await services.admin.status()).running == 0


async def test_malformed_entry_is_dead_lettered_on_first_sight(settings):
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        await services.redis.xadd(
            settings.tasks_stream,
            {
                "v": "1",
                "task_id": "b" * 32,
                "mode": "person",
                "input": "/etc/passwd",
                "reply": '{"platform":"test"}',
                "user": "test:1",
                "submitted_at": "1",
            },
        )
        await services.redis.xadd(settings.tasks_stream, {"v": "7", "junk": "x"})
        [result] = await sender.wait_for_results(1)
        assert result.status == "failed" and result.error == "malformed_task"
        for _ in range(50):
            if await services.redis.xlen(settings.dead_stream) == 2:
                break
            await asyncio.sleep(0.1)
        letters = await services.admin.dead_letters()
        assert sorted(letter.fields["deliveries"] for letter in letters) == ["1", "1"]
        assert any("unknown schema version" in letter.reason for letter in letters)


async def test_stored_result_is_republished_not_rerun(settings, photo_bytes, comfy_fake):
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        submitted = await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:1")
        await sender.wait_for_results(1)
        prompts_before = len(comfy_fake.prompts)
        stored = await services.redis.hgetall(keys.result(submitted.task_id))
        # the same task delivered again (e.g. the worker died between result and XACK)
        entry = await services.redis.xrange(settings.tasks_stream)
        task_fields = (
            entry[0][1]
            if entry
            else Task(
                task_id=submitted.task_id, mode="preview", input=stored[b"input"].decode(), reply=REPLY, user="test:1"
            ).encode()
        )
        await services.redis.delete(keys.delivered(submitted.task_id))
        await services.redis.xadd(settings.tasks_stream, task_fields)
        await sender.wait_for_results(2)
        assert sender.results[1].task_id == submitted.task_id
        assert len(comfy_fake.prompts) == prompts_before


async def test_sender_retry_then_success_and_permanent_goes_dead(settings, photo_bytes):
    sender = RecordingSender()
    sender.fail_with, sender.fail_times = SendRetry("429", after_s=0.05), 2
    async with running_pipeline(settings, {"test": sender}) as services:
        await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:1")
        await sender.wait_for_results(1)
        assert sender.attempts == 3
        sender.fail_with, sender.fail_times = SendPermanent("bot was blocked"), 1
        await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:1")
        for _ in range(100):
            if await services.redis.xlen(settings.dead_stream):
                break
            await asyncio.sleep(0.1)
        [letter] = await services.admin.dead_letters()
        assert "bot was blocked" in letter.reason and letter.source == settings.results_stream


async def test_paused_intake_refuses(settings, photo_bytes):
    services = Services.create(settings)
    try:
        await services.admin.pause()
        with pytest.raises(Refused) as refused:
            await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:1")
        assert refused.value.code == "paused" and (await services.admin.status()).paused is True
        await services.admin.resume()
        assert (await services.admin.status()).paused is False
    finally:
        await services.close()


async def test_cancel_of_a_queued_task_skips_it(settings, photo_bytes, comfy_fake):
    services = Services.create(settings)
    try:
        submitted = await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:9")
        assert await services.admin.cancel(submitted.task_id, user="test:other") is False
        assert await services.admin.cancel(submitted.task_id, user="test:9") is True
    finally:
        await services.close()
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}):
        [result] = await sender.wait_for_results(1)
    assert result.status == "cancelled" and result.error == "cancelled"
    assert comfy_fake.prompts == {}


async def test_cancel_of_a_running_task_takes_it_out_of_comfyui(settings, photo_bytes, comfy_fake):
    comfy_fake.delay_s = 3
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        submitted = await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:9")
        for _ in range(100):
            state = await services.redis.hget(keys.task(submitted.task_id), "state")
            if state == b"in_comfyui":
                break
            await asyncio.sleep(0.05)
        prompt_id = (await services.redis.hget(keys.task(submitted.task_id), "prompt_id")).decode()
        assert await services.admin.cancel(submitted.task_id) is True
        [result] = await sender.wait_for_results(1)
        assert result.status == "cancelled"
        for _ in range(100):  # ComfyUI stops it at the next node boundary, as the real one does
            if prompt_id in comfy_fake.executor.history:
                break
            await asyncio.sleep(0.05)
    last_message = comfy_fake.executor.history[prompt_id]["status"]["messages"][-1][0]
    assert last_message == "execution_interrupted"


async def test_per_user_limits_and_queue_cap(settings, photo_bytes):
    """No worker runs here, so every accepted task stays queued."""
    settings = settings.model_copy(update={"user_max_active": 2, "user_max_per_hour": 3, "queue_cap": 4})
    services = Services.create(settings)
    try:
        intake = services.intake

        async def submit(user, **kw):
            return await intake.submit(photo_bytes, mode="preview", reply=REPLY, user=user, **kw)

        first = await submit("test:1")
        second = await submit("test:1")
        assert (first.position, second.position) == (1, 2)
        with pytest.raises(Refused) as refused:
            await submit("test:1")
        assert refused.value.code == "too_many_active" and "2 photos" in refused.value.user_message()
        assert await services.admin.cancel_user("test:1") == 2
        await services.redis.delete(keys.user_active("test:1"))  # as if the worker had finished them
        await submit("test:1")
        with pytest.raises(Refused) as refused:
            await submit("test:1")
        assert refused.value.code == "rate_limited"
        await submit("test:admin", exempt=True)
        with pytest.raises(Refused) as refused:
            await submit("test:2")
        assert refused.value.code == "queue_full"
        assert "busy" in refused.value.user_message()
    finally:
        await services.close()


async def test_a_burst_of_photos_cannot_slip_past_the_active_limit(settings, photo_bytes):
    settings = settings.model_copy(update={"user_max_active": 3})
    async with Services.open(settings) as services:
        outcomes = await asyncio.gather(
            *(services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:burst") for _ in range(8)),
            return_exceptions=True,
        )
        accepted = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, Refused)]
        assert len(accepted) == 3 and len(refused) == 5
        assert {r.code for r in refused} == {"too_many_active"}
        assert await services.redis.scard(keys.user_active("test:burst")) == 3


async def test_a_refused_photo_does_not_use_up_the_hourly_allowance(settings, photo_bytes):
    settings = settings.model_copy(update={"user_max_per_hour": 1})
    async with Services.open(settings) as services:
        with pytest.raises(Refused):
            await services.intake.submit(b"not an image", mode="preview", reply=REPLY, user="test:7")
        await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:7")
