"""Names of the Redis keys that are not streams, in one place so every process agrees on them."""

PAUSED = "repairbot:paused"
RUN_TIMES = "repairbot:run_times"  # list of recent run times (ms), newest first
DONE_LOG = "repairbot:done"  # sorted set: "<task_id>:<status>:<run_ms>" scored by finish time (ms)


def task(task_id: str) -> str:
    """Hash with a task's owner, state, stream ordinal and where it runs (for position and cancel)."""
    return f"repairbot:task:{task_id}"


def result(task_id: str) -> str:
    """The stored result fields: a redelivered task whose result exists is re-published, not re-run."""
    return f"repairbot:result:{task_id}"


def delivered(task_id: str) -> str:
    return f"delivered:{task_id}"


def send_rounds(task_id: str) -> str:
    """How many times a notifier has tried to deliver this result (the notifier's poison counter)."""
    return f"repairbot:send_rounds:{task_id}"


def event_claim(event_key: str) -> str:
    """Hash (task_id, reply) of the task a platform event was queued as: its idempotency key, with a TTL.

    `event_key` is the bot's name for the event, e.g. `telegram:<chat>:<message>` or
    `discord:<interaction>:<attachment>`."""
    return f"repairbot:event:{event_key}"


def event_turn(event_key: str) -> str:
    """Held (with a short TTL) by the one delivery of an event being queued; a second delivery waits."""
    return f"repairbot:event:{event_key}:turn"


def send_claim(task_id: str) -> str:
    """Token of the one notifier process sending this task's result right now (with a TTL)."""
    return f"repairbot:send_claim:{task_id}"


def send_parts(task_id: str) -> str:
    """Hash part -> "sending" | "sent" of a result's delivery (photo, file, status...), kept across crashes."""
    return f"repairbot:send_parts:{task_id}"


def waiting_results(results_stream: str, platform: str) -> str:
    """Stream where results for `platform` wait while no running notifier has its sender."""
    return f"{results_stream}:waiting:{platform}"


def cancelled(task_id: str) -> str:
    return f"repairbot:cancel:{task_id}"


def album(chat_id: int | str, status_message_id: int | str, part: str) -> str:
    """One part ("left", "finished", "tasks") of the photos under one Telegram status message."""
    return f"repairbot:telegram:album:{chat_id}:{status_message_id}:{part}"


def discord_deferred(interaction_id: int | str) -> str:
    """Set by the first delivery of an interaction that deferred it (Discord takes one answer)."""
    return f"repairbot:discord:deferred:{interaction_id}"


def discord_commands(application_id: int | str, scope: str) -> str:
    """The hash of the commands last synced for an application and scope (a guild id or "global")."""
    return f"repairbot:discord:commands:{application_id}:{scope}"


def telegram_progress(chat_id: int | str) -> str:
    """Held for the progress-edit interval after an edit in this chat (expires by itself)."""
    return f"repairbot:telegram:progress:{chat_id}"


def user_active(user: str) -> str:
    """Set of the user's task ids that are queued or running."""
    return f"repairbot:user:{user}:active"


def user_recent(user: str) -> str:
    """Sorted set of the user's submissions in the last hour, scored by time (ms)."""
    return f"repairbot:user:{user}:recent"


def user_mode(user: str) -> str:
    return f"repairbot:user:{user}:mode"


DATA_LOST = "repairbot:data_lost"  # hash: consumer group -> times a process found it gone (Redis emptied)


def consumer_lease(group: str, name: str) -> str:
    """Held by the live process using a consumer name, so two processes never share one."""
    return f"repairbot:lease:{group}:{name}"
