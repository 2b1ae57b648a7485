"""Per-chat send queues: a chat that waits out Telegram's retry-after holds up no other chat, and the
wait is as long as Telegram asked. The notifier with the real Telegram sender, the Bot API fake and
a real redis-server."""

from __future__ import annotations

import asyncio

from backend.blobs import make_blob_store
from backend.notifier import Notifier
from backend.redis_conn import connect
from backend.tasks import Result
from bots.telegram.sender import build_sender

GROUP = -1001234
PRIVATE_CHATS = [101, 102, 103, 104, 105]


async def test_a_rate_limited_group_holds_up_no_other_chat(tg_settings, tg_fake, redis):
    settings = tg_settings.model_copy(update={"retry_backoff_max_s": 0.5})  # the ask is longer than our own cap
    stream = settings.results_stream
    # The group's answer is a new message; Telegram answers it with a 429 and retry_after 1.5 s.
    tg_fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 1.5", retry_after=1.5)
    await redis.xadd(stream, Result(task_id="0" * 32, status="failed", error="timeout",
                                    reply={"platform": "telegram", "chat_id": GROUP, "lang": "en"}).encode())
    for n, chat in enumerate(PRIVATE_CHATS, start=1):
        status = tg_fake.bot_message(chat, "Queued")
        await redis.xadd(stream, Result(task_id=f"{n:032x}", status="failed", error="timeout", reply={
            "platform": "telegram", "chat_id": chat, "status_message_id": status, "lang": "en"}).encode())

    connection = connect(settings)
    sender = build_sender(settings, make_blob_store(settings, connection), overall_max_rate=0, group_max_rate=0)
    notifier = Notifier(redis, settings, {"telegram": sender}, concurrency=1)  # one slot for everybody
    running = asyncio.create_task(notifier.run())
    loop = asyncio.get_running_loop()
    try:
        await tg_fake.wait_for(lambda: tg_fake.calls_to("sendMessage"))
        refused_at = loop.time()
        await tg_fake.wait_for(lambda: len(tg_fake.calls_to("sendMessage")) == 2, timeout=10)
        retried_at = loop.time()
    finally:
        notifier.stop()
        await running
        await connection.aclose()
    methods = [(c.method, int(c.params.get("chat_id", 0))) for c in tg_fake.calls if c.method != "getMe"]
    retry = methods.index(("sendMessage", GROUP), methods.index(("sendMessage", GROUP)) + 1)
    served = [chat for method, chat in methods[:retry] if method == "editMessageText"]
    assert sorted(served) == PRIVATE_CHATS, "every other chat was answered while the group waited"
    assert retried_at - refused_at >= 1.4, "the retry-after is waited out in full, not capped"
