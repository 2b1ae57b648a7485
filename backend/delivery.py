"""What keeps a result posted once across notifier processes and crashes, in Redis.

- `SendClaim`: one notifier process at a time sends a given result (SET NX with a token and a TTL,
  renewed while sending, released only by its owner), so two result entries for one task, or two
  notifiers holding one entry each, never post it concurrently. Each claim opens a delivery round;
  rounds that failed and rounds a crash cut short are counted apart (budgets in the notifier).
- `PartStore` / `SendParts`: which parts of a multi-part result (photo, file, status edit, a note)
  went out. A part is marked in flight before its request and sent after its reply, so a notifier
  killed mid-send re-sends at most the one part whose reply was in flight. The senders use it; they
  name their own parts, the notifier only forgets the record once the result is delivered.

Nothing here knows a chat platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from backend import keys
from backend.backoff import Backoff
from backend.batching import GroupCommit
from backend.redis_conn import REDIS_DOWN

log = logging.getLogger(__name__)

CLAIM_TTL_MS = 10_000  # the notifier uses its consumer lease: a dead owner's claim lapses as its entries move on
MARK_RETRY_FIRST_S, MARK_RETRY_MAX_S = 0.2, 5.0  # a sent part's mark, written again while Redis is away
IN_FLIGHT = "sending"
SENT = "sent"

# A result's delivery rounds (`keys.send_rounds`, a hash) tell two endings apart:
# - `failed`: rounds that ended with every send retry used up ("left pending"): the result's fault, or
#   its chat's, as far as anyone can tell; MAX_DELIVERIES of them dead-letter it.
# - `interrupted`: rounds cut short by a crash: a claim was taken and no outcome was recorded. Its own,
#   larger budget (MAX_INTERRUPTED_DELIVERIES), so a notifier killed at random never dead-letters a
#   healthy result, and one that kills the notifier on every try is still dead-lettered in the end.
# - `open`: the token of the round under way. A round that ends in this process (delivered, failed,
#   handed back, an error) clears it on release; one still open at the next claim died with its notifier.
#
# Per claim KEYS: the claim, the task's delivered mark, its rounds. ARGV: claim TTL (ms), rounds TTL (s),
# then each claim's token. Per claim {2, 0, 0}: delivered already; {0, 0, 0}: another process holds the
# claim; {1, failed, interrupted}: ours, and a round is open. One round trip for what every result
# claimed at once needs before it is sent.
_BEGIN = """
local function begin(claim, delivered, rounds, token)
  if redis.call('EXISTS', delivered) == 1 then return {2, 0, 0} end
  if not redis.call('SET', claim, token, 'NX', 'PX', ARGV[1]) then return {0, 0, 0} end
  if redis.call('TYPE', rounds).ok == 'string' then
    local legacy = redis.call('GET', rounds)
    redis.call('DEL', rounds)
    redis.call('HSET', rounds, 'interrupted', legacy)
  end
  local interrupted = tonumber(redis.call('HGET', rounds, 'interrupted') or '0')
  if redis.call('HEXISTS', rounds, 'open') == 1 then
    interrupted = redis.call('HINCRBY', rounds, 'interrupted', 1)
  end
  redis.call('HSET', rounds, 'open', token)
  redis.call('EXPIRE', rounds, ARGV[2])
  return {1, tonumber(redis.call('HGET', rounds, 'failed') or '0'), interrupted}
end
local out = {}
for i = 1, #ARGV - 2 do
  out[i] = begin(KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i], ARGV[i + 2])
end
return out
"""
# KEYS: the rounds. ARGV: token, rounds TTL (s). Our open round ended with every retry used up.
_ROUND_FAILED = """
if redis.call('HGET', KEYS[1], 'open') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'open')
local failed = redis.call('HINCRBY', KEYS[1], 'failed', 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return failed
"""
# KEYS: claims. ARGV: claim TTL (ms), then each claim's token. Per claim 1 when renewed, 0 when it is
# no longer ours (it lapsed).
_RENEW_IF_OWNER = """
local out = {}
for i, claim in ipairs(KEYS) do
  out[i] = 0
  if redis.call('GET', claim) == ARGV[i + 1] then out[i] = redis.call('PEXPIRE', claim, ARGV[1]) end
end
return out
"""
# KEYS: the claim, the rounds. ARGV: token. The round closes (a crash is the only way to skip this), the
# claim goes. The round is closed even when the claim lapsed meanwhile: the token says it is still ours.
_RELEASE_IF_OWNER = """
if redis.call('HGET', KEYS[2], 'open') == ARGV[1] then redis.call('HDEL', KEYS[2], 'open') end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Per result KEYS: the delivered mark, the parts record, the rounds, the claim, the entry's stream; ARGV:
# delivered TTL (s), group, entry id, token. Each result reached its chat: marked delivered first, then
# acknowledged (XACK only after the mark, both in one step), and the claim released if still ours. Per
# result the XACK's reply, or -1 when the group is gone (Redis restarted empty: nothing is pending).
_DELIVERED = """
local out = {}
for i = 1, #KEYS / 5 do
  local k, a = 5 * (i - 1), 4 * (i - 1)
  redis.call('SET', KEYS[k + 1], '1', 'EX', ARGV[a + 1])
  redis.call('DEL', KEYS[k + 2], KEYS[k + 3])
  local acked = redis.pcall('XACK', KEYS[k + 5], ARGV[a + 2], ARGV[a + 3])
  if type(acked) ~= 'number' then acked = -1 end
  if redis.call('GET', KEYS[k + 4]) == ARGV[a + 4] then redis.call('DEL', KEYS[k + 4]) end
  out[i] = acked
end
return out
"""

DELIVERED, HELD_ELSEWHERE, ACQUIRED = 2, 0, 1


class _Tokens:
    """Claim tokens: a random prefix per process and a counter. Unique across processes and rounds,
    which is all a token is for, without a getrandom call and a UUID object per result (about a tenth
    of the notifier's CPU per result). A forked child draws a prefix of its own."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix, self._count = secrets.token_hex(12), itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):x}"


_tokens = _Tokens()


class SendClaims:
    """Makes the send claim of each result; the scripts are registered once.

    The claims of many results in hand at once share their round trips: the claims taken in one
    tick go out in one script call, so do the results marked delivered, and one heartbeat renews
    every claim held.

    :param ttl_ms: how long a claim outlives a silent owner; renewed every third of it while held
    :param rounds_ttl_s: how long a result's delivery-round counters are kept
    """

    def __init__(self, redis: Redis, *, ttl_ms: int = CLAIM_TTL_MS, rounds_ttl_s: int = 7 * 24 * 3600):
        self.redis = redis
        self.ttl_ms = ttl_ms
        self.rounds_ttl_s = rounds_ttl_s
        self.begin_script = redis.register_script(_BEGIN)
        self.round_failed_script = redis.register_script(_ROUND_FAILED)
        self.renew_script = redis.register_script(_RENEW_IF_OWNER)
        self.release_script = redis.register_script(_RELEASE_IF_OWNER)
        self.delivered_script = redis.register_script(_DELIVERED)
        self._begins: GroupCommit[SendClaim, Any] = GroupCommit(self._begin_all)
        self._deliveries: GroupCommit[_Delivered, Any] = GroupCommit(self._mark_all_delivered)
        self._held: set[SendClaim] = set()
        self._renewing: asyncio.Task[None] | None = None

    def for_task(self, task_id: str) -> SendClaim:
        return SendClaim(self, task_id)

    async def _begin_all(self, claims: list[SendClaim]) -> list[Any]:
        script_keys: list[str] = []
        for claim in claims:
            script_keys += [claim.key, keys.delivered(claim.task_id), claim.rounds_key]
        tokens = [claim.token for claim in claims]
        return list(await self.begin_script(keys=script_keys, args=[self.ttl_ms, self.rounds_ttl_s, *tokens]))

    async def _mark_all_delivered(self, marks: list[_Delivered]) -> list[Any]:
        script_keys: list[str] = []
        args: list[str | int] = []
        for mark in marks:
            claim = mark.claim
            task_id = claim.task_id
            script_keys += [keys.delivered(task_id), keys.send_parts(task_id), claim.rounds_key, claim.key, mark.stream]
            args += [mark.ttl_s, mark.group, mark.entry_id, claim.token]
        return list(await self.delivered_script(keys=script_keys, args=args))

    # --- one heartbeat for every claim held ------------------------------------------------------
    def _hold(self, claim: SendClaim) -> None:
        self._held.add(claim)
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.create_task(self._keep_renewed(), name="send-claims")

    def _let_go(self, claim: SendClaim) -> None:
        self._held.discard(claim)
        if not self._held and self._renewing is not None:
            self._renewing.cancel()
            self._renewing = None

    async def _keep_renewed(self) -> None:
        """Every third of the TTL, renew each claim held (one script call); a lapsed one is marked lost."""
        while self._held:
            await asyncio.sleep(self.ttl_ms / 3000)
            held = list(self._held)
            if not held:
                continue
            try:
                replies = await self.renew_script(
                    keys=[claim.key for claim in held], args=[self.ttl_ms, *(claim.token for claim in held)]
                )
            except Exception as exc:  # noqa: BLE001 - try again at the next renewal
                log.warning("could not renew %d send claim(s): %s", len(held), exc)
                continue
            for claim, renewed in zip(held, replies):
                if not renewed and claim in self._held:
                    claim.lost = True
                    self._held.discard(claim)
                    log.warning("send claim %s lapsed while held; the send stops after this part", claim.key)


@dataclass(frozen=True)
class _Delivered:
    claim: SendClaim
    stream: str
    group: str
    entry_id: str
    ttl_s: int


class SendClaim:
    """The right to send one task's result, held by one process at a time."""

    def __init__(self, claims: SendClaims, task_id: str):
        self.claims = claims
        self.task_id = task_id
        self.key = keys.send_claim(task_id)
        self.ttl_ms = claims.ttl_ms
        self.token = _tokens.next()
        self.rounds_key = keys.send_rounds(task_id)
        self.failed_rounds = 0  # earlier rounds of this result that used up every send retry (once acquired)
        self.interrupted_rounds = 0  # earlier rounds cut short by a crash, no outcome recorded (once acquired)
        self.lost = False  # the claim lapsed while held (a stall longer than the TTL): stop sending
        self._released = False  # `delivered` released it already

    async def try_acquire(self) -> int:
        """ACQUIRED (a round is open, and the earlier ones counted), HELD_ELSEWHERE, or DELIVERED already."""
        state, failed, interrupted = await self.claims._begins.submit(self)
        self.failed_rounds, self.interrupted_rounds = int(failed), int(interrupted)
        return int(state)

    async def round_failed(self) -> None:
        """This round used up every send retry: it counts against MAX_DELIVERIES."""
        await self.claims.round_failed_script(keys=[self.rounds_key], args=[self.token, self.claims.rounds_ttl_s])

    async def delivered(self, stream: str, group: str, entry_id: str, *, ttl_s: int) -> None:
        """The result is in its chat: `delivered:<task_id>` set (for `ttl_s`), its parts record and rounds
        forgotten, then its entry acknowledged and the claim released, in one step."""
        await self.claims._deliveries.submit(_Delivered(self, stream, group, entry_id, ttl_s))
        self._released = True

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[SendClaim]:
        """Keep the (acquired) claim renewed while the body runs; released by its owner on the way out."""
        self.claims._hold(self)
        try:
            yield self
        finally:
            self.claims._let_go(self)
            if not self._released:
                try:
                    await self.claims.release_script(keys=[self.key, self.rounds_key], args=[self.token])
                except Exception as exc:  # noqa: BLE001 - it lapses by itself within its TTL
                    log.info(
                        "send claim %s not released (%s); it lapses in %d ms, and this round counts as interrupted",
                        self.key,
                        exc,
                        self.ttl_ms,
                    )


class SendParts:
    """The parts of one result already sent (or in flight when a previous try stopped)."""

    def __init__(self, redis: Redis, task_id: str, state: dict[str, str], ttl_s: int):
        self.redis = redis
        self.task_id = task_id
        self.key = keys.send_parts(task_id)
        self.state = state
        self.ttl_s = ttl_s

    def sent(self, part: str) -> bool:
        return self.state.get(part) == SENT

    def was_in_flight(self, part: str) -> bool:
        """The part was being sent when the last try stopped: it may be in the chat already."""
        return self.state.get(part) == IN_FLIGHT

    async def sending(self, part: str) -> None:
        """Recorded before the part's request goes out."""
        if self.was_in_flight(part):
            log.info("re-sending %s of %s: its reply was in flight when the last try stopped", part, self.task_id)
        await self._mark(part, IN_FLIGHT)

    async def done(self, part: str) -> None:
        """Recorded once the platform answered; a later try skips this part.

        The chat has the part now, so a Redis outage at this moment must not turn into a second post:
        the mark is kept and written again until Redis answers (or this process is stopped).
        """
        self.state[part] = SENT
        backoff = Backoff(MARK_RETRY_FIRST_S, MARK_RETRY_MAX_S)
        while True:
            try:
                await self._mark(part, SENT)
                return
            except REDIS_DOWN as exc:
                delay = backoff.next_delay()
                log.warning(
                    "%s of %s was sent but Redis is away (%s): keeping the mark, retrying in %.1f s",
                    part,
                    self.task_id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _mark(self, part: str, value: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, part, value)
            pipe.expire(self.key, self.ttl_s)
            await pipe.execute()
        self.state[part] = value

    async def forget(self) -> None:
        """For a result that will never be retried as it stands (refused for good)."""
        await self.redis.delete(self.key)
        self.state.clear()


class PartStore:
    """Where the senders keep their per-part progress; the record lives as long as a delivered mark."""

    def __init__(self, redis: Redis, *, ttl_s: int = 7 * 24 * 3600):
        self.redis = redis
        self.ttl_s = ttl_s

    async def parts(self, task_id: str) -> SendParts:
        raw = await self.redis.hgetall(keys.send_parts(task_id))
        state = {_text(k): _text(v) for k, v in raw.items()}
        return SendParts(self.redis, task_id, state, self.ttl_s)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
