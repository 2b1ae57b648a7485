"""Alerts in the Telegram bot: admins mute them with /mute_alerts, and the error handler reports what
it caught for the admins' alert (PTB's errorhandlerbot pattern)."""

from __future__ import annotations

from backend import alerts
from backend.texts import text


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


async def test_the_error_handler_reports_what_it_caught(start_bot, user):
    async with start_bot() as (services, errors):

        async def broken(*args: object) -> None:
            raise RuntimeError("redis went away")

        services.intake.set_default_mode = broken
        await user.command("/mode person")
        await user.wait_text(text("error_generic", "en"))
        assert await alerts.read_bot_errors(services.redis) == {"telegram": (1, "RuntimeError")}
