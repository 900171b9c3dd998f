"""Publish requests are coalesced: one publisher message stands for every commit until
the publisher's run ends (smartroute.infra.enqueue, workers.tasks.publish_outbox)."""

from __future__ import annotations

import json

import pytest
import redis
from sqlalchemy import func, select

from dispatch.models import OutboxEvent
from smartroute.infra.celery_app import create_celery
from smartroute.infra.enqueue import PUBLISH_OUTBOX, PUBLISH_SCHEDULED, request_publish
from tests import factories
from workers import context


def _publish_messages(cache: redis.Redis) -> list[dict]:
    return [json.loads(m)["headers"] for m in cache.lrange("notify", 0, -1)]


@pytest.fixture
def worker_context(settings, monkeypatch):
    """workers.context (sessions, Redis, publisher) on the test services, in this process."""
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    caches = (context.settings, context.sessions, context.cache, context.publisher)
    for cached in caches:
        cached.cache_clear()
    yield
    for cached in caches:
        cached.cache_clear()


def test_commits_ride_along_with_one_publish_until_the_run_ends(
    settings, committed_sessions, worker_context, now
):
    from workers.tasks import publish_outbox

    app, cache = create_celery(settings), redis.Redis.from_url(settings.redis_url)
    with committed_sessions() as session, session.begin():
        factories.booking(session, factories.rider(session), now=now)  # Its events: unsent.
    for _commit in range(3):
        request_publish(app, cache)
    [first] = _publish_messages(cache)
    assert first["task"] == PUBLISH_OUTBOX
    # No countdown: a worker holding an unacked countdown message dies if Redis goes away.
    assert first["eta"] is None

    assert publish_outbox() == 2  # The booking's two events: to admins and to its rider.
    with committed_sessions() as session:
        assert session.scalar(select(func.count(OutboxEvent.id))) == 0  # Delivered: gone.
    # The run has ended: the next commit asks for a run of its own.
    assert cache.get(PUBLISH_SCHEDULED) is None
    request_publish(app, cache)
    assert len(_publish_messages(cache)) == 2
