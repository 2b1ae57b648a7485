"""The Bot API fake refuses what Telegram refuses, in Telegram's words, so bot tests can't pass on leniency."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.fakes import telegram_api as tg

CHAT = 4242


async def call(fake: tg.FakeTelegram, method: str, **params) -> tuple[int, dict]:
    form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{fake.api_base}{fake.token}/{method}", data=form) as response:
            return response.status, await response.json()


def refused(description: str) -> tuple[int, dict]:
    return 400, {"ok": False, "error_code": 400, "description": description}


def keyboard(data: str) -> dict:
    return {"inline_keyboard": [[{"text": "b", "callback_data": data}]]}


@pytest.mark.parametrize(
    "method,params,description",
    [
        ("sendMessage", {"text": "x" * 4097}, tg.TEXT_TOO_LONG),
        ("sendMessage", {"text": "hi", "reply_markup": keyboard("x" * 65)}, tg.BUTTON_DATA_INVALID),
        ("sendDocument", {"document": "F1", "caption": "x" * 1025}, tg.CAPTION_TOO_LONG),
        ("editMessageText", {"message_id": 1, "text": "hi"}, tg.EDIT_NOT_FOUND),
        ("deleteMessage", {"message_id": 1}, tg.DELETE_NOT_FOUND),
    ],
)
async def test_what_telegram_refuses(tg_fake, method, params, description):
    assert await call(tg_fake, method, chat_id=CHAT, **params) == refused(description)


async def test_a_message_is_edited_only_into_something_new_and_deleted_once(tg_fake):
    status = tg_fake.bot_message(CHAT, "Queued", keyboard("c:1"))
    assert await call(
        tg_fake, "editMessageText", chat_id=CHAT, message_id=status, text="Queued", reply_markup=keyboard("c:1")
    ) == refused(tg.NOT_MODIFIED)
    status_code, body = await call(tg_fake, "editMessageText", chat_id=CHAT, message_id=status, text="Queued")
    assert status_code == 200 and "reply_markup" not in body["result"]  # dropping the buttons is a change
    assert (await call(tg_fake, "deleteMessage", chat_id=CHAT, message_id=status))[0] == 200
    assert await call(tg_fake, "deleteMessage", chat_id=CHAT, message_id=status) == refused(tg.DELETE_NOT_FOUND)
    assert await call(tg_fake, "editMessageText", chat_id=CHAT, message_id=status, text="Done") == refused(
        tg.EDIT_NOT_FOUND
    )


async def test_get_file_refuses_files_over_20_mb(tg_fake):
    file_id = tg_fake.add_file(b"jpeg", size=tg.MAX_GETFILE_BYTES + 1)
    assert await call(tg_fake, "getFile", file_id=file_id) == refused(tg.FILE_TOO_BIG)
