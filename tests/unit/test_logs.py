"""One Redactor on the root handler removes secrets from messages, arguments, tracebacks and URLs;
JSON lines carry the task id set with about_task."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets

import pytest
from pydantic import SecretStr

from backend.logs import JsonFormatter, Redactor, TextFormatter, about_task
from backend.settings import Settings


@pytest.fixture
def tokens() -> dict[str, str]:
    return {
        "telegram": f"{1000 + secrets.randbelow(10**6)}:{secrets.token_urlsafe(20)}",
        "discord": secrets.token_urlsafe(30),
        "password": secrets.token_hex(8),
    }


def capture(formatter: logging.Formatter, redactor: Redactor) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(redactor)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.logs.{secrets.token_hex(4)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger, out


def settings_with(tokens: dict[str, str]) -> Settings:
    return Settings(
        _env_file=None,
        telegram_bot_token=SecretStr(tokens["telegram"]),
        discord_bot_token=SecretStr(tokens["discord"]),
        redis_url=f"redis://:{tokens['password']}@redis:6379/0",
    )


def test_secrets_leave_messages_arguments_and_tracebacks(tokens):
    logger, out = capture(TextFormatter(), Redactor(settings_with(tokens).secrets()))
    logger.info("GET http://api/bot%s/getMe and %s", tokens["telegram"].replace(":", "%3A"), tokens["discord"])
    try:
        raise RuntimeError(f"auth failed for redis://:{tokens['password']}@redis:6379 with {tokens['discord']}")
    except RuntimeError:
        logger.exception("connect failed")
    text = out.getvalue()
    assert all(secret not in text for secret in tokens.values()), text
    assert "/bot<token>/getMe" in text and "<secret>" in text and "RuntimeError" in text
    assert text.count("\n") == 2  # one line per event, the traceback folded in


def test_json_lines_carry_the_task_id_of_the_task_being_handled(tokens):
    logger, out = capture(JsonFormatter(), Redactor(settings_with(tokens).secrets()))

    async def handle(task_id: str) -> None:
        about_task(task_id)
        await asyncio.sleep(0)
        logger.info("working with token %s", tokens["discord"])

    async def main() -> None:
        await asyncio.gather(handle("task-a"), handle("task-b"))
        logger.info("between tasks")

    asyncio.run(main())
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(r.get("task_id", "") for r in records) == ["", "task-a", "task-b"]
    assert all(tokens["discord"] not in r["message"] and r["level"] == "INFO" for r in records)


def test_secrets_of_reads_tokens_and_url_passwords(tokens):
    found = settings_with(tokens).secrets()
    assert set(found) == set(tokens.values())
