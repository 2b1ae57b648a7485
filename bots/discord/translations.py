"""Command names and descriptions in Simplified Chinese, from the shared catalog.

Discord shows a command's localized name and description to users whose client is set to that
locale; discord.py asks this translator while syncing. Strings carry their catalog key
(`locale_str("...", key="cmd_colorize")`); the English text stays the default.
"""

from __future__ import annotations

from discord import Locale, app_commands

from backend.texts import CATALOG, text

CHINESE = (Locale.chinese, Locale.taiwan_chinese)


class CatalogTranslator(app_commands.Translator):
    async def translate(
        self, string: app_commands.locale_str, locale: Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        if locale not in CHINESE:
            return None
        translated = string.extras.get("translated") or {}
        if "zh" in translated:  # manifest texts (mode choices) carry their own translation
            return translated["zh"]
        key = string.extras.get("key")
        return text(key, "zh") if key in CATALOG["zh"] else None


def localized(default: str, key: str) -> app_commands.locale_str:
    """`default` for everyone, the catalog's `key` where a translation exists."""
    return app_commands.locale_str(default, key=key)
