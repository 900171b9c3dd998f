"""The worker's side of the heartbeat (smartroute.infra.heartbeat): its main process beats
on the worker's own timer and leaves on a warm shutdown."""

from __future__ import annotations

import contextlib
import logging
import time

import redis
from celery import bootsteps

from smartroute.infra.heartbeat import EVERY_S, beat, leave
from workers.context import cache

log = logging.getLogger(__name__)


class Heartbeat(bootsteps.StartStopStep):
    """A worker bootstep: beat on the worker's own timer, leave on a warm shutdown."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.timer_ref = None

    def start(self, worker) -> None:
        self.timer_ref = worker.timer.call_repeatedly(EVERY_S, self._beat, (worker,), priority=10)
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
