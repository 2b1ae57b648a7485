"""Whole pipeline: real PTB bot polling the Bot API fake, worker + notifier (with the Telegram sender),
ComfyUI fake, real redis-server. The chat must receive the colorized bytes."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from backend.tasks import Task
from backend.texts import text
from bots.telegram.keyboards import parse
from bots.telegram.sender import build_sender
from tests.support.pipeline import running_pipeline
from tests.telegram.conftest import telegram_settings


def is_tinted(data: bytes) -> bool:
    """The ComfyUI fake tints grey input: red above blue."""
    r, _, b = Image.open(io.BytesIO(data)).convert("RGB").resize((8, 8)).getpixel((4, 4))
    return r > b


@pytest.fixture
def whole_system(start_bot, settings, tg_fake):
    """`async with whole_system(**overrides) as services:` bot + worker + notifier with the Telegram sender."""

    @contextlib.asynccontextmanager
    async def run(**overrides) -> AsyncIterator:
        system_settings = telegram_settings(settings, tg_fake, **overrides)
        async with start_bot(**overrides) as (services, errors):
            sender = build_sender(system_settings, services.blobs, overall_max_rate=0, group_max_rate=0)
            async with running_pipeline(system_settings, {"telegram": sender}):
                yield services
        assert not errors, errors

    return run


def markup_buttons(call) -> list[str]:
    return [b["callback_data"] for row in call["reply_markup"]["inline_keyboard"] for b in row]


async def test_photo_comes_back_colorized(whole_system, user, tg_fake, photo_bytes):
    async with whole_system():
        message = await user.send_photo(photo_bytes)
        [photo] = await tg_fake.wait_call("sendPhoto")
        assert is_tinted(photo.files["photo"])
        assert photo["chat_id"] == user.id and photo["reply_parameters"]["message_id"] == message["message_id"]
        assert photo["caption"].startswith("Colorized (person)")
        status_id = tg_fake.calls_to("sendMessage")[0].result["message_id"]
        await tg_fake.wait_for(lambda: [c for c in tg_fake.calls_to("deleteMessage") if c["message_id"] == status_id])
        assert not tg_fake.calls_to("sendDocument")  # sent as a photo, small: the photo alone


async def test_document_album_other_mode_and_compare(whole_system, user, tg_fake, photo_bytes):
    async with whole_system() as services:
        await user.send_document(photo_bytes)
        [first] = await tg_fake.wait_call("sendPhoto")
        assert is_tinted(first.files["photo"])
        [document] = await tg_fake.wait_call("sendDocument")  # sent as a file: the full-resolution file too
        assert is_tinted(document.files["document"])

        other, compare = markup_buttons(first)
        await user.press(other, first.result["message_id"])
        await tg_fake.wait_call("sendPhoto", 2)
        await user.press(compare, first.result["message_id"])
        sent = await tg_fake.wait_call("sendPhoto", 3)
        assert text("compare_caption", "en") in [c.params.get("caption") for c in sent]
        modes = [Task.decode(f).mode for _, f in await services.redis.xrange(services.settings.tasks_stream)]
        assert modes == ["person", "building"]

        for _ in range(2):
            await user.send_photo(photo_bytes, media_group_id="trip")
        [album] = await tg_fake.wait_call("sendMediaGroup")  # one media group, one caption
        assert [m.get("caption") for m in album["media"]][0].startswith("2 photos colorized"), album["media"]
        assert [m.get("caption") for m in album["media"]][1:] == [None]
        assert all(is_tinted(album.files[str(i)]) for i in range(2))
        album_status = [c for c in tg_fake.calls_to("sendMessage") if c["text"] == text("received", "en")][-1]
        await tg_fake.wait_for(
            lambda: [
                c for c in tg_fake.calls_to("deleteMessage") if c["message_id"] == album_status.result["message_id"]
            ]
        )


async def test_cancel_while_waiting(whole_system, user, tg_fake, comfy_fake, photo_bytes):
    comfy_fake.delay_s = 5
    async with whole_system():
        await user.send_photo(photo_bytes)
        await user.wait_text("Queued — #1")
        edit = [c for c in tg_fake.calls_to("editMessageText") if c["text"].startswith("Queued")][0]
        [cancel] = markup_buttons(edit)
        assert parse(cancel).action == "cancel"
        await user.press(cancel, edit["message_id"])
        await user.wait_text(text("cancelled", "en"))
        assert not tg_fake.calls_to("sendDocument")
