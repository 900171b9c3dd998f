"""Live workers, as health reports them: each node's heartbeat in Redis
(smartroute.infra.heartbeat)."""

from __future__ import annotations

import time

import redis

from smartroute.infra import heartbeat
from tests.support import wait_for


def test_a_worker_node_beats_while_it_runs_and_leaves_when_it_stops(worker, settings):
    cache = redis.Redis.from_url(settings.redis_url)
    wait_for(
        lambda: worker.name in heartbeat.alive(cache, time.time()), 10, "the node's first heartbeat"
    )
    worker.process.terminate()  # A warm shutdown: the node takes itself off.
    worker.process.wait(timeout=20)
    assert worker.name not in heartbeat.alive(cache, time.time())


def test_a_node_that_stops_beating_is_gone_after_three_missed_beats(settings):
    cache = redis.Redis.from_url(settings.redis_url)
    now = time.time()
    heartbeat.beat(cache, "killed@host", now - heartbeat.GONE_AFTER_S - 1)
    heartbeat.beat(cache, "late@host", now - heartbeat.GONE_AFTER_S + 1)
    heartbeat.beat(cache, "fresh@host", now)
    try:
        assert heartbeat.alive(cache, now) == ["fresh@host", "late@host"]
        # Each beat also drops the entries of nodes long gone.
        assert cache.zscore(heartbeat.KEY, "killed@host") is None
    finally:
        cache.zrem(heartbeat.KEY, "late@host", "fresh@host")
