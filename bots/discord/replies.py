"""The reply channel a Discord task carries, and what the sender reads back from it.

An interaction token lets us answer for 15 minutes; we stop trusting it a little earlier so a slow
upload never races the expiry, and fall back to a plain channel message after that.
"""

from __future__ import annotations

import time
from typing import Any

import discord

from backend.replies import DiscordReply, Reply
from backend.texts import pick_lang

TOKEN_LIFETIME_S = 15 * 60
TOKEN_MARGIN_S = 90
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


def user_key(user_id: int) -> str:
    """The backend's id for a Discord user."""
    return f"discord:{user_id}"


def is_admin(interaction: discord.Interaction, settings: Any) -> bool:
    """Admins (DISCORD_ADMIN_IDS) are exempt from the per-user limits."""
    return interaction.user.id in settings.discord_admin_ids


def lang_of(interaction: discord.Interaction) -> str:
    return pick_lang(str(interaction.locale.value))


def reply_for(interaction: discord.Interaction, *, private: bool, part: str | None = None) -> DiscordReply:
    """Everything the sender needs to answer this interaction later, from another process.

    `part` ("2/4") marks one of several photos answered through the same interaction."""
    return DiscordReply(
        application_id=str(interaction.application_id),
        interaction_token=interaction.token,
        token_expires_at=time.time() + TOKEN_LIFETIME_S - TOKEN_MARGIN_S,
        channel_id=str(interaction.channel_id),
        user_id=str(interaction.user.id),
        guild_id=str(interaction.guild_id) if interaction.guild_id else None,
        lang=lang_of(interaction),
        private=private,
        upload_limit=interaction.filesize_limit,
        **({"part": part} if part else {}),
    )


def token_alive(reply: DiscordReply, now: float | None = None) -> bool:
    token, expires = reply.interaction_token, reply.token_expires_at
    return bool(token) and expires is not None and (now if now is not None else time.time()) < expires


def asked_privately(reply: Reply) -> bool:
    """Whether the photo was asked for privately: what answers it (ephemeral replies, DMs) is too."""
    return isinstance(reply, DiscordReply) and bool(reply.private)


def upload_limit(reply: DiscordReply) -> int:
    return int(reply.upload_limit or DEFAULT_UPLOAD_LIMIT)
