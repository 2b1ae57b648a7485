"""`repairbot notifier` as a real process, killed with SIGKILL while Telegram's answer to the file is on
its way: the notifier that takes over sends only that file again, never the photo Telegram answered."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from backend.processes import build_notifier
from backend.redis_conn import connect
from backend.replies import TelegramReply
from backend.services import make_blob_store
from backend.settings import REPO_ROOT
from backend.tasks import Result
from bots.telegram.sender import build_sender
from tests.telegram.conftest import telegram_settings
from tests.telegram.test_telegram_sender import png

CHAT = 4242


async def test_kill_9_mid_send_resends_only_the_part_in_flight(settings, tg_fake, redis, tmp_path: Path):
    system = telegram_settings(settings, tg_fake).model_copy(update={"consumer_lease_s": 2.0})
    connection = connect(system)
    blobs = make_blob_store(system, connection)
    status = tg_fake.bot_message(CHAT, "Queued")
    result = Result(
        task_id="5" * 32,
        status="ok",
        mode="person",
        input=await blobs.put("in", png((32, 32))),
        output=await blobs.put("out", png((64, 64))),
        run_ms=1000,
        reply=TelegramReply(chat_id=CHAT, status_message_id=status, lang="en", as_file=True),
    )  # sent as a file: the photo and the file come back
    await redis.xadd(system.results_stream, result.encode())

    answer_file = asyncio.Event()
    take_file = tg_fake._m_sendDocument

    async def file_taken_answer_held(params, files):
        outcome = await take_file(params, files)
        await answer_file.wait()
        return outcome

    tg_fake._m_sendDocument = file_taken_answer_held
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "PTB_TIMEDELTA": "1",
        "REDIS_URL": system.redis_url,
        "TELEGRAM_BOT_TOKEN": tg_fake.token,
        "TELEGRAM_API_BASE": tg_fake.api_base,
        "TELEGRAM_FILE_BASE": tg_fake.file_base,
        "CONSUMER_LEASE_S": "2",
        "MIN_IDLE_MS": str(system.min_idle_ms),
        "BLOCK_MS": str(system.block_ms),
        "VAR_DIR": str(tmp_path / "var"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backend.cli",
        "notifier",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await tg_fake.wait_call("sendDocument", timeout=30)
    finally:
        process.send_signal(signal.SIGKILL)
        output, _ = await process.communicate()
        answer_file.set()
    tg_fake._m_sendDocument = take_file
    assert tg_fake.calls_to("sendPhoto"), output.decode(errors="replace")

    sender = build_sender(system, blobs, overall_max_rate=0, group_max_rate=0)
    notifier = build_notifier(system, redis, {"telegram": sender})
    running = asyncio.create_task(notifier.run())
    try:
        await tg_fake.wait_call("deleteMessage", timeout=30)  # taken over once the dead one's lease lapsed
    finally:
        notifier.stop()
        await running
        await connection.aclose()
    assert len(tg_fake.calls_to("sendPhoto")) == 1, "the photo Telegram had answered is not posted again"
    assert len(tg_fake.calls_to("sendDocument")) == 2, "the file whose answer was in flight goes again"
    assert len(tg_fake.calls_to("deleteMessage")) == 1
