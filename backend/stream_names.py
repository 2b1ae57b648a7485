"""The streams and consumer groups every process agrees on (DESIGN.md), as one value: the names
always travel together, so the composition root builds them once from Settings and hands them on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamNames:
    """Stream and group names; the defaults are Settings' defaults.

    :param tasks_stream: where intake queues tasks for the workers
    :param results_stream: where workers publish results for the notifiers
    :param dead_stream: where poison tasks and undeliverable results end up
    :param events_stream: progress events the notifiers turn into status edits
    :param workers_group: the workers' consumer group on `tasks_stream`
    :param notifiers_group: the notifiers' consumer group on `results_stream`
    """

    tasks_stream: str = "photo_repair_tasks"
    results_stream: str = "photo_repair_results"
    dead_stream: str = "photo_repair_dead"
    events_stream: str = "photo_repair_events"
    workers_group: str = "repair_workers"
    notifiers_group: str = "notifiers"


DEFAULT_STREAMS = StreamNames()  # what a part uses when it is given no names: Settings' defaults
