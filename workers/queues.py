"""What is waiting in the broker, and who is consuming it: for metrics, health and scaling."""

from __future__ import annotations

from celery import Celery


def queue_depths(app: Celery, queues: tuple[str, ...]) -> dict[str, int]:
    """Messages waiting in each queue (a passive declare: works on Redis and AMQP alike)."""
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        with conn.channel() as channel:
            return depths_on(channel, queues)


def depths_on(channel, queues: tuple[str, ...]) -> dict[str, int]:
    """``queue_depths`` on a channel the caller already holds (a pooled connection's)."""
    depths = {}
    for queue in queues:
        try:
            depths[queue] = channel.queue_declare(queue, passive=True).message_count
        except Exception:  # An AMQP queue no worker has declared yet holds nothing.
            depths[queue] = 0
    return depths


def consumers(app: Celery, timeout: float = 1.0) -> dict[str, list[str]]:
    """For each queue, the worker nodes consuming it (those answering within ``timeout``)."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    by_queue: dict[str, list[str]] = {}
    for node, queues in replies.items():
        for queue in queues:
            by_queue.setdefault(queue["name"], []).append(node)
    return by_queue
