"""Which worker nodes are alive: each node's main process says so in Redis every few seconds.

Health reads this instead of broadcasting a ping from a task. A ping holds the worker
process that runs it for its whole reply timeout, and in the chaos suite a ping sent by a
prefork child that had been stopped and woken went on waiting for replies until the hard
time limit killed it, a dispatch process lost for a minute.

One sorted set, node name → time of its last beat: writing is one ZADD, reading one
ZRANGEBYSCORE, whatever else lives in Redis. The workers beat (``workers.heartbeat``); the
API's metrics and beat's health snapshot read.
"""

from __future__ import annotations

import redis

KEY = "smartroute:workers-alive"
EVERY_S = 5.0
# A node missing three beats in a row is gone (stopped, killed, or its host is).
GONE_AFTER_S = 3 * EVERY_S


def beat(client: redis.Redis, node: str, now: float) -> None:
    with client.pipeline() as pipe:
        pipe.zadd(KEY, {node: now})
        pipe.zremrangebyscore(KEY, "-inf", now - GONE_AFTER_S)
        pipe.execute()


def alive(client: redis.Redis, now: float) -> list[str]:
    """The nodes that beat within the last ``GONE_AFTER_S``, by name."""
    # redis-py types a synchronous client's reply as "this, or an awaitable of it".
    nodes: list[bytes] = client.zrangebyscore(  # type: ignore[assignment]
        KEY, now - GONE_AFTER_S, "+inf"
    )
    return sorted(node.decode() for node in nodes)


def leave(client: redis.Redis, node: str) -> None:
    client.zrem(KEY, node)
