"""A region's batch sets the window its next batch waits, from the pressure it met
(workers.tasks.dispatch_region, dispatch.matching.window), on real PostgreSQL and Redis."""

from __future__ import annotations

import time

import pytest
import redis
from sqlalchemy import select

from dispatch.models import DispatchLogEntry
from smartroute.infra.driver_index import RedisDriverIndex
from smartroute.infra.enqueue import batch_window, batch_window_key, set_batch_window
from tests import factories
from workers import context


@pytest.fixture
def worker_context(settings, monkeypatch):
    """workers.context on the test services, in this process, with the default policy."""
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SMARTROUTE_BATCH_WINDOW_S", raising=False)
    monkeypatch.delenv("SMARTROUTE_BATCH_WINDOW_MIN_S", raising=False)
    caches = (context.settings, context.sessions, context.cache, context.driver_index)
    for cached in caches:
        cached.cache_clear()
    cache = redis.Redis.from_url(settings.redis_url)
    cache.delete(batch_window_key("default"))
    yield cache
    cache.delete(batch_window_key("default"))
    for cached in caches:
        cached.cache_clear()


def _drivers_and_bookings(sessions, cache, now, drivers: int, bookings: int) -> None:
    index = RedisDriverIndex(cache, stale_s=120)
    with sessions() as session, session.begin():
        for i in range(drivers):
            at = factories.offset(factories.LISBON, north_km=0.1 * i)
            driver = factories.driver(session, at, now=now, name=f"driver-{i}")
            index.update(driver.user_id, at.lat, at.lng)
        rider = factories.rider(session)
        for _ in range(bookings):
            factories.booking(session, rider, now=now)


def test_a_batch_among_plenty_of_drivers_halves_the_window(committed_sessions, worker_context, now):
    from workers.tasks import dispatch_region

    cache = worker_context
    set_batch_window(cache, "default", 1.0)
    _drivers_and_bookings(committed_sessions, cache, now, drivers=10, bookings=1)
    assert dispatch_region("default", 1.0, time.time())["offered"] == 1
    assert batch_window(cache, "default") == 0.5
    with committed_sessions() as session:
        # The dispatch log says how long this batch waited to gather its booking.
        assert session.scalars(select(DispatchLogEntry.window_s)).all() == [1.0]


def test_bookings_contending_for_few_drivers_grow_the_window(
    committed_sessions, worker_context, now
):
    from workers.tasks import dispatch_region

    cache = worker_context
    _drivers_and_bookings(committed_sessions, cache, now, drivers=3, bookings=3)
    # No window set yet: the region was at the minimum, and one crowded batch grows it.
    assert dispatch_region("default", 0.02, time.time())["offered"] == 3
    assert batch_window(cache, "default") == pytest.approx(0.1)


def test_a_batch_that_starts_late_grows_the_window(committed_sessions, worker_context, now):
    """Workers behind their queue: the batch started well after its window closed."""
    from workers.tasks import dispatch_region

    cache = worker_context
    set_batch_window(cache, "default", 0.2)
    _drivers_and_bookings(committed_sessions, cache, now, drivers=10, bookings=1)
    dispatch_region("default", 0.2, time.time() - 5.0)
    assert batch_window(cache, "default") == pytest.approx(0.4)
