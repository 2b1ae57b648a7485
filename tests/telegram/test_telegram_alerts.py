"""Alerts in the Telegram bot: admins mute them with /mute_alerts, and the error handler reports what
it caught for the admins' alert, which carries its short, scrubbed traceback to their chat (PTB's
errorhandlerbot pattern)."""

from __future__ import annotations

from backend import alerts
from backend.processes import build_ops
from backend.texts import text
from tests.telegram.conftest import ADMIN_ID


async def test_admin_mutes_and_unmutes_alerts(bot, admin):
    await admin.command("/mute_alerts 30")
    await admin.wait_text("Alerts muted for 30 min.")
    assert 1700 < await alerts.muted_for_s(bot.redis) <= 1800
    await admin.command("/mute_alerts 0")
    await admin.wait_text("Alerts are on again.")
    assert await alerts.muted_for_s(bot.redis) == 0
    await admin.command("/mute_alerts soon")
    await admin.wait_text("Use /mute_alerts <minutes>")


async def test_mute_alerts_is_refused_for_others(bot, user):
    await user.command("/mute_alerts 30")
    await user.wait_text(text("not_allowed", "en"))
    assert await alerts.muted_for_s(bot.redis) == 0


async def test_a_handler_error_reaches_the_admin_chat_with_a_short_scrubbed_traceback(
    start_bot, user, tg_fake, tg_sender
):
    """The error handler's report goes out through the alert path (what the notifier's ops run does) to
    the admins' chat: which error, the innermost frames, and no bot token."""
    async with start_bot() as (services, errors):

        async def broken(*args: object) -> None:
            raise RuntimeError(f"redis went away after {tg_fake.api_base}/bot{tg_fake.token}/getMe")

        services.intake.set_default_mode = broken
        await user.command("/mode person")
        await user.wait_text(text("error_generic", "en"))
        await user.fake.wait_for(lambda: errors)  # the test's own error handler runs after the bot's
        assert [type(e) for e in errors] == [RuntimeError]
        assert await alerts.read_bot_errors(services.redis) == {"telegram": (1, "RuntimeError")}

        async def deliver(message: str) -> int:
            return await tg_sender.send_admin_alert(message, [ADMIN_ID])

        await build_ops(services.settings, services.redis, deliver=deliver).evaluate_alerts()
        [alert] = [c["text"] for c in tg_fake.calls_to("sendMessage") if int(c["chat_id"]) == ADMIN_ID]
    assert alert.startswith("⚠️ The telegram bot caught 1 error in its handlers (last: RuntimeError)")
    assert "Traceback (most recent call last)" in alert and ", in broken" in alert
    assert alert.rstrip().endswith("RuntimeError: redis went away after " + f"{tg_fake.api_base}/bot<token>/getMe")
    assert tg_fake.token not in alert and len(alert) < 1200


async def test_an_error_in_the_album_windows_job_is_answered_and_reported(start_bot, user, photo_bytes):
    """The album is queued by a JobQueue job, not a handler: its failure still reaches the error
    handler with the photo's update, so the user is told and the admins' alert counts it."""
    async with start_bot() as (services, errors):

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("redis went away")

        services.intake.submit_many = broken
        await user.send_photo(photo_bytes, media_group_id="album-x")
        await user.send_photo(photo_bytes, media_group_id="album-x")
        await user.wait_text(text("error_generic", "en"))
        await user.fake.wait_for(lambda: errors)  # the test's own error handler runs after the bot's
        assert [type(e) for e in errors] == [RuntimeError]
        assert await alerts.read_bot_errors(services.redis) == {"telegram": (1, "RuntimeError")}
