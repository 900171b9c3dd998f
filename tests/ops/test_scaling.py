"""`smartroute queues` and `smartroute autoscale` against a live Celery worker pool."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from tests.support import stop_consuming, wait_for

SMARTROUTE = [sys.executable, "-m", "smartroute"]


def _processes(celery, name) -> int:
    stats = celery.control.inspect(destination=[name], timeout=1).stats() or {}
    return len(stats.get(name, {}).get("pool", {}).get("processes", []))


def _cli(env, *args) -> dict | list:
    out = subprocess.run(
        [*SMARTROUTE, *args, "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_queues_and_autoscale_follow_the_backlog(worker, settings):
    celery, name, env, _ = worker
    broker = redis.Redis.from_url(settings.redis_url)
    stop_consuming(celery, name, "dispatch.default", broker)
    for _ in range(30):  # Work for bookings that cannot exist: quick to run once consumed.
        celery.send_task("workers.tasks.match_booking", args=[2**62], queue="dispatch.default")

    report = {q["queue"]: q for q in _cli(env, "queues", "--window", "0.5")}
    assert report["dispatch.default"]["depth"] == 30
    assert report["dispatch.default"]["consumers"] == []
    assert report["dispatch.default"]["processes_needed"] >= 2

    # Nothing drains (no consumer), so there is no rate to size from: it grows a step a
    # round, and never past --max.
    for current, target in ((1, 2), (2, 3), (3, 3)):
        grown = _cli(env, "autoscale", "--once", "--window", "0.5", "--min", "1", "--max", "3")
        assert grown["resizes"] == [{"node": name, "current": current, "target": target}]
        wait_for(lambda t=target: _processes(celery, name) == t, 20, f"the pool to reach {target}")

    celery.control.add_consumer("dispatch.default", destination=[name], reply=True)
    wait_for(lambda: broker.llen("dispatch.default") == 0, 30, "the backlog to drain")
    shrunk = _cli(env, "autoscale", "--once", "--window", "0.5", "--min", "1", "--max", "3")
    assert shrunk["resizes"] == [{"node": name, "current": 3, "target": 1}]
    wait_for(lambda: _processes(celery, name) == 1, 20, "the pool to shrink to 1")
