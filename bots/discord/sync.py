"""Register the commands with Discord only when they changed: Discord caps command creations per day.

The hash of the exact payload discord.py would send is kept (backend.platform_marks) per application and scope
(a guild id from DISCORD_GUILD_IDS, where changes show at once, or "global"). Moving from global to
guild commands clears the global ones once. If someone deletes the commands on Discord's side,
delete the `repairbot:discord:commands:*` keys and restart to register them again.
"""

from __future__ import annotations

import hashlib
import json
import logging

import discord
from discord import app_commands
from redis.asyncio import Redis

from backend.platform_marks import CommandDigests

log = logging.getLogger(__name__)


async def commands_digest(tree: app_commands.CommandTree) -> str:
    """A hash of what sync would send, translations included (a changed translation syncs too)."""
    commands = tree.get_commands()
    translator = tree.translator
    if translator is not None:
        payload = [await command.get_translated_payload(tree, translator) for command in commands]
    else:
        payload = [command.to_dict(tree) for command in commands]
    encoded = json.dumps(sorted(payload, key=lambda c: (c.get("type", 1), c["name"])), sort_keys=True)
    return hashlib.sha256(encoded.encode()).hexdigest()


async def sync_if_changed(
    tree: app_commands.CommandTree, redis: Redis, *, application_id: int, guild_ids: list[int]
) -> list[str]:
    """Sync each scope whose stored hash differs; returns the scopes that were synced."""
    digest = await commands_digest(tree)
    stored = CommandDigests(redis, application_id)
    synced = []
    for guild_id in guild_ids or [None]:
        scope = str(guild_id) if guild_id else "global"
        if await stored.get(scope) == digest:
            continue
        if guild_id:
            guild = discord.Object(guild_id)
            tree.copy_global_to(guild=guild)
            await tree.sync(guild=guild)
        else:
            await tree.sync()
        await stored.put(scope, digest)
        synced.append(scope)
        log.info("synced Discord commands (%s)", scope)
    if guild_ids and await stored.get("global") is not None:
        # Moved from global to guild commands: drop the global ones, or the guilds would list each twice.
        await tree.client.http.bulk_upsert_global_commands(application_id, [])
        await stored.forget("global")
        synced.append("global (cleared)")
        log.info("cleared the global Discord commands now that DISCORD_GUILD_IDS is set")
    return synced
