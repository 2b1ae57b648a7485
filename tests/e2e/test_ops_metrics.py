"""`repairbot up` with METRICS_PORT: after a known workload through the ComfyUI fake and the Telegram
fake, /metrics holds exactly the expected names, labels and values; /readyz follows Redis and ComfyUI
going away and coming back."""

from __future__ import annotations

import asyncio

from backend import keys
from backend.replies import CliReply
from backend.services import Services
from backend.settings import Settings
from tests.fakes.telegram_api import FakeTelegram
from tests.support.ops import Up, clean_env, value
from tests.support.redis_server import RedisServer
from tests.telegram.conftest import ChatUser

CLI = CliReply()
OK, FAILED, CANCELLED = 3, 2, 1


async def result_of(services: Services, task_id: str, timeout: float = 30.0) -> dict:
    for _ in range(int(timeout * 20)):
        stored = await services.redis.hgetall(keys.result(task_id))
        if stored:
            return {k.decode(): v.decode() for k, v in stored.items()}
        await asyncio.sleep(0.05)
    raise AssertionError(f"no result for {task_id}")


async def wait_state(services: Services, task_id: str, state: str) -> None:
    for _ in range(600):
        if await services.redis.hget(keys.task(task_id), "state") == state.encode():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} never reached {state}")


async def test_metrics_match_a_known_workload(redis_url, comfy_fake, photo_bytes, tmp_path):
    telegram = await FakeTelegram().start()
    env = clean_env(
        REDIS_URL=redis_url,
        COMFYUI_URL=comfy_fake.url,
        TELEGRAM_BOT_TOKEN=telegram.token,
        TELEGRAM_API_BASE=telegram.api_base,
        TELEGRAM_FILE_BASE=telegram.file_base,
    )
    settings = Settings(_env_file=None, redis_url=redis_url, comfyui_url=comfy_fake.url)
    try:
        async with Up(tmp_path, env) as up, Services.open(settings) as services:
            await up.wait_status("/readyz", 200)
            for _ in range(OK):
                submitted = await services.intake.submit(photo_bytes, mode="person", reply=CLI, user="cli:ops")
                assert (await result_of(services, submitted.task_id))["status"] == "ok"
            for _ in range(FAILED):
                comfy_fake.fail_next_runtime = "CUDA out of memory"
                submitted = await services.intake.submit(photo_bytes, mode="building", reply=CLI, user="cli:ops")
                assert (await result_of(services, submitted.task_id))["error"] == "comfyui_failed"
            comfy_fake.delay_s = 30
            for _ in range(CANCELLED):
                submitted = await services.intake.submit(photo_bytes, mode="person", reply=CLI, user="cli:ops")
                await wait_state(services, submitted.task_id, "in_comfyui")
                assert await services.admin.cancel(submitted.task_id)
                assert (await result_of(services, submitted.task_id))["status"] == "cancelled"
            comfy_fake.delay_s = 0

            chat = ChatUser(telegram)
            await chat.send_photo(photo_bytes)  # through the bot: intake and a send in the `up` process
            await telegram.wait_call("sendPhoto", timeout=30)  # a small photo comes back as a photo alone
            await chat.send_document(b"this is not a picture", name="notes.jpg")
            await telegram.wait_for(
                lambda: any(
                    "doesn't look like a photo" in str(c.params.get("text", ""))
                    for c in telegram.calls_to("editMessageText")
                )
            )

            for _ in range(100):  # the delivered counter moves right after the send
                samples = await up.metrics()
                if value(samples, "repairbot_notifier_sends_total", platform="telegram", outcome="delivered"):
                    break
                await asyncio.sleep(0.1)
            for _ in range(100):  # queue gauges are refreshed every OPS_INTERVAL_S
                samples = await up.metrics()
                if (
                    value(samples, "repairbot_queue_depth_tasks") == 0
                    and value(samples, "repairbot_results_backlog_entries") == 0
                ):
                    break
                await asyncio.sleep(0.1)
    finally:
        await telegram.stop()

    person_tasks = OK + CANCELLED + 1  # + the Telegram photo
    assert value(samples, "repairbot_tasks_started_total", mode="person") == person_tasks
    assert value(samples, "repairbot_tasks_started_total", mode="building") == FAILED
    assert value(samples, "repairbot_tasks_succeeded_total", mode="person") == OK + 1
    assert value(samples, "repairbot_tasks_failed_total", mode="building", code="comfyui_failed") == FAILED
    assert value(samples, "repairbot_tasks_cancelled_total", mode="person") == CANCELLED
    assert value(samples, "repairbot_tasks_dead_lettered_total", mode="person") == 0
    assert value(samples, "repairbot_task_run_seconds_count", mode="person") == OK + 1
    assert value(samples, "repairbot_task_run_seconds_count", mode="building") == 0
    assert value(samples, "repairbot_task_end_to_end_seconds_count", mode="person") == person_tasks
    assert value(samples, "repairbot_task_end_to_end_seconds_count", mode="building") == FAILED
    assert value(samples, "repairbot_gpu_slot_wait_seconds_count") == person_tasks + FAILED
    assert value(samples, "repairbot_comfyui_up", instance=comfy_fake.url) == 1
    assert value(samples, "repairbot_comfyui_queue_prompts", instance=comfy_fake.url, state="pending") == 0
    assert value(samples, "repairbot_notifier_sends_total", platform="telegram", outcome="delivered") == 1
    assert value(samples, "repairbot_result_delivery_seconds_count", platform="telegram") == 1
    assert value(samples, "repairbot_intake_accepted_total", platform="telegram", mode="person") == 1
    assert value(samples, "repairbot_intake_refused_total", reason="not_an_image") == 1
    assert value(samples, "repairbot_queue_depth_tasks") == 0
    assert value(samples, "repairbot_group_pending_entries", group="repair_workers") == 0
    assert value(samples, "repairbot_group_lag_entries", group="repair_workers") == 0
    assert value(samples, "repairbot_results_backlog_entries") == 0
    assert value(samples, "repairbot_dead_letters_entries") == 0
    assert value(samples, "repairbot_stream_length_entries", stream="photo_repair_dead") == 0
    assert value(samples, "repairbot_paused") == 0
    names = {name for name, _ in samples}
    assert all(name.startswith("repairbot_") for name in names), sorted(names)
    labels = {label for _, pairs in samples for label, _ in pairs}
    assert labels <= {
        "mode",
        "code",
        "platform",
        "outcome",
        "reason",
        "instance",
        "state",
        "group",
        "stream",
        "le",
        "alert",
    }, labels


async def test_readiness_follows_redis_and_comfyui(comfy_fake, tmp_path):
    redis_server = RedisServer(tmp_path / "redis").start()
    env = clean_env(REDIS_URL=redis_server.url, COMFYUI_URL=comfy_fake.url)
    try:
        async with Up(tmp_path, env) as up:
            await up.wait_status("/readyz", 200)

            await comfy_fake.stop()
            assert "every ComfyUI instance is down" in await up.wait_status("/readyz", 503)
            assert (await up.get("/livez"))[0] == 200
            samples = await up.metrics()
            assert value(samples, "repairbot_comfyui_up", instance=comfy_fake.url) == 0
            await comfy_fake.start()
            await up.wait_status("/readyz", 200)

            redis_server.stop(kill=True)
            assert "Redis unreachable" in await up.wait_status("/readyz", 503)
            assert (await up.get("/livez"))[0] == 200
            redis_server.start()
            await up.wait_status("/readyz", 200)
        assert up.process.returncode == 0, up.stderr[-3000:]
    finally:
        redis_server.stop()


async def test_admins_are_alerted_once_when_comfyui_goes_down_and_once_when_it_is_back(redis_url, comfy_fake, tmp_path):
    telegram = await FakeTelegram().start()
    admin = 4242
    env = clean_env(
        REDIS_URL=redis_url,
        COMFYUI_URL=comfy_fake.url,
        TELEGRAM_BOT_TOKEN=telegram.token,
        TELEGRAM_API_BASE=telegram.api_base,
        TELEGRAM_FILE_BASE=telegram.file_base,
        TELEGRAM_ADMIN_IDS=str(admin),
    )

    def alerts_to_admin(words: str) -> list:
        return [
            c
            for c in telegram.calls_to("sendMessage")
            if str(c.params.get("chat_id")) == str(admin) and words in str(c.params.get("text"))
        ]

    try:
        async with Up(tmp_path, env) as up:
            await up.wait_status("/readyz", 200)
            await comfy_fake.stop()
            await telegram.wait_for(lambda: alerts_to_admin("Every ComfyUI instance is down"), timeout=30)
            await asyncio.sleep(2)  # four more evaluation rounds: no repeat
            assert len(alerts_to_admin("Every ComfyUI instance is down")) == 1
            await comfy_fake.start()
            await telegram.wait_for(lambda: alerts_to_admin("ComfyUI is back"), timeout=30)
            await asyncio.sleep(2)
            assert len(alerts_to_admin("ComfyUI is back")) == 1
            assert len(alerts_to_admin("Every ComfyUI instance is down")) == 1
            samples = await up.metrics()
            assert value(samples, "repairbot_alerts_sent_total", alert="comfyui_down") == 2
    finally:
        await telegram.stop()
