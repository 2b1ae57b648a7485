"""Small Redis marks the bots keep to honour their platform's rules, shared by every bot process.

- Discord takes one answer per interaction: the first delivery to defer marks it, a replay does not
  defer again.
- Telegram allows a bot few edits per chat: one progress edit per chat per interval.
- Discord caps command creations per day: the hash of the last synced commands per application and
  scope, so a restart syncs only what changed.
"""

from __future__ import annotations

from redis.asyncio import Redis

from backend import keys


async def first_to_defer(redis: Redis, interaction_id: int | str, *, ttl_s: int) -> bool:
    """True for the first delivery of this interaction that asks (it defers); False for a replay."""
    return bool(await redis.set(keys.discord_deferred(interaction_id), "1", nx=True, ex=ttl_s))


async def progress_edit_allowed(redis: Redis, chat_id: int | str, *, interval_s: float) -> bool:
    """At most one progress edit per chat per `interval_s`, whichever process asks first."""
    if interval_s <= 0:
        return True
    return bool(await redis.set(keys.telegram_progress(chat_id), "1", nx=True, px=max(1, int(interval_s * 1000))))


class CommandDigests:
    """The hash of the commands last synced, per application and scope (a guild id, or "global")."""

    def __init__(self, redis: Redis, application_id: int):
        self.redis = redis
        self.application_id = application_id

    async def get(self, scope: str) -> str | None:
        stored = await self.redis.get(keys.discord_commands(self.application_id, scope))
        return stored.decode() if isinstance(stored, bytes) else stored

    async def put(self, scope: str, digest: str) -> None:
        await self.redis.set(keys.discord_commands(self.application_id, scope), digest)

    async def forget(self, scope: str) -> bool:
        """Drop the scope's hash; False when there was none."""
        return bool(await self.redis.delete(keys.discord_commands(self.application_id, scope)))
