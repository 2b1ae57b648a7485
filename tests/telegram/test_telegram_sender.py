"""The notifier's Telegram sender, fed Result and Event records, against the Bot API fake."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from telegram.error import RetryAfter

from backend import albums
from backend.notifier import SendPermanent, SendRetry
from backend.replies import DiscordReply, TelegramReply
from backend.tasks import Event, Result
from backend.texts import text
from bots.telegram.keyboards import parse
from bots.telegram.sender import build_sender

CHAT = 4242


def png(size: tuple[int, int], colour=(200, 120, 60)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def status_message(fake) -> int:
    """The "Queued" status the bot posted when the photo came in."""
    return fake.bot_message(CHAT, "Queued")


async def stored_result(sender, fake, output: bytes, **reply_extra) -> Result:
    input_key = await sender.blobs.put("in", png((64, 64), (128, 128, 128)))
    output_key = await sender.blobs.put("out", output)
    reply = TelegramReply(chat_id=CHAT, message_id=10, lang="en", status_message_id=status_message(fake), **reply_extra)
    return Result(
        task_id="a" * 32, status="ok", reply=reply, mode="person", input=input_key, output=output_key, run_ms=4200
    )


async def test_result_is_the_photo_alone_with_buttons(tg_sender, tg_fake):
    output = png((300, 200))
    result = await stored_result(tg_sender, tg_fake, output)
    await tg_sender.send_result(result)
    assert [c.method for c in tg_fake.calls] == ["getMe", "editMessageText", "sendPhoto", "deleteMessage"]
    sending, photo, delete = tg_fake.calls[1:]
    assert sending["text"] == text("sending", "en")
    assert photo.files["photo"] == output
    assert photo["caption"] == text("result_caption", "en", mode="person", seconds=4.2, run=4.2)
    assert photo["reply_parameters"]["message_id"] == 10
    buttons = [parse(b["callback_data"]) for b in photo["reply_markup"]["inline_keyboard"][0]]
    assert [b.action for b in buttons] == ["other_mode", "compare"]
    assert buttons[0].mode == "building" and buttons[0].input_key == result.input
    assert buttons[1].output_key == result.output
    assert delete["message_id"] == result.reply.status_message_id
    assert tg_fake.was_deleted(CHAT, delete["message_id"])


@pytest.mark.parametrize("size,reply_extra", [((300, 200), {"as_file": True}), ((3000, 2000), {})])
async def test_full_resolution_file_as_well_when_sent_as_a_file_or_the_photo_would_be_compressed(
    tg_sender, tg_fake, size, reply_extra
):
    output = png(size)
    await tg_sender.send_result(await stored_result(tg_sender, tg_fake, output, **reply_extra))
    assert [c.method for c in tg_fake.calls] == [
        "getMe",
        "editMessageText",
        "sendPhoto",
        "sendDocument",
        "deleteMessage",
    ]
    assert tg_fake.calls[3].files["document"] == output


async def test_result_telegram_would_not_take_as_a_photo_goes_as_a_file(tg_sender, tg_fake):
    output = png((2100, 100))  # aspect ratio over 20
    await tg_sender.send_result(await stored_result(tg_sender, tg_fake, output))
    assert [c.method for c in tg_fake.calls] == ["getMe", "editMessageText", "sendDocument", "deleteMessage"]
    document = tg_fake.calls[2]
    assert document.files["document"] == output and "reply_markup" in document.params
    assert document["caption"].startswith("Colorized")


async def test_status_that_cannot_be_deleted_becomes_done(tg_sender, tg_fake):
    tg_fake.fail_next("deleteMessage", 400, "Bad Request: message can't be deleted")
    await tg_sender.send_result(await stored_result(tg_sender, tg_fake, png((64, 64))))
    assert tg_fake.calls_to("editMessageText")[-1]["text"] == text("done", "en")


@pytest.mark.parametrize(
    "status,error,expected",
    [
        ("failed", "timeout", text("timeout", "en")),
        ("cancelled", "cancelled", text("cancelled", "en")),
    ],
)
async def test_failure_and_cancel_turn_the_status_into_a_sentence(tg_sender, tg_fake, status, error, expected):
    reply = TelegramReply(chat_id=CHAT, status_message_id=status_message(tg_fake), lang="en")
    await tg_sender.send_result(Result(task_id="b" * 32, status=status, reply=reply, error=error))
    [edit] = tg_fake.calls_to("editMessageText")
    assert edit["text"] == expected and edit["message_id"] == reply.status_message_id


async def test_rate_limit_goes_back_to_the_notifier_with_the_full_retry_after(tg_sender, tg_fake):
    """Not slept through inside PTB (that pauses every chat): the notifier waits in this chat's queue."""
    tg_fake.fail_next("sendDocument", 429, retry_after=45)
    result = await stored_result(tg_sender, tg_fake, png((64, 64)), as_file=True)  # sent as a file: photo + file
    with pytest.raises(SendRetry) as caught:
        await tg_sender.send_result(result)
    assert caught.value.after_s == 45
    await tg_sender.send_result(result)  # the notifier's next try
    assert len(tg_fake.calls_to("sendPhoto")) == 1, "the photo went out before the 429: not posted again"
    assert len(tg_fake.calls_to("sendDocument")) == 2


async def test_rate_limit_past_the_retries_is_send_retry(tg_settings, tg_fake):
    from backend.redis_conn import connect
    from backend.services import make_blob_store

    redis = connect(tg_settings)
    sender = build_sender(
        tg_settings, make_blob_store(tg_settings, redis), overall_max_rate=0, group_max_rate=0, max_retries=1
    )
    await sender.start()
    try:
        tg_fake.fail_next("sendPhoto", 429, retry_after=0.2, times=2)
        with pytest.raises(SendRetry) as caught:
            await sender.send_result(await stored_result(sender, tg_fake, png((64, 64))))
        assert caught.value.after_s == pytest.approx(0.2)
        # The notifier retries: the photo is not posted again once it went through.
        result = await stored_result(sender, tg_fake, png((64, 64)), as_file=True)
        tg_fake.fail_next("sendDocument", 429, retry_after=0.2, times=2)
        with pytest.raises(SendRetry):
            await sender.send_result(result)
        await sender.send_result(result)
        assert len([c for c in tg_fake.calls_to("sendPhoto") if c.result is not None]) == 1
        assert len([c for c in tg_fake.calls_to("sendDocument") if c.result is not None]) == 1
    finally:
        await sender.close()
        await redis.aclose()


@pytest.mark.parametrize(
    "status,description,expected",
    [
        (403, "Forbidden: bot was blocked by the user", SendPermanent),
        (400, "Bad Request: chat not found", SendPermanent),
        (500, "Internal Server Error", SendRetry),
    ],
)
async def test_errors_say_what_happens_next(tg_sender, tg_fake, status, description, expected):
    tg_fake.fail_next("sendPhoto", status, description)
    with pytest.raises(expected):
        await tg_sender.send_result(await stored_result(tg_sender, tg_fake, png((64, 64))))


async def test_album_status_goes_when_the_last_photo_is_in(tg_sender, tg_fake):
    first = await stored_result(tg_sender, tg_fake, png((64, 64)), album="g1")
    status_id = first.reply.status_message_id
    await albums.open_album(tg_sender.redis, CHAT, status_id, 2, ttl_s=60)
    await tg_sender.send_result(first)
    await tg_sender.send_result(first)  # a redelivery does not count twice
    assert not tg_fake.calls_to("deleteMessage")
    second = Result(task_id="c" * 32, status="failed", reply=first.reply, error="timeout")
    await tg_sender.send_result(second)
    assert text("timeout", "en") in [c["text"] for c in tg_fake.calls_to("sendMessage")]
    [delete] = tg_fake.calls_to("deleteMessage")
    assert delete["message_id"] == status_id


async def test_progress_edits_are_throttled_per_chat(tg_sender, tg_fake):
    reply = TelegramReply(chat_id=CHAT, status_message_id=status_message(tg_fake), lang="zh")
    await tg_sender.send_event(Event(task_id="d" * 32, state="started", reply=reply))
    await tg_sender.send_event(Event(task_id="d" * 32, state="progress", reply=reply, percent=50))
    [edit] = tg_fake.calls_to("editMessageText")
    assert edit["text"] == text("started", "zh")
    [[cancel]] = edit["reply_markup"]["inline_keyboard"]
    assert parse(cancel["callback_data"]).task_id == "d" * 32

    other_chat = reply.model_copy(
        update={"chat_id": CHAT + 1, "status_message_id": tg_fake.bot_message(CHAT + 1, "Queued")}
    )
    await tg_sender.send_event(Event(task_id="e" * 32, state="queued", reply=other_chat, position=3, eta_s=9))
    await tg_sender.send_event(Event(task_id="e" * 32, state="queued", reply=other_chat, position=2, eta_s=6))
    assert tg_fake.calls_to("editMessageText")[-1]["text"] == text("queued", "zh", position=3, eta=9)
    tg_sender.progress_every_s = 0  # the chat's turn has come: the new place in line shows
    await tg_sender.send_event(Event(task_id="e" * 32, state="queued", reply=other_chat, position=2, eta_s=6))
    assert tg_fake.calls_to("editMessageText")[-1]["text"] == text("queued", "zh", position=2, eta=6)


async def test_progress_is_skipped_while_rate_limited(tg_sender, tg_fake):
    reply = TelegramReply(chat_id=CHAT, status_message_id=status_message(tg_fake))
    tg_fake.fail_next("sendMessage", 429, retry_after=0.3)
    with pytest.raises(RetryAfter):  # handed to the caller, and noted by the limiter
        await tg_sender.bot.send_message(CHAT, "hello")
    tg_sender.bot.rate_limiter.limited_until += 60
    await tg_sender.send_event(Event(task_id="d" * 32, state="started", reply=reply))
    assert not tg_fake.calls_to("editMessageText")


async def test_a_progress_edit_that_meets_a_429_is_dropped_not_retried(tg_sender, tg_fake):
    reply = TelegramReply(chat_id=CHAT, status_message_id=status_message(tg_fake))
    tg_fake.fail_next("editMessageText", 429, retry_after=0.3)
    await tg_sender.send_event(Event(task_id="d" * 32, state="started", reply=reply))
    [refused] = tg_fake.calls_to("editMessageText")  # tried once, not waited out and retried
    assert refused.result is None
    assert tg_sender.bot.rate_limiter.is_limited()  # the 429 is noted: later progress is skipped meanwhile
    await tg_sender.send_event(
        Event(task_id="d" * 32, state="progress", reply=reply.model_copy(update={"chat_id": CHAT + 1}), percent=50)
    )
    assert len(tg_fake.calls_to("editMessageText")) == 1


async def test_result_after_the_user_deleted_the_status_leaves_it_at_that(tg_sender, tg_fake):
    result = await stored_result(tg_sender, tg_fake, png((64, 64)))
    tg_fake.chats[CHAT].pop(result.reply.status_message_id)  # the user deleted "Queued"
    await tg_sender.send_result(result)
    assert [c.method for c in tg_fake.calls] == ["getMe", "editMessageText", "sendPhoto", "deleteMessage"]
    assert tg_fake.calls[-1].result is None  # "message to delete not found": no edit is tried on a gone message


async def test_failure_whose_status_was_deleted_comes_as_a_new_message(tg_sender, tg_fake):
    status_id = status_message(tg_fake)
    tg_fake.chats[CHAT].pop(status_id)
    reply = TelegramReply(chat_id=CHAT, status_message_id=status_id, lang="en")
    await tg_sender.send_result(Result(task_id="b" * 32, status="failed", reply=reply, error="timeout"))
    [edit] = tg_fake.calls_to("editMessageText")
    assert edit.result is None  # "message to edit not found"
    [sent] = tg_fake.calls_to("sendMessage")
    assert sent["text"] == text("timeout", "en") and sent.result is not None


async def test_a_progress_edit_that_changes_nothing_is_let_go(tg_sender, tg_fake):
    tg_sender.progress_every_s = 0
    reply = TelegramReply(chat_id=CHAT, status_message_id=status_message(tg_fake), lang="en")
    for _ in range(2):
        await tg_sender.send_event(Event(task_id="d" * 32, state="progress", reply=reply, percent=50))
    [edit] = tg_fake.calls_to("editMessageText")  # the same text again is not even sent
    assert edit.result is not None
    assert tg_fake.message(CHAT, reply.status_message_id)["text"] == text("started", "en")


async def test_the_progress_throttle_is_shared_by_every_notifier(tg_sender, tg_settings, tg_fake):
    other_notifier = build_sender(tg_settings, tg_sender.blobs, overall_max_rate=0, group_max_rate=0)
    await other_notifier.start()
    try:
        reply = TelegramReply(chat_id=CHAT, status_message_id=status_message(tg_fake), lang="en")
        await tg_sender.send_event(Event(task_id="d" * 32, state="started", reply=reply))
        await other_notifier.send_event(Event(task_id="d" * 32, state="progress", reply=reply, percent=50))
        assert len(tg_fake.calls_to("editMessageText")) == 1  # the second process saw the first one's edit
        group = reply.model_copy(update={"chat_id": -100123})
        await other_notifier.send_event(Event(task_id="e" * 32, state="started", reply=group))
        ttl_ms = await tg_sender.redis.pttl("repairbot:telegram:progress:-100123")
        assert ttl_ms > tg_sender.progress_every_s * 1000  # groups wait longer between edits
    finally:
        await other_notifier.close()


@pytest.mark.parametrize("error,buttons", [("comfyui_failed", ["Retry", "Try building"]), ("timeout", ["Retry"])])
async def test_a_failure_carries_retry_and_other_mode_when_it_could_help(tg_sender, tg_fake, error, buttons):
    input_key = await tg_sender.blobs.put("in", png((64, 64)))
    reply = TelegramReply(chat_id=CHAT, status_message_id=status_message(tg_fake), lang="en")
    await tg_sender.send_result(
        Result(task_id="b" * 32, status="failed", reply=reply, error=error, mode="person", input=input_key)
    )
    [edit] = tg_fake.calls_to("editMessageText")
    assert [b["text"] for b in edit["reply_markup"]["inline_keyboard"][0]] == buttons
    retry = parse(edit["reply_markup"]["inline_keyboard"][0][0]["callback_data"])
    assert retry.action == "retry" and retry.mode == "person" and retry.input_key == input_key


async def test_another_platform_s_reply_channel_is_refused_without_a_request(tg_sender, tg_fake):
    stray = DiscordReply(application_id="1", channel_id="2", user_id="3")
    with pytest.raises(SendPermanent, match="discord reply channel"):
        await tg_sender.send_result(Result(task_id="e" * 32, status="failed", reply=stray, error="timeout"))
    with pytest.raises(SendPermanent, match="discord reply channel"):
        await tg_sender.send_event(Event(task_id="e" * 32, state="started", reply=stray))
    assert [c.method for c in tg_fake.calls] == ["getMe"]
