"""Sizing the worker pool from queue depth, with Celery's own remote control.

``smartroute queues`` measures each queue over a short window; ``smartroute autoscale``
turns that into a process count per worker node and applies it with
``pool_grow`` / ``pool_shrink``. On Kubernetes, prefer KEDA on the Redis list length
(docs/operations.md); this is for hosts where SmartRoute runs its own workers.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from celery import Celery

from smartroute.infra.queues import consumers, queue_depths


@dataclass(frozen=True)
class QueueReport:
    queue: str
    depth: int
    consumers: list[str]
    drain_per_s: float
    processes_needed: int


def processes_needed(
    depth: int, drain_per_s: float, busy_processes: int, target_wait_s: float
) -> int:
    """Processes that would clear ``depth`` messages within ``target_wait_s``.

    Each busy process drains ``drain_per_s / busy_processes`` messages a second. With no
    measured drain yet (nothing ran in the window) and work waiting, one more process
    than is busy is the honest answer: grow step by step until there is a rate to use.
    """
    if depth == 0:
        return 0
    if drain_per_s <= 0 or busy_processes == 0:
        return busy_processes + 1
    per_process = drain_per_s / busy_processes
    return math.ceil(depth / (per_process * target_wait_s))


def _processed_by_queue(app: Celery, stats: dict, queues: tuple[str, ...]) -> dict[str, int]:
    # Celery counts finished tasks by name, not by queue: matching tasks are counted against
    # the default region's queue (per-region drain needs per-region workers to tell apart).
    routes = app.conf.task_routes or {}
    totals = dict.fromkeys(queues, 0)
    for node_stats in stats.values():
        for task, count in node_stats.get("total", {}).items():
            queue = routes.get(task, {}).get("queue", app.conf.task_default_queue)
            totals[queue] = totals.get(queue, 0) + count
    return totals


def pool_sizes(stats: dict) -> dict[str, int]:
    """Each worker node's current number of pool processes."""
    return {node: len(s.get("pool", {}).get("processes", [])) for node, s in stats.items()}


def measure(
    app: Celery,
    queues: tuple[str, ...],
    *,
    window_s: float = 2.0,
    target_wait_s: float = 5.0,
    timeout: float = 1.0,
) -> list[QueueReport]:
    """Depth, consumers and drain rate of each queue, sampled over ``window_s``."""
    inspect = app.control.inspect(timeout=timeout)
    before_stats = inspect.stats() or {}
    before, started = _processed_by_queue(app, before_stats, queues), time.monotonic()
    # A rate needs two samples; this pause is the measurement window, not a wait for an event.
    time.sleep(window_s)
    after_stats = inspect.stats() or {}
    after, elapsed = _processed_by_queue(app, after_stats, queues), time.monotonic() - started
    depths = queue_depths(app, queues)
    by_queue = consumers(app, timeout)
    busy = sum(pool_sizes(after_stats).values())
    reports = []
    for queue in queues:
        drain = max(0, after.get(queue, 0) - before.get(queue, 0)) / elapsed
        reports.append(
            QueueReport(
                queue=queue,
                depth=depths.get(queue, 0),
                consumers=sorted(by_queue.get(queue, [])),
                drain_per_s=round(drain, 2),
                processes_needed=processes_needed(depths.get(queue, 0), drain, busy, target_wait_s),
            )
        )
    return reports


@dataclass(frozen=True)
class Resize:
    node: str
    current: int
    target: int


def plan(
    reports: list[QueueReport], sizes: dict[str, int], minimum: int, maximum: int
) -> list[Resize]:
    """Spread the processes the queues need evenly over the nodes, within the bounds."""
    if not sizes:
        return []
    needed = sum(r.processes_needed for r in reports)
    per_node = min(maximum, max(minimum, math.ceil(needed / len(sizes))))
    return [Resize(node, current, per_node) for node, current in sorted(sizes.items())]


def apply(app: Celery, resizes: list[Resize]) -> None:
    for resize in resizes:
        delta = resize.target - resize.current
        if delta > 0:
            app.control.pool_grow(delta, destination=[resize.node])
        elif delta < 0:
            app.control.pool_shrink(-delta, destination=[resize.node])


def as_dicts(items) -> list[dict]:
    return [asdict(i) for i in items]
