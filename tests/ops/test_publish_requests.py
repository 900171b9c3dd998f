"""Publish requests are coalesced: one publisher message stands for every commit until
the publisher starts reading (workers.dispatching), as the broker holds them."""

from __future__ import annotations

import json

import redis

from workers.app import create_celery
from workers.dispatching import PUBLISH_OUTBOX, publish_started, request_publish


def _publish_messages(cache: redis.Redis) -> list[dict]:
    return [json.loads(m)["headers"] for m in cache.lrange("notify", 0, -1)]


def test_commits_ride_along_with_one_publish_until_the_publisher_starts(settings, clean_db):
    app, cache = create_celery(settings), redis.Redis.from_url(settings.redis_url)
    for _commit in range(3):
        request_publish(app, cache)

    [first] = _publish_messages(cache)
    assert first["task"] == PUBLISH_OUTBOX
    # No countdown: a worker holding an unacked countdown message dies if Redis goes away.
    assert first["eta"] is None

    # Events committed once the publisher has read its rows need a run of their own.
    publish_started(cache)
    request_publish(app, cache)
    request_publish(app, cache)
    assert len(_publish_messages(cache)) == 2
