"""Per-part send progress in Redis: a sender that starts afresh (a restarted notifier) skips the parts
of a result that went out, and re-sends at most the one whose reply was in flight when it stopped.
Real PTB against the Bot API fake, real Redis."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from backend import keys
from backend.notifier import SendRetry
from backend.redis_conn import connect
from backend.replies import TelegramReply
from backend.services import make_blob_store
from bots.telegram.sender import build_sender
from tests.telegram.test_telegram_sender import png, stored_result


@contextlib.asynccontextmanager
async def fresh_sender(settings):
    """A sender with nothing in memory, as in a notifier process that just started."""
    redis = connect(settings)
    sender = build_sender(settings, make_blob_store(settings, redis), overall_max_rate=0, group_max_rate=0)
    await sender.start()
    try:
        yield sender
    finally:
        await sender.close()
        await redis.aclose()


def hold_replies(fake, method: str) -> asyncio.Event:
    """The fake takes `method` (the message is posted) but holds its reply until the event is set."""
    gate = asyncio.Event()
    handle = getattr(fake, f"_m_{method}")

    async def accepted_but_unanswered(params, files):
        outcome = await handle(params, files)
        await gate.wait()
        return outcome

    setattr(fake, f"_m_{method}", accepted_but_unanswered)
    return gate


async def test_a_restarted_sender_does_not_post_the_photo_again(tg_settings, tg_fake):
    async with fresh_sender(tg_settings) as first:
        result = await stored_result(first, tg_fake, png((64, 64)), as_file=True)
        tg_fake.fail_next("sendDocument", 502, "Bad Gateway")
        with pytest.raises(SendRetry):
            await first.send_result(result)
    async with fresh_sender(tg_settings) as restarted:
        await restarted.send_result(result)
    assert [c.method for c in tg_fake.calls if c.method.startswith(("send", "delete"))] == [
        "sendPhoto",
        "sendDocument",
        "sendDocument",
        "deleteMessage",
    ]


@pytest.mark.parametrize("in_flight", ["sendPhoto", "sendDocument"])
async def test_killed_mid_send_only_the_part_in_flight_goes_again(tg_settings, tg_fake, redis, in_flight):
    gate = hold_replies(tg_fake, in_flight)
    try:
        async with fresh_sender(tg_settings) as doomed:
            result = await stored_result(doomed, tg_fake, png((64, 64)), as_file=True)
            sending = asyncio.create_task(doomed.send_result(result))
            await tg_fake.wait_for(lambda: tg_fake.calls_to(in_flight))
            sending.cancel()  # the process dies while Telegram's answer is on its way
            with contextlib.suppress(asyncio.CancelledError):
                await sending
        state = await redis.hgetall(keys.send_parts(result.task_id))
        part = "photo" if in_flight == "sendPhoto" else "document"
        assert state[part.encode()] == b"sending", "recorded before the request went out"
    finally:
        gate.set()
    setattr(tg_fake, f"_m_{in_flight}", getattr(type(tg_fake), f"_m_{in_flight}").__get__(tg_fake))
    async with fresh_sender(tg_settings) as restarted:
        await restarted.send_result(result)
    photos, documents = len(tg_fake.calls_to("sendPhoto")), len(tg_fake.calls_to("sendDocument"))
    if in_flight == "sendPhoto":
        assert (photos, documents) == (2, 1), "the photo whose answer was lost may show twice; nothing else"
    else:
        assert (photos, documents) == (1, 2), "the photo that was answered is not posted again"
    assert len(tg_fake.calls_to("deleteMessage")) == 1


async def test_a_failure_note_is_not_sent_twice(tg_settings, tg_fake):
    from backend.tasks import Result

    reply = TelegramReply(chat_id=4242, lang="en")  # no status message: the note is a message
    result = Result(task_id="9" * 32, status="failed", reply=reply, error="timeout")
    async with fresh_sender(tg_settings) as first:
        await first.send_result(result)
    async with fresh_sender(tg_settings) as again:  # the notifier died before marking it delivered
        await again.send_result(result)
    assert len(tg_fake.calls_to("sendMessage")) == 1
