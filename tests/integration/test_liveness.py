"""Liveness, not only idleness: owner-checked consumer leases, a dead worker's work taken over as its
lease lapses (long before MIN_IDLE_MS), and a stalled worker that lost its name stepping aside.
Real redis-server; real worker subprocesses where something is killed or stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pydantic
import pytest

from backend import keys
from backend.replies import LoopbackReply
from backend.services import Services
from backend.settings import Settings
from backend.streams import ConsumerGroup, Entry
from tests.e2e.test_cli_e2e import Stack, prompt_reached, stack_env

REPLY = LoopbackReply()


class Hands:
    """A minimal streams.Holder: what a worker or notifier tells its group's heartbeat."""

    def __init__(self, room: int = 0):
        self.held: list[Entry] = []
        self.free = room
        self.adopted: list[Entry] = []
        self.lost: list[Entry] = []

    def in_hand(self) -> list[Entry]:
        return list(self.held)

    def room(self) -> int:
        return self.free

    def adopt(self, entry: Entry) -> None:
        self.adopted.append(entry)
        self.held.append(entry)

    def taken_away(self, entries: list[Entry]) -> None:
        self.lost += entries


def group(redis, settings, *, lease_s: float, holder=None) -> ConsumerGroup:
    return ConsumerGroup(
        redis,
        group=settings.workers_group,
        streams={settings.tasks_stream: "0"},
        role="worker",
        dead_stream=settings.dead_stream,
        lease_s=lease_s,
        holder=holder,
    )


def test_settings_refuse_min_idle_close_to_block_plus_refresh():
    with pytest.raises(pydantic.ValidationError, match="MIN_IDLE_MS=2000 is too close to BLOCK_MS=2000"):
        Settings(_env_file=None, block_ms=2000, min_idle_ms=2000)
    with pytest.raises(pydantic.ValidationError, match="MIN_IDLE_MS"):
        Settings(_env_file=None, block_ms=2000, min_idle_ms=8000, consumer_lease_s=30)
    fine = Settings(_env_file=None)
    assert fine.min_idle_ms >= 2 * (fine.block_ms + fine.ownership_refresh_s * 1000)


async def test_a_lease_is_renewed_and_released_only_by_its_owner(redis, settings):
    first = group(redis, settings, lease_s=1.0)
    name = await first.acquire_name()
    first._heartbeat_task.cancel()  # a stall: nothing renews the lease any more
    await asyncio.sleep(1.2)
    assert first.name_lost
    second = group(redis, settings, lease_s=5.0)
    assert await second.acquire_name() == name  # the lapsed name is free again
    assert not await first._renew(), "the stalled owner must not renew a lease it lost"
    await first.release_name()
    assert await redis.get(keys.consumer_lease(settings.workers_group, name)) == second._token.encode()
    await second.release_name()
    assert not await redis.exists(keys.consumer_lease(settings.workers_group, name))


async def test_entries_of_a_consumer_whose_lease_lapsed_are_taken_over_at_once(redis, settings):
    stream = settings.tasks_stream
    await redis.xgroup_create(stream, settings.workers_group, id="0", mkstream=True)
    ids = [await redis.xadd(stream, {"n": str(n)}) for n in range(3)]
    dead = group(redis, settings, lease_s=0.6)
    await dead.acquire_name()
    await dead.read_new(3, block=False)
    dead._heartbeat_task.cancel()  # it dies holding three entries; no MIN_IDLE_MS wait from here on

    hands = Hands(room=10)
    alive = group(redis, settings, lease_s=5.0, holder=hands)
    await alive.acquire_name()
    assert alive.consumer != dead.consumer
    for _ in range(60):
        if len(hands.adopted) == 3:
            break
        await asyncio.sleep(0.05)
    assert sorted(e.entry_id.encode() for e in hands.adopted) == ids
    assert all(e.deliveries == 2 and e.fields for e in hands.adopted)
    pending = await redis.xpending_range(stream, settings.workers_group, "-", "+", 10)
    assert {p["consumer"].decode() for p in pending} == {alive.consumer}
    await alive.release_name()


async def test_entries_in_hand_are_not_taken_while_their_owner_lives(redis, settings):
    stream = settings.tasks_stream
    await redis.xgroup_create(stream, settings.workers_group, id="0", mkstream=True)
    await redis.xadd(stream, {"n": "1"})
    owner_hands = Hands()
    owner = group(redis, settings, lease_s=0.9, holder=owner_hands)
    await owner.acquire_name()
    owner_hands.held = await owner.read_new(1, block=False)
    other_hands = Hands(room=10)
    other = group(redis, settings, lease_s=5.0, holder=other_hands)
    await other.acquire_name()
    await asyncio.sleep(2.0)  # more than twice the owner's lease: it renewed all along
    assert other_hands.adopted == [] and owner_hands.lost == []
    [pending] = await redis.xpending_range(stream, settings.workers_group, "-", "+", 10)
    assert pending["consumer"].decode() == owner.consumer and pending["time_since_delivered"] < 900
    await owner.release_name()
    await other.release_name()


async def submit_one(settings, photo_bytes) -> str:
    async with Services.open(settings) as services:
        return (await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:1")).task_id


async def results_of(redis, settings, task_id: str) -> list[dict]:
    entries = await redis.xrange(settings.results_stream)
    return [fields for _, fields in entries if fields[b"task_id"].decode() == task_id]


async def wait_for_result(redis, settings, task_id: str, timeout: float) -> list[dict]:
    for _ in range(int(timeout / 0.05)):
        found = await results_of(redis, settings, task_id)
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no result for {task_id}")


async def test_a_killed_worker_s_task_resumes_when_its_lease_lapses_not_after_min_idle(
    redis, redis_url, settings, comfy_fake, photo_bytes, tmp_path
):
    comfy_fake.delay_s = 1.5
    env = stack_env(redis_url, comfy_fake.url, tmp_path, MIN_IDLE_MS="60000", CONSUMER_LEASE_S="2")
    stack = Stack(env, tmp_path)
    try:
        await stack.start("worker", "worker")
        task_id = await submit_one(settings, photo_bytes)
        await prompt_reached(comfy_fake)
        await stack.stop("worker", signal.SIGKILL)
        killed_at = time.monotonic()
        await stack.start("restarted", "worker")  # its old name's lease still holds: it comes up as another
        for _ in range(1500):  # a loaded machine may take seconds to start a process; MIN_IDLE is 60 s
            if len(comfy_fake.prompts) >= 2:
                break
            await asyncio.sleep(0.02)
        resumed_s = time.monotonic() - killed_at
        assert len(comfy_fake.prompts) == 2, stack.log("restarted")
        assert resumed_s < 60, "taken over by liveness, not after MIN_IDLE_MS"
        assert "whose lease lapsed" in stack.log("restarted")
        [result] = await wait_for_result(redis, settings, task_id, timeout=10)
        assert result[b"status"] == b"ok"
    finally:
        await stack.close()


async def test_a_worker_stalled_past_its_lease_steps_aside_for_the_one_that_took_over(
    redis, redis_url, settings, comfy_fake, photo_bytes, tmp_path
):
    comfy_fake.delay_s = 4.0
    env = stack_env(redis_url, comfy_fake.url, tmp_path, MIN_IDLE_MS="60000", CONSUMER_LEASE_S="1.2")
    stack = Stack(env, tmp_path)
    try:
        stalled = await stack.start("stalled", "worker")
        task_id = await submit_one(settings, photo_bytes)
        await prompt_reached(comfy_fake)
        await stack.start("other", "worker")
        os.kill(stalled.pid, signal.SIGSTOP)
        try:
            await stack.wait_for_log("other", "whose lease lapsed", timeout=10)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstalled:\n{stack.log('stalled')}") from None
        finally:
            os.kill(stalled.pid, signal.SIGCONT)
        await stack.wait_for_log("stalled", "lost its lease", timeout=10)
        await stack.wait_for_log("stalled", "stopping it", timeout=10)
        [result] = await wait_for_result(redis, settings, task_id, timeout=15)
        assert result[b"status"] == b"ok"
        await asyncio.sleep(0.5)
        assert len(await results_of(redis, settings, task_id)) == 1, "the stalled worker must not publish too"
        assert "handed back" not in stack.log("stalled").split("lost its lease")[1]
    finally:
        await stack.close()


async def test_a_process_restarted_on_a_higher_slot_moves_back_once_the_old_lease_lapsed(redis, settings):
    stream = settings.tasks_stream
    await redis.xgroup_create(stream, settings.workers_group, id="0", mkstream=True)
    await redis.xadd(stream, {"n": "1"})
    before = group(redis, settings, lease_s=0.6)
    old_name = await before.acquire_name()
    await before.read_new(1, block=False)
    before._heartbeat_task.cancel()  # killed holding an entry; its process comes back at once
    hands = Hands(room=10)
    restarted = ConsumerGroup(
        redis,
        group=settings.workers_group,
        streams={stream: "0"},
        role="worker",
        dead_stream=settings.dead_stream,
        lease_s=3.0,
        refresh_s=0.2,
        holder=hands,
    )
    assert await restarted.acquire_name() != old_name
    for _ in range(60):  # the old entry is taken over as the lease lapses...
        if hands.adopted:
            break
        await asyncio.sleep(0.05)
    [entry] = hands.adopted
    await restarted.ack(entry)
    hands.held = []
    for _ in range(60):  # ...and, holding nothing, the process takes its old name back
        if restarted.consumer == old_name:
            break
        await asyncio.sleep(0.05)
    assert restarted.consumer == old_name
    assert await redis.get(keys.consumer_lease(settings.workers_group, old_name)) == restarted._token.encode()
    # An entry a read still in flight hands the name it just left is moved over, not taken away.
    await redis.xadd(stream, {"n": "2"})
    [late] = await redis.xreadgroup(settings.workers_group, restarted._former, {stream: ">"}, count=1)
    hands.held = [Entry(stream, late[1][0][0].decode(), late[1][0][1])]
    await asyncio.sleep(0.5)
    [pending] = await redis.xpending_range(stream, settings.workers_group, "-", "+", 10)
    assert pending["consumer"].decode() == old_name and pending["times_delivered"] == 1 and hands.lost == []
    await restarted.release_name()
