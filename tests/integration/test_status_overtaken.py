"""Two processes edit one status message; their edits can reach the platform in either order. The
writer whose stage was overtaken meanwhile learns the newer text, so the status ends on the truth."""

from __future__ import annotations

import uuid

from backend.status_line import QUEUED, RUNNING, SENDING, StatusLines


async def test_the_bot_overtaken_by_the_notifier_learns_the_newer_text(redis):
    lines, line = StatusLines(redis), f"test:{uuid.uuid4().hex}"
    assert await lines.advance(line, QUEUED, "Queued — #1 in line.")  # the bot's edit, still in flight
    assert await lines.advance(line, RUNNING, "Colorizing… 0 s")  # the notifier's, landed first
    newer = await lines.overtaken(line, QUEUED)
    assert newer is not None and newer.stage == RUNNING and newer.text == "Colorizing… 0 s"


async def test_a_writer_still_current_or_a_finished_line_has_nothing_to_repeat(redis):
    lines, line = StatusLines(redis), f"test:{uuid.uuid4().hex}"
    assert await lines.overtaken(line, QUEUED) is None  # no line at all
    assert await lines.advance(line, QUEUED, "Queued — #1 in line.")
    assert await lines.overtaken(line, QUEUED) is None  # nobody moved it
    assert await lines.advance(line, SENDING, "Sending…")
    assert await lines.overtaken(line, SENDING) is None
    assert await lines.finish(line)
    assert await lines.overtaken(line, QUEUED) is None  # the result replaced the status: never edit it back
