"""Which worker nodes are alive: each node's main process says so in Redis every few seconds.

Health reads this instead of broadcasting a ping from a task. A ping holds the worker
process that runs it for its whole reply timeout, and in the chaos suite a ping sent by a
prefork child that had been stopped and woken went on waiting for replies until the hard
time limit killed it, a dispatch process lost for a minute.

One sorted set, node name → time of its last beat: writing is one ZADD, reading one
ZRANGEBYSCORE, whatever else lives in Redis.
"""

from __future__ import annotations

import contextlib
import logging
import time

import redis
from celery import bootsteps

from workers.context import cache

log = logging.getLogger(__name__)

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
    return sorted(node.decode() for node in
                  client.zrangebyscore(KEY, now - GONE_AFTER_S, "+inf"))


def leave(client: redis.Redis, node: str) -> None:
    client.zrem(KEY, node)


class Heartbeat(bootsteps.StartStopStep):
    """A worker bootstep: beat on the worker's own timer, leave on a warm shutdown."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.timer_ref = None

    def start(self, worker) -> None:
        self.timer_ref = worker.timer.call_repeatedly(EVERY_S, self._beat, (worker,),
                                                      priority=10)
        self._beat(worker)

    def stop(self, worker) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
        with contextlib.suppress(redis.RedisError, OSError):  # Else its entry lapses.
            leave(cache(), worker.hostname)

    def _beat(self, worker) -> None:
        try:
            beat(cache(), worker.hostname, time.time())
        except (redis.RedisError, OSError) as exc:  # Redis down: the node just looks gone.
            log.warning("worker heartbeat not written: %s", exc.__class__.__name__)
