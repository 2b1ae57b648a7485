"""Alerts fire once per condition, remind at most every ALERT_REPEAT_S, clear once, and stay quiet
while muted; events (dead letters, bot errors) are counted in, never sent twice."""

from __future__ import annotations

import fakeredis
import pytest

from backend import alerts
from backend.alerts import Alerts, Reading
from backend.texts import text


@pytest.fixture
async def redis():
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


class Admins:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def __call__(self, message: str) -> int:
        self.messages.append(message)
        return 1


def reading(**overrides) -> Reading:
    values = dict(dead_added=0, comfyui_up=[True, True], oldest_waiting_s=0.0, bot_errors={})
    values.update(overrides)
    return Reading(**values)


async def rounds(watcher: Alerts, observed: Reading, count: int = 2) -> None:
    """A change of state counts once seen in CONFIRM_ROUNDS (2) rounds in a row."""
    for _ in range(count):
        await watcher.evaluate(observed)


def make(redis, **knobs) -> tuple[Alerts, Admins]:
    admins = Admins()
    values = {"alert_wait_s": 600, "alert_repeat_s": 3600, **knobs}
    return Alerts(redis, admins, **values), admins


async def test_comfyui_down_fires_once_and_clears_once(redis):
    watcher, admins = make(redis)
    await watcher.evaluate(reading())
    assert admins.messages == []
    for _ in range(3):
        await watcher.evaluate(reading(comfyui_up=[False, False]))
    assert len(admins.messages) == 1 and "Every ComfyUI instance is down (2)" in admins.messages[0]
    await rounds(watcher, reading(comfyui_up=[False, True]))  # one back is enough
    await rounds(watcher, reading())
    assert len(admins.messages) == 2 and "ComfyUI is back" in admins.messages[1]


async def test_alerts_speak_the_admins_language_with_plurals_right(redis):
    watcher, admins = make(redis, alert_lang="zh")
    await rounds(watcher, reading(comfyui_up=[False]))
    assert admins.messages == [text("alert_comfyui_down", "zh", count=1)]
    assert admins.messages[0].startswith("⚠️ 所有 ComfyUI 实例都已宕机")
    assert text("alert_dead_letters", "en", count=1) == "⚠️ 1 new dead letter. See /dlq, then /retry or /purge_dlq."
    assert "Seen by 3 processes." in text("alert_data_lost", "en", count=3)


async def test_a_single_bad_round_is_not_news(redis):
    watcher, admins = make(redis)
    for up in ([True], [False], [True], [False], [True]):
        await watcher.evaluate(reading(comfyui_up=up))
    assert admins.messages == []


async def test_a_second_evaluator_does_not_repeat_what_the_first_sent(redis):
    first, admins = make(redis)
    await rounds(first, reading(comfyui_up=[False]))
    second, admins_too = make(redis)  # the alerts lease moved to another process
    await rounds(second, reading(comfyui_up=[False]))
    assert len(admins.messages) == 1 and admins_too.messages == []


async def test_lasting_condition_is_reminded_after_the_repeat_interval(redis):
    watcher, admins = make(redis, alert_repeat_s=0)
    await rounds(watcher, reading(oldest_waiting_s=700))
    await watcher.evaluate(reading(oldest_waiting_s=760))
    assert len(admins.messages) == 2 and admins.messages[1].startswith("(still)")
    assert "waited 12 min" in admins.messages[1]


async def test_queue_wait_needs_the_threshold(redis):
    watcher, admins = make(redis)
    await rounds(watcher, reading(oldest_waiting_s=599))
    assert admins.messages == []
    await rounds(watcher, reading(oldest_waiting_s=601))
    await rounds(watcher, reading(oldest_waiting_s=5))
    assert len(admins.messages) == 2 and "no longer wait" in admins.messages[1]


async def test_dead_letters_growth_is_sent_once_and_counted_in(redis):
    watcher, admins = make(redis)
    await watcher.evaluate(reading(dead_added=4))  # what was there before alerts existed is not news
    assert admins.messages == []
    await watcher.evaluate(reading(dead_added=6))
    assert len(admins.messages) == 1 and admins.messages[0].startswith("⚠️ 2 new dead letters")
    await watcher.evaluate(reading(dead_added=6))
    await watcher.evaluate(reading(dead_added=9))  # within the repeat interval: held back
    assert len(admins.messages) == 1


async def test_dead_letters_held_back_are_counted_in_the_next_alert(redis):
    watcher, admins = make(redis, alert_repeat_s=0)
    await watcher.evaluate(reading(dead_added=0))
    await watcher.evaluate(reading(dead_added=1))
    await watcher.evaluate(reading(dead_added=4))
    assert [m.split(" new")[0] for m in admins.messages] == ["⚠️ 1", "⚠️ 3"]


async def test_bot_errors_reported_by_the_handlers_reach_the_admins(redis):
    watcher, admins = make(redis)
    await watcher.evaluate(reading(bot_errors=await alerts.read_bot_errors(redis)))
    await alerts.report_bot_error(redis, "telegram", ValueError("boom"))
    await alerts.report_bot_error(redis, "telegram", KeyError("x"))
    await watcher.evaluate(reading(bot_errors=await alerts.read_bot_errors(redis)))
    assert len(admins.messages) == 1
    assert "telegram bot caught 2 errors" in admins.messages[0] and "last: KeyError" in admins.messages[0]


async def test_muted_alerts_drop_events_and_announce_what_still_holds_afterwards(redis):
    watcher, admins = make(redis)
    await watcher.evaluate(reading())
    await alerts.mute(redis, 30)
    assert 0 < await alerts.muted_for_s(redis) <= 1800
    await rounds(watcher, reading(comfyui_up=[False], dead_added=3), 3)
    assert admins.messages == []
    await alerts.mute(redis, 0)
    await watcher.evaluate(reading(comfyui_up=[False], dead_added=3))
    assert len(admins.messages) == 1 and "down" in admins.messages[0]  # still down: told now; no dead letters
    await rounds(watcher, reading(dead_added=3))
    assert len(admins.messages) == 2 and "back" in admins.messages[1]


async def test_a_condition_that_began_and_ended_within_a_mute_is_never_mentioned(redis):
    watcher, admins = make(redis)
    await alerts.mute(redis, 30)
    await rounds(watcher, reading(comfyui_up=[False]))
    await rounds(watcher, reading())
    await alerts.mute(redis, 0)
    await rounds(watcher, reading())
    assert admins.messages == []


def test_the_traceback_an_admin_sees_is_short_and_scrubbed():
    def innermost(message: str) -> None:
        raise ValueError(message)

    def caught(message: str) -> str:
        try:
            innermost(message)
        except ValueError as error:
            return alerts.short_traceback(error)
        raise AssertionError("innermost raised nothing")

    trace = caught("POST https://discord.com/api/webhooks/111/" + "t" * 60 + " failed")
    assert trace.startswith("Traceback") and ", in innermost" in trace
    assert trace.endswith("ValueError: POST https://discord.com/api/webhooks/111/<token> failed")
    long = caught("x" * 5000)
    assert len(long) == alerts.TRACE_CHARS + 1 and long.startswith("…") and long.endswith("x" * 100)
