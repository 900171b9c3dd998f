"""Drivers' positions written many at once, and the index offering only drivers heard from
lately: real PostgreSQL and real Redis."""

import datetime as dt
import time

import pytest
import redis

from dispatch.drivers import record_locations
from smartroute.infra.driver_index import (
    FIX_AT_KEY,
    KEY,
    PRESENCE_KEY,
    PingWriter,
    RedisDriverIndex,
)
from tests import factories as make


def test_many_positions_are_one_statement_and_none_moves_a_driver_backwards(session, now):
    ahead = make.driver(session, make.LISBON, now=now + dt.timedelta(seconds=30), name="ahead")
    behind = make.driver(session, make.LISBON, now=now - dt.timedelta(seconds=30), name="behind")
    offline = make.driver(session, make.LISBON, now=now - dt.timedelta(seconds=30), available=False)
    there = make.offset(make.LISBON, north_km=1)

    moved = record_locations(
        session,
        [(d.user_id, there.lat, there.lng, now) for d in (ahead, behind, offline)],
    )

    assert moved == 2
    # Seen later than this position: it keeps what it has.
    assert (ahead.lat, ahead.lng, ahead.last_seen_at) == (
        make.LISBON.lat,
        make.LISBON.lng,
        now + dt.timedelta(seconds=30),
    )
    for driver in (behind, offline):
        assert (driver.lat, driver.lng, driver.last_seen_at, driver.updated_at) == (
            there.lat,
            there.lng,
            now,
            now,
        )
    # A position changes where a driver is, never whether it takes rides.
    assert (behind.status, offline.status) == ("available", "offline")


@pytest.fixture
def cache(settings):
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(KEY, PRESENCE_KEY, FIX_AT_KEY)
    yield client
    client.delete(KEY, PRESENCE_KEY, FIX_AT_KEY)


def test_a_driver_silent_past_the_stale_setting_is_not_offered(cache):
    index = RedisDriverIndex(cache, stale_s=60)
    heard, silent = make.offset(make.LISBON, east_km=0.5), make.offset(make.LISBON, east_km=1)
    index.update(1, heard.lat, heard.lng)
    # Driver 2's last ping arrived 61 s ago (at the relay's tick, by the relay's clock).
    received = time.time() - 61
    assert PingWriter(cache).apply([(2, received, silent.lat, silent.lng, received)]) == [True]

    assert index.near_any([(make.LISBON.lat, make.LISBON.lng, 5.0)]) == {1}
    assert RedisDriverIndex(cache, stale_s=120).near_any(
        [(make.LISBON.lat, make.LISBON.lng, 5.0)]
    ) == {1, 2}
    # Not in presence at all (indexed before presence was kept): not offered either.
    cache.geoadd(KEY, (heard.lng, heard.lat, 3))
    assert index.near_any([(make.LISBON.lat, make.LISBON.lng, 5.0)]) == {1}


def test_no_index_is_none_so_batches_ask_postgresql(cache):
    index = RedisDriverIndex(cache)
    assert index.near_any([(make.LISBON.lat, make.LISBON.lng, 5.0)]) is None
    index.update(1, make.LISBON.lat, make.LISBON.lng)
    far = make.offset(make.LISBON, east_km=30)
    assert index.near_any([(far.lat, far.lng, 5.0)]) == set()


def test_a_fix_applies_only_if_newer_than_the_last_applied(cache):
    writer = PingWriter(cache)
    near, there = make.LISBON, make.offset(make.LISBON, north_km=2)
    now = time.time()
    assert writer.apply([(7, now, there.lat, there.lng, now)]) == [True]
    # An older fix, and the same fix again, arriving later: neither moves the driver.
    assert writer.apply([(7, now - 1, near.lat, near.lng, now + 1), (8, now, 0.0, 0.0, now)]) == [
        False,
        True,
    ]
    assert writer.apply([(7, now, near.lat, near.lng, now + 2)]) == [False]
    (lng, lat), *_ = cache.geopos(KEY, 7)
    assert (round(lat, 4), round(lng, 4)) == (round(there.lat, 4), round(there.lng, 4))
    assert float(cache.hget(FIX_AT_KEY, 7)) == now
    assert cache.zscore(PRESENCE_KEY, 7) == now
    # Redis forgot its scripts (a restart): loaded again, not lost.
    cache.script_flush()
    assert writer.apply([(7, now + 3, near.lat, near.lng, now + 3)]) == [True]


def test_drivers_silent_past_a_bound_are_forgotten_by_every_key(cache, monkeypatch):
    monkeypatch.setattr("smartroute.infra.driver_index.CHUNK", 2)  # Several script calls.
    index, writer = RedisDriverIndex(cache, stale_s=60), PingWriter(cache)
    now, there = time.time(), make.LISBON
    silent = [(d, now - 100, there.lat, there.lng, now - 100) for d in (1, 2, 3, 4, 5)]
    assert writer.apply([*silent, (6, now, there.lat, there.lng, now)]) == [True] * 6

    assert index.forget_silent(90) == 5

    assert [member.decode() for member in cache.zrange(KEY, 0, -1)] == ["6"]
    assert cache.zrange(PRESENCE_KEY, 0, -1) == [b"6"]
    assert cache.hkeys(FIX_AT_KEY) == [b"6"]
    assert index.forget_silent(90) == 0
    # A forgotten driver who pings again is indexed again.
    assert writer.apply([(1, now, there.lat, there.lng, now)]) == [True]
    assert index.near_any([(there.lat, there.lng, 1.0)]) == {1, 6}
