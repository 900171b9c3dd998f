"""Celery's queues: what each is called, what is waiting in it, and who consumes it.

Matching goes to one queue per region (``dispatch.<region>``), so workers can be pinned to
regions and scaled apart; pushes go to ``notify``, the sweeps to ``maintenance``. The API's
health and metrics, the workers' snapshots and the scaling report read the broker through
here, never through Celery's connection pool directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:  # Only for annotations: settings import the names without Celery.
    from celery import Celery

NOTIFY = "notify"
MAINTENANCE = "maintenance"


def dispatch_queue(region: str) -> str:
    """The queue a region's matching runs on."""
    return f"dispatch.{region}"


def queue_depths(app: Celery, queues: tuple[str, ...]) -> dict[str, int]:
    """Messages waiting in each queue (a passive declare: works on Redis and AMQP alike)."""
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        with conn.channel() as channel:
            return depths_on(channel, queues)


def pooled_queue_depths(app: Celery, queues: tuple[str, ...], timeout_s: float) -> dict[str, int]:
    """``queue_depths`` through a connection of the app's broker pool (kept between calls)
    rather than a new one per call: for a scrape that runs every few seconds."""
    with app.pool.acquire(block=True, timeout=timeout_s) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout_s)
        return depths_on(conn.default_channel, queues)


def depths_on(channel, queues: tuple[str, ...]) -> dict[str, int]:
    """``queue_depths`` on a channel the caller already holds (a pooled connection's)."""
    depths = {}
    for queue in queues:
        try:
            depths[queue] = channel.queue_declare(queue, passive=True).message_count
        except Exception:  # An AMQP queue no worker has declared yet holds nothing.
            depths[queue] = 0
    return depths


def ping_broker(app: Celery, timeout_s: float) -> None:
    """Raise unless the broker answers now, on a connection of the app's pool (the one
    publishing uses), kept open between calls."""
    with app.pool.acquire(block=True, timeout=timeout_s) as conn:
        conn.ensure_connection(max_retries=0, timeout=timeout_s)
        # An open kombu connection to Redis says nothing of Redis now: ask it.
        client = getattr(conn.default_channel, "client", None)
        if isinstance(client, redis.Redis):
            client.ping()


def consumers(app: Celery, timeout: float = 1.0) -> dict[str, list[str]]:
    """For each queue, the worker nodes consuming it (those answering within ``timeout``)."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    by_queue: dict[str, list[str]] = {}
    for node, queues in replies.items():
        for queue in queues:
            by_queue.setdefault(queue["name"], []).append(node)
    return by_queue
