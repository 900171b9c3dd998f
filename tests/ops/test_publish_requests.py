"""Publish requests are coalesced: one delayed publisher message stands for every commit
until the publisher starts reading (workers.dispatching), as the broker holds them."""

from __future__ import annotations

import datetime as dt
import json

import redis

from workers.app import create_celery
from workers.dispatching import PUBLISH_OUTBOX, publish_started, request_publish


def _publish_messages(cache: redis.Redis) -> list[dict]:
    return [json.loads(m)["headers"] for m in cache.lrange("notify", 0, -1)]


def test_commits_ride_along_with_one_delayed_publish_until_the_publisher_starts(
        settings, clean_db):
    app, cache = create_celery(settings), redis.Redis.from_url(settings.redis_url)
    asked_at = dt.datetime.now(dt.UTC)
    for _commit in range(3):
        request_publish(app, cache, delay_s=0.25)

    [first] = _publish_messages(cache)
    assert first["task"] == PUBLISH_OUTBOX
    eta = dt.datetime.fromisoformat(first["eta"])
    assert dt.timedelta(seconds=0.2) <= eta - asked_at <= dt.timedelta(seconds=1)

    # Events committed once the publisher has read its rows need a run of their own.
    publish_started(cache)
    request_publish(app, cache, delay_s=0)
    request_publish(app, cache, delay_s=0)
    assert [m["eta"] for m in _publish_messages(cache)] == [None, first["eta"]]
