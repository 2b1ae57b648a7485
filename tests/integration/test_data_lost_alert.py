"""Redis restarted empty: what is lost can't be told to its users, so the admins are told, once."""

from __future__ import annotations

from backend import alerts, keys
from backend.alerts import Alerts, Reading
from backend.streams import ConsumerGroup


class Admins:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def __call__(self, message: str) -> int:
        self.messages.append(message)
        return 1


async def test_a_vanished_group_is_recreated_and_the_admins_are_told_once(redis, settings):
    stream = settings.tasks_stream
    group = ConsumerGroup(
        redis, group=settings.workers_group, streams={stream: "0"}, role="worker", dead_stream=settings.dead_stream
    )
    group.consumer = "host-worker-0"
    await group.ensure_groups()
    await redis.xadd(stream, {"n": "1"})
    await group.read_new(1, block=False)
    await redis.flushall()  # what a restart without persistence leaves

    assert await group.read_new(1, block=False) == []  # NOGROUP: the group is made again
    assert [g["name"] for g in await redis.xinfo_groups(stream)] == [settings.workers_group.encode()]
    assert await alerts.read_data_lost(redis) == 1

    admins = Admins()
    watcher = Alerts(redis, admins, alert_lang=settings.alert_lang)
    observed = Reading(
        dead_added=0,
        comfyui_up=[True],
        oldest_waiting_s=0.0,
        bot_errors={},
        data_lost=await alerts.read_data_lost(redis),
    )
    await watcher.evaluate(observed)
    await watcher.evaluate(observed)
    assert len(admins.messages) == 1 and "Redis lost its data" in admins.messages[0]
    assert await redis.hget(keys.DATA_LOST, settings.workers_group) == b"1"
