"""Fixtures for the Telegram bot: the Bot API fake, the real PTB Application polling it, and a chat user."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from backend.services import Services
from backend.settings import Settings
from bots.telegram.app import build_application, running
from bots.telegram.ratelimit import FloodAwareRateLimiter
from bots.telegram.sender import build_sender
from tests.fakes.telegram_api import FakeTelegram

ADMIN_ID = 9001
USER_ID = 4242


@pytest.fixture
async def tg_fake() -> AsyncIterator[FakeTelegram]:
    fake = await FakeTelegram().start()
    yield fake
    await fake.stop()


def telegram_settings(settings: Settings, fake: FakeTelegram, **overrides: Any) -> Settings:
    return settings.model_copy(
        update={
            "telegram_bot_token": SecretStr(fake.token),
            "telegram_api_base": fake.api_base,
            "telegram_file_base": fake.file_base,
            "telegram_admin_ids": [ADMIN_ID],
            **overrides,
        }
    )


@pytest.fixture
def tg_settings(settings: Settings, tg_fake: FakeTelegram) -> Settings:
    return telegram_settings(settings, tg_fake)


class ChatUser:
    """A Telegram user in a private chat with the bot, pushing updates into the fake."""

    def __init__(self, fake: FakeTelegram, user_id: int = USER_ID, lang: str = "en"):
        self.fake = fake
        self.id = user_id
        self.lang = lang

    def _message(self, **content: Any) -> dict[str, Any]:
        return {
            "message_id": self.fake.next_message_id(),
            "date": 1700000000,
            "chat": {"id": self.id, "type": "private"},
            "from": {"id": self.id, "is_bot": False, "first_name": "Ann", "language_code": self.lang},
            **content,
        }

    async def send_photo(
        self,
        data: bytes,
        *,
        caption: str | None = None,
        file_size: int | None = None,
        media_group_id: str | None = None,
    ) -> dict[str, Any]:
        file_id = self.fake.add_file(data, size=file_size)
        size = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "width": 512,
            "height": 512,
            "file_size": self.fake.file_sizes[file_id],
        }
        extra: dict[str, Any] = {"photo": [size]}
        if caption:
            extra["caption"] = caption
        if media_group_id:
            extra["media_group_id"] = media_group_id
        return (await self.fake.push_update({"message": self._message(**extra)}))["message"]

    async def send_document(
        self,
        data: bytes,
        *,
        mime: str = "image/jpeg",
        name: str = "scan.jpg",
        file_size: int | None = None,
        size_declared: bool = True,
    ) -> dict[str, Any]:
        """An image sent as a file; `file_size` is its size on Telegram's servers, left out of the
        message when not `size_declared` (Telegram may omit it)."""
        file_id = self.fake.add_file(data, size=file_size)
        document = {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_name": name, "mime_type": mime}
        if size_declared:
            document["file_size"] = self.fake.file_sizes[file_id]
        return (await self.fake.push_update({"message": self._message(document=document)}))["message"]

    async def command(self, line: str) -> dict[str, Any]:
        name = line.split()[0]
        entities = [{"type": "bot_command", "offset": 0, "length": len(name)}]
        return (await self.fake.push_update({"message": self._message(text=line, entities=entities)}))["message"]

    async def press(self, data: str, message_id: int) -> str:
        """Press an inline button under the bot's message `message_id`; returns the query id."""
        query_id = f"q{self.fake.next_message_id()}"
        message = self.fake.message(self.id, message_id) or {
            "message_id": message_id,
            "date": 1700000000,
            "chat": {"id": self.id, "type": "private"},
            "text": "status",
        }
        await self.fake.push_update(
            {
                "callback_query": {
                    "id": query_id,
                    "chat_instance": "ci",
                    "data": data,
                    "message": message,
                    "from": {"id": self.id, "is_bot": False, "first_name": "Ann", "language_code": self.lang},
                }
            }
        )
        return query_id

    def texts(self) -> list[str]:
        """Every text the bot sent or edited into this chat, in order."""
        return [
            str(c.params.get("text"))
            for c in self.fake.calls
            if c.method in ("sendMessage", "editMessageText") and int(c.params.get("chat_id", 0)) == self.id
        ]

    async def wait_text(self, fragment: str) -> str:
        return await self.fake.wait_for(lambda: next((t for t in self.texts() if fragment in t), None))


@pytest.fixture
def start_bot(tg_fake: FakeTelegram, settings: Settings):
    """`async with start_bot(**settings_overrides) as (services, errors):` runs the bot, polling the fake."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[tuple[Services, list[BaseException]]]:
        bot_settings = telegram_settings(settings, tg_fake, **overrides)
        services = Services.create(bot_settings)
        app = build_application(
            bot_settings, services, rate_limiter=FloodAwareRateLimiter(overall_max_rate=0, group_max_rate=0)
        )
        errors: list[BaseException] = []

        async def record(update: object, context: Any) -> None:
            errors.append(context.error)

        app.add_error_handler(record)
        try:
            async with running(app, bot_settings):
                yield services, errors
        finally:
            await services.close()

    return start


@pytest.fixture
async def bot(start_bot) -> AsyncIterator[Services]:
    """The bot with test settings; fails the test if a handler raised."""
    async with start_bot() as (services, errors):
        yield services
    assert not errors, errors


@pytest.fixture
def user(tg_fake: FakeTelegram) -> ChatUser:
    return ChatUser(tg_fake)


@pytest.fixture
def admin(tg_fake: FakeTelegram) -> ChatUser:
    return ChatUser(tg_fake, ADMIN_ID)


@pytest.fixture
async def tg_sender(tg_settings: Settings):
    """The notifier-side sender against the fake, no flood pacing, progress edits unthrottled."""
    from backend.redis_conn import connect
    from backend.services import make_blob_store

    redis = connect(tg_settings)
    sender = build_sender(tg_settings, make_blob_store(tg_settings, redis), overall_max_rate=0, group_max_rate=0)
    await sender.start()
    yield sender
    await sender.close()
    await redis.aclose()
