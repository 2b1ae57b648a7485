"""The notifier with the real Telegram sender, the Bot API fake and a real redis-server: a chat that
waits out Telegram's retry-after holds up no other chat, and waits as long as Telegram asked; two
notifiers holding two entries of one result post it once."""

from __future__ import annotations

import asyncio

from backend.processes import build_notifier
from backend.redis_conn import connect
from backend.replies import TelegramReply
from backend.services import make_blob_store
from backend.tasks import Result
from bots.telegram.sender import build_sender

GROUP = -1001234
PRIVATE_CHATS = [101, 102, 103, 104, 105]


async def test_a_rate_limited_group_holds_up_no_other_chat(tg_settings, tg_fake, redis):
    settings = tg_settings.model_copy(update={"retry_backoff_max_s": 0.5})  # the ask is longer than our own cap
    stream = settings.results_stream
    # The group's answer is a new message; Telegram answers it with a 429 and retry_after 1.5 s.
    tg_fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 1.5", retry_after=1.5)
    await redis.xadd(
        stream,
        Result(
            task_id="0" * 32,
            status="failed",
            error="timeout",
            reply=TelegramReply(chat_id=GROUP, lang="en"),
        ).encode(),
    )
    for n, chat in enumerate(PRIVATE_CHATS, start=1):
        status = tg_fake.bot_message(chat, "Queued")
        await redis.xadd(
            stream,
            Result(
                task_id=f"{n:032x}",
                status="failed",
                error="timeout",
                reply=TelegramReply(chat_id=chat, status_message_id=status, lang="en"),
            ).encode(),
        )

    connection = connect(settings)
    sender = build_sender(settings, make_blob_store(settings, connection), overall_max_rate=0, group_max_rate=0)
    notifier = build_notifier(settings, redis, {"telegram": sender}, concurrency=1)  # one slot for everybody
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


async def test_two_notifiers_with_one_result_entry_each_post_it_once(tg_settings, tg_fake, redis):
    """The worker re-published a result (its task was redelivered): two entries, held by two notifier
    processes, each with its own Telegram sender. Telegram is slow to answer the photo."""
    import socket

    from tests.telegram.test_telegram_sender import png

    settings = tg_settings
    stream, group = settings.results_stream, settings.notifiers_group
    handle = tg_fake._m_sendPhoto

    async def slow_photo(params, files):
        await asyncio.sleep(0.5)
        return await handle(params, files)

    tg_fake._m_sendPhoto = slow_photo
    connection = connect(settings)
    blobs = make_blob_store(settings, connection)
    status = tg_fake.bot_message(PRIVATE_CHATS[0], "Queued")
    result = Result(
        task_id="7" * 32,
        status="ok",
        mode="person",
        input=await blobs.put("in", png((32, 32))),
        output=await blobs.put("out", png((64, 64))),
        run_ms=1000,
        reply=TelegramReply(chat_id=PRIVATE_CHATS[0], status_message_id=status, as_file=True),
    )
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    await redis.xgroup_create(settings.events_stream, group, id="$", mkstream=True)
    host = socket.gethostname().split(".")[0] or "host"
    for slot in range(2):
        await redis.xadd(stream, result.encode())
        await redis.xreadgroup(group, f"{host}-notifier-{slot}", {stream: ">"}, count=1)
    running = []
    for _ in range(2):
        sender = build_sender(settings, blobs, overall_max_rate=0, group_max_rate=0)
        notifier = build_notifier(settings, redis, {"telegram": sender})
        running.append((notifier, asyncio.create_task(notifier.run())))
        while not notifier.group.consumer:
            await asyncio.sleep(0.01)
    try:
        await tg_fake.wait_for(lambda: tg_fake.calls_to("deleteMessage"))
        for _ in range(100):
            if not (await redis.xpending(stream, group))["pending"]:
                break
            await asyncio.sleep(0.05)
    finally:
        for notifier, _ in running:
            notifier.stop()
        await asyncio.gather(*(task for _, task in running))
        await connection.aclose()
    assert len(tg_fake.calls_to("sendPhoto")) == 1 and len(tg_fake.calls_to("sendDocument")) == 1
    assert (await redis.xpending(stream, group))["pending"] == 0, "both entries acknowledged"
