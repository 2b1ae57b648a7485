"""The whole sequence of messages a Telegram user gets, not only the last one: real PTB polling the
Bot API fake, worker + notifier + Telegram sender, ComfyUI fake, real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import pytest

from backend.texts import text
from bots.telegram.keyboards import parse
from bots.telegram.sender import build_sender
from tests.support.pipeline import running_pipeline
from tests.support.transcripts import never_backwards, stage_of, status_histories, telegram_chat
from tests.telegram.conftest import ChatUser, telegram_settings

FAST = {"status_refresh_s": 0.2}


@pytest.fixture
def system(start_bot, settings, tg_fake):
    """Bot + worker + notifier; status refreshes every 0.2 s, progress edits unthrottled."""

    @contextlib.asynccontextmanager
    async def run(**overrides) -> AsyncIterator:
        overrides = {**FAST, **overrides}
        system_settings = telegram_settings(settings, tg_fake, **overrides)
        async with start_bot(**overrides) as (services, errors):
            sender = build_sender(
                system_settings, services.blobs, overall_max_rate=0, group_max_rate=0, progress_every_s=0.1
            )
            async with running_pipeline(system_settings, {"telegram": sender}):
                yield services
        assert not errors, errors

    return run


def results_in(fake, chat_id: int) -> list:
    return [line for line in telegram_chat(fake, chat_id) if line.kind in ("photo", "album")]


async def test_under_load_no_status_goes_backwards_places_count_down_and_statuses_go(
    system, tg_fake, comfy_fake, photo_bytes
):
    comfy_fake.delay_s = 0.8
    users = [ChatUser(tg_fake, 7000 + i) for i in range(6)]
    async with system():
        for user in users:
            await user.send_photo(photo_bytes)
        await tg_fake.wait_for(lambda: all(results_in(tg_fake, u.id) for u in users), timeout=60)

        await tg_fake.wait_for(
            lambda: all(
                status_histories(telegram_chat(tg_fake, u.id))[
                    next(iter(status_histories(telegram_chat(tg_fake, u.id))))
                ][-1]
                == "<deleted>"
                for u in users
            )
        )
    for user in users:
        [history] = status_histories(telegram_chat(tg_fake, user.id)).values()
        assert never_backwards(history), history
        assert history[-1] == "<deleted>"  # the status is gone at the end
        assert len(history) == len(set(history)), f"an unchanged edit: {history}"

    def places(history: list[str]) -> list[int]:
        return [int(m.group(1)) for text in history if (m := re.search(r"#(\d+) in line", text))]

    # The photos are queued in whatever order the concurrent handlers get there: take the last in line.
    histories = [next(iter(status_histories(telegram_chat(tg_fake, u.id)).values())) for u in users]
    history = max(histories, key=lambda h: max(places(h), default=0))
    places = places(history)
    start = tg_fake.calls[0].at
    everything = "\n".join(line.show(start) for u in users for line in telegram_chat(tg_fake, u.id))
    assert len(places) >= 2 and places == sorted(places, reverse=True) and places[-1] < places[0], everything
    assert any(stage_of(text) == 2 for text in history) and any(stage_of(text) == 3 for text in history)


async def test_an_album_comes_back_as_one_media_group_in_order(system, tg_fake, photo_bytes):
    user = ChatUser(tg_fake)
    async with system():
        for _ in range(3):
            await user.send_photo(photo_bytes, media_group_id="holiday")
        [album] = await tg_fake.wait_call("sendMediaGroup", timeout=60)
        await tg_fake.wait_for(lambda: tg_fake.calls_to("deleteMessage"))
        # A media group can't carry buttons: one message after it has them, numbered as in the album.
        [buttons] = [c for c in tg_fake.calls_to("sendMessage") if c.params.get("reply_markup")]
        rows = buttons["reply_markup"]["inline_keyboard"]
        assert [[b["text"] for b in row] for row in rows] == [
            [f"{n}: Try building", f"{n}: Compare"] for n in (1, 2, 3)
        ], rows
        assert buttons["text"] == text("album_buttons", "en")
        await user.press(rows[1][1]["callback_data"], buttons.result["message_id"])  # "2: Compare"
        await tg_fake.wait_call("sendPhoto", timeout=30)  # the before/after of photo 2
    assert len(album["media"]) == 3 and [m.get("caption") is not None for m in album["media"]] == [True, False, False]
    assert not tg_fake.calls_to("sendDocument")
    assert parse(rows[1][1]["callback_data"]).input_key != parse(rows[0][1]["callback_data"]).input_key
    histories = status_histories(telegram_chat(tg_fake, user.id))
    histories.pop(buttons.result["message_id"])
    [history] = histories.values()
    assert never_backwards(history) and history[-1] == "<deleted>", history


async def test_other_mode_pressed_twice_runs_once(system, tg_fake, photo_bytes):
    user = ChatUser(tg_fake)
    async with system() as services:
        await user.send_photo(photo_bytes)
        [photo] = await tg_fake.wait_call("sendPhoto", timeout=60)
        other = photo["reply_markup"]["inline_keyboard"][0][0]
        assert other["text"] == "Try building"
        await user.press(other["callback_data"], photo.result["message_id"])
        await user.press(other["callback_data"], photo.result["message_id"])
        await tg_fake.wait_call("sendPhoto", 2, timeout=60)
        await user.press(other["callback_data"], photo.result["message_id"])  # after it finished: shown again
        await tg_fake.wait_call("sendPhoto", 3, timeout=60)
        await asyncio.sleep(0.3)
        modes = [f[b"mode"].decode() for _, f in await services.redis.xrange(services.settings.tasks_stream)]
    assert modes == ["person", "building"]
    texts = [line.text for line in telegram_chat(tg_fake, user.id)]
    assert any(t.startswith("It's already on its way in building") for t in texts)
    assert tg_fake.calls_to("sendPhoto")[-1]["caption"] == "Here it is again in building."


async def test_where_unknown_commands_and_the_admins_menu(system, tg_fake, comfy_fake, photo_bytes):
    comfy_fake.delay_s = 3  # photo 2 must be queued before photo 1 is done, even on a loaded machine
    user, admin = ChatUser(tg_fake), ChatUser(tg_fake, 9001)
    async with system():
        await user.command("/where")
        await user.wait_text("You have no photos waiting.")
        await user.send_photo(photo_bytes)
        await user.wait_text("Colorizing")
        await user.send_photo(photo_bytes)  # a moment later: its own status
        await tg_fake.wait_for(lambda: sum(t.startswith("Queued — #") for t in user.texts()) >= 2)
        await user.command("/status")
        answer = await user.wait_text("Photo 2: ")
        assert answer.startswith("Photo 1: colorizing now.\nPhoto 2: #") and "in line" in answer, (answer, user.texts())
        await user.command("/foo")
        await user.wait_text("I don't know /foo. Send a photo to colorize it, or try /help.")
        await admin.command("/help")
        await admin.wait_text("Admin: /queue, /stats")
    scoped = [c for c in tg_fake.calls_to("setMyCommands") if c.params.get("scope")]
    assert scoped and scoped[0]["scope"] == {"type": "chat", "chat_id": 9001}
    assert {"stats", "dlq", "where"} <= {c["command"] for c in scoped[0]["commands"]}
    assert all("Admin:" not in t for t in user.texts())


async def test_a_burst_of_ten_gives_at_most_two_replies_and_all_ten_results(system, tg_fake, comfy_fake, photo_bytes):
    comfy_fake.delay_s = 0.2
    user = ChatUser(tg_fake)
    async with system(user_max_active=3, user_backlog=10):
        for _ in range(10):
            await user.send_photo(photo_bytes)
        await tg_fake.wait_for(lambda: len(results_in(tg_fake, user.id)) == 10, timeout=90)
        await tg_fake.wait_for(lambda: tg_fake.calls_to("deleteMessage"))
    replies = [line for line in telegram_chat(tg_fake, user.id) if line.kind == "sent"]
    assert len(replies) <= 2, [r.text for r in replies]
    [history] = status_histories(telegram_chat(tg_fake, user.id)).values()
    assert never_backwards(history) and history[-1] == "<deleted>", history


async def test_past_the_backlog_one_reply_says_how_many_to_send_again(system, tg_fake, comfy_fake, photo_bytes):
    comfy_fake.delay_s = 1.5  # none finishes while the seven are still being taken in, even on a loaded machine
    user = ChatUser(tg_fake)
    async with system(user_max_active=2, user_backlog=3):
        for _ in range(7):
            await user.send_photo(photo_bytes)
        await user.wait_text("I took 5 of your 7 photos; please send the other 2 again once these are done.")
        await tg_fake.wait_for(lambda: len(results_in(tg_fake, user.id)) == 5, timeout=90)
    assert len([line for line in telegram_chat(tg_fake, user.id) if line.kind == "sent"]) == 2


def _png(size: tuple[int, int]) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", size, 128).save(out, "PNG")
    return out.getvalue()


async def test_over_the_pixel_limit_is_shrunk_with_a_note_and_past_the_ceiling_refused(system, tg_fake):
    user = ChatUser(tg_fake)
    async with system(max_image_pixels=1_000_000, max_image_pixels_ceiling=3_000_000):
        await user.send_document(_png((1500, 1000)), mime="image/png", name="big.png")
        note = await user.wait_text("Your image was 1500×1000 (1.5 MP), over my limit")
        assert "1224×816" in note or "1224" in note, note
        await tg_fake.wait_for(lambda: results_in(tg_fake, user.id), timeout=60)
        await user.send_document(_png((2000, 2000)), mime="image/png", name="huge.png")
        await user.wait_text("This image is 2000×2000 (4.0 megapixels), more than the 3 megapixels")


async def _backlog_length(services, user_id: int) -> int:
    return int(await services.redis.llen(f"repairbot:backlog:telegram:{user_id}"))


async def _wait_backlog(services, user_id: int, length: int) -> None:
    for _ in range(300):
        if await _backlog_length(services, user_id) == length:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"backlog of {user_id} is {await _backlog_length(services, user_id)}, not {length}")


async def test_cancel_reaches_the_photos_waiting_in_the_backlog(system, tg_fake, comfy_fake, photo_bytes):
    comfy_fake.delay_s = 3.0
    user = ChatUser(tg_fake)
    async with system(user_max_active=2, user_backlog=10) as services:
        for _ in range(6):
            await user.send_photo(photo_bytes)
        await _wait_backlog(services, user.id, 4)
        await user.command("/cancel")
        await user.wait_text(text("cancelled_count", "en", count=6))
        assert await _backlog_length(services, user.id) == 0
        await user.wait_text(text("cancelled", "en"))  # the burst's status, once all six are answered
        await asyncio.sleep(1.0)  # nothing more comes: no photo starts from the backlog afterwards
        modes = await services.redis.xlen(services.settings.tasks_stream)
    assert not results_in(tg_fake, user.id)
    assert modes == 2  # only the two that were queued before the cancel ever reached the worker
    histories = status_histories(telegram_chat(tg_fake, user.id))
    [status] = [h for h in histories.values() if h[0] == text("received_many", "en", count=6) or len(h) > 1]
    assert never_backwards(status) and status[-1] == text("cancelled", "en"), status


async def test_the_cancel_button_of_a_backlogged_photo_drops_it(system, tg_fake, comfy_fake, photo_bytes):
    comfy_fake.delay_s = 3.0
    user = ChatUser(tg_fake)
    async with system(user_max_active=1, user_backlog=5) as services:
        await user.send_photo(photo_bytes)
        await tg_fake.wait_for(lambda: tg_fake.calls_to("editMessageText"))
        await asyncio.sleep(1.0)  # past the burst window: the next photo is one of its own
        await user.send_photo(photo_bytes)
        await _wait_backlog(services, user.id, 1)
        waiting = await tg_fake.wait_for(
            lambda: next(
                (c for c in tg_fake.calls_to("editMessageText") if c["text"] == text("backlog_only", "en", count=1)),
                None,
            )
        )
        [[cancel]] = waiting["reply_markup"]["inline_keyboard"]
        await user.press(cancel["callback_data"], waiting["message_id"])
        await tg_fake.wait_for(
            lambda: any(
                c["message_id"] == waiting["message_id"] and c["text"] == text("cancelled", "en")
                for c in tg_fake.calls_to("editMessageText")
            ),
            timeout=20,
        )
        assert await _backlog_length(services, user.id) == 0
        await tg_fake.wait_for(lambda: results_in(tg_fake, user.id), timeout=30)  # the first one still comes
        await asyncio.sleep(0.5)
    assert len(results_in(tg_fake, user.id)) == 1


async def test_an_album_with_a_damaged_photo_says_so_once_and_the_rest_come_back_together(system, tg_fake, photo_bytes):
    user = ChatUser(tg_fake)
    async with system():
        await user.send_photo(photo_bytes, media_group_id="mixed")
        await user.send_photo(b"\xff\xd8 not really a jpeg" * 20, media_group_id="mixed")
        await user.send_photo(photo_bytes, media_group_id="mixed")
        [album] = await tg_fake.wait_call("sendMediaGroup", timeout=60)
        await tg_fake.wait_for(lambda: tg_fake.calls_to("deleteMessage"))
    assert len(album["media"]) == 2, "the album's sender counted the refused photo as finished"
    chat = telegram_chat(tg_fake, user.id)
    said = [line.text for line in chat if line.kind == "sent"]
    assert stage_of(said[0]) == 0, said  # the status
    assert said.count(text("not_an_image", "en")) == 1, said  # the damaged photo, said once
    status_id = next(line.message_id for line in chat if line.kind == "sent")
    history = status_histories(chat)[status_id]
    assert never_backwards(history) and history[-1] == "<deleted>", history


async def test_an_album_whose_last_photo_is_refused_after_the_others_came_back_still_arrives(
    system, tg_fake, comfy_fake, photo_bytes
):
    """The album's sender posts once its count reaches the end; the last photo, refused by the bot only
    after both results were in, must still end that count where the sender sees it."""
    comfy_fake.delay_s = 0.0
    user = ChatUser(tg_fake)
    async with system():
        await user.send_photo(photo_bytes, media_group_id="late")
        await user.send_photo(photo_bytes, media_group_id="late")
        damaged = await user.send_photo(b"\xff\xd8 not really a jpeg" * 20, media_group_id="late")
        tg_fake.download_delays[damaged["photo"][-1]["file_id"]] = 3.0  # its download ends after both results
        [album] = await tg_fake.wait_call("sendMediaGroup", timeout=60)
        await tg_fake.wait_for(lambda: tg_fake.calls_to("deleteMessage"), timeout=30)
    assert len(album["media"]) == 2
    chat = telegram_chat(tg_fake, user.id)
    said = [line.text for line in chat if line.kind == "sent"]
    assert said.count(text("not_an_image", "en")) == 1, said
    assert text("cancelled", "en") not in said


async def test_a_burst_whose_last_photo_is_refused_after_the_others_came_back_closes_its_status(
    system, tg_fake, comfy_fake, photo_bytes
):
    comfy_fake.delay_s = 0.0
    user = ChatUser(tg_fake)
    async with system():
        await user.send_photo(photo_bytes)
        await user.send_photo(photo_bytes)
        damaged = await user.send_photo(b"\xff\xd8 not really a jpeg" * 20)
        tg_fake.download_delays[damaged["photo"][-1]["file_id"]] = 3.0
        await tg_fake.wait_for(lambda: len(results_in(tg_fake, user.id)) == 2, timeout=60)
        await tg_fake.wait_for(lambda: tg_fake.calls_to("deleteMessage"), timeout=30)
    chat = telegram_chat(tg_fake, user.id)
    status_id = next(line.message_id for line in chat if line.kind == "sent")
    history = status_histories(chat)[status_id]
    assert never_backwards(history) and history[-1] == "<deleted>", history
