"""Drivers' location pings over a real relay process, from real Socket.IO clients, to the
real Redis and PostgreSQL: applied a tick at a time, in order, and written behind."""

from __future__ import annotations

import time

import pytest
import redis
from sqlalchemy import text

from smartroute.infra.driver_index import FIX_AT_KEY, KEY, PRESENCE_KEY
from tests.integration.conftest import WAIT_S, new_user, relay_metric_families
from tests.integration.test_push import CENTRE
from tests.support import wait_for

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

# What the relay's defaults are (SMARTROUTE_RELAY_LOCATION_TICK_S, SMARTROUTE_LOCATION_FLUSH_S).
TICK_S, FLUSH_S = 0.2, 2.0


def relay_metrics(stack) -> dict[tuple[str, str], float]:
    """The relay's location samples: (sample name, reason label or "") -> value."""
    return {
        (sample.name, sample.labels.get("reason", "")): sample.value
        for family in relay_metric_families(stack)
        if "location" in family.name
        for sample in family.samples
    }


def metrics_once(stack, before: dict, name: str, at_least: float) -> dict | None:
    """The relay's metrics once ``name`` has grown by ``at_least`` since ``before``."""
    now = relay_metrics(stack)
    return now if grown(before, now, name) >= at_least else None


def grown(before: dict, after: dict, name: str, reason: str = "") -> float:
    return after.get((name, reason), 0.0) - before.get((name, reason), 0.0)


IGNORED = "smartroute_relay_locations_ignored_total"
APPLIED = "smartroute_relay_locations_applied_total"
RECEIVED = "smartroute_relay_location_pings_total"
WRITES = "smartroute_relay_location_write_drivers_count"
FLUSHES = "smartroute_relay_location_flush_drivers_count"
FLUSHED = "smartroute_relay_location_flush_drivers_sum"


UNFLUSHED = "smartroute_relay_locations_unflushed"


def settled(stack, admin, listeners, engine) -> dict:
    """The relay's metrics once whatever earlier tests sent is counted and written behind.

    A marker driver's ping goes through a tick and then a flush after everything sent before
    it: once PostgreSQL has it and no position waits for a flush, every counter is final."""
    marker = new_user(admin, "driver", "marker")
    far = ping(CENTRE[0], CENTRE[1] + 1.0, time.time())  # Out of every test's search radius.
    listeners(marker.token).client.call("location", far, timeout=WAIT_S)
    wait_for(lambda: stored(engine, marker.id).lat is not None, WAIT_S, "the marker in PG")
    wait_for(
        lambda: relay_metrics(stack).get((UNFLUSHED, "")) == 0, WAIT_S, "nothing left to flush"
    )
    return relay_metrics(stack)


@pytest.fixture
def cache(settings):
    return redis.Redis.from_url(settings.redis_url)


def position(cache, driver_id: int) -> tuple[float, float] | None:
    found = cache.geopos(KEY, driver_id)[0]
    return None if found is None else (round(found[1], 5), round(found[0], 5))


def stored(engine, driver_id: int):
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT lat, lng, status, last_seen_at FROM drivers WHERE user_id = :id"),
            {"id": driver_id},
        ).one()


def ping(lat: float, lng: float, at: float, **more) -> dict:
    return {"lat": lat, "lng": lng, "at": at, **more}


def test_a_ping_reaches_redis_in_a_tick_and_postgresql_within_a_flush(
    admin, listeners, cache, engine
):
    driver = new_user(admin, "driver")  # Offline, never located.
    feed = listeners(driver.token)
    at = time.time()
    sent = time.monotonic()

    answer = feed.client.call(
        "location", ping(*CENTRE, at, heading=90.0, speed=8.5, accuracy=5), timeout=WAIT_S
    )

    assert answer == {"status": 200}
    wait_for(lambda: position(cache, driver.id), WAIT_S, "the position in Redis")
    assert position(cache, driver.id) == (round(CENTRE[0], 5), round(CENTRE[1], 5))
    assert float(cache.hget(FIX_AT_KEY, driver.id)) == at
    assert at - 1 < cache.zscore(PRESENCE_KEY, driver.id) < time.time()
    wait_for(lambda: stored(engine, driver.id).lat is not None, WAIT_S, "the position in PG")
    # Within a flush (and a tick), give or take a busy machine's scheduling.
    assert time.monotonic() - sent < FLUSH_S + TICK_S + 2.5
    row = stored(engine, driver.id)
    assert (row.lat, row.lng) == CENTRE
    assert row.last_seen_at.timestamp() == pytest.approx(
        cache.zscore(PRESENCE_KEY, driver.id), abs=1e-3
    )
    # A ping says where a driver is, not that it takes rides: offline it stays.
    assert row.status == "offline"
    assert driver.call("GET", "/v1/drivers/me")["location"] == {"lat": CENTRE[0], "lng": CENTRE[1]}


def test_an_older_fix_from_another_connection_is_ignored(admin, listeners, cache, engine, stack):
    driver = new_user(admin, "driver")
    first, second = listeners(driver.token), listeners(driver.token)
    newer, older = time.time(), time.time() - 5
    first.client.emit("location", ping(*CENTRE, newer))
    wait_for(lambda: cache.hget(FIX_AT_KEY, driver.id), WAIT_S, "the first fix applied")
    before = relay_metrics(stack)

    second.client.emit("location", ping(CENTRE[0] + 0.01, CENTRE[1], older))

    wait_for(
        lambda: grown(before, relay_metrics(stack), IGNORED, "out_of_order") >= 1,
        WAIT_S,
        "the older fix to be ignored",
    )
    assert position(cache, driver.id) == (round(CENTRE[0], 5), round(CENTRE[1], 5))
    assert float(cache.hget(FIX_AT_KEY, driver.id)) == newer
    # Another driver's ping, sent after the older fix was ignored: once PostgreSQL has it,
    # it has had every flush that could have carried the older fix.
    marker = new_user(admin, "driver", "marker")
    listeners(marker.token).client.emit("location", ping(*CENTRE, time.time()))
    wait_for(lambda: stored(engine, marker.id).lat is not None, WAIT_S, "the marker in PG")
    assert (stored(engine, driver.id).lat, stored(engine, driver.id).lng) == CENTRE


def test_a_stale_fix_is_ignored_and_a_future_one_refused(admin, listeners, cache, stack):
    driver = new_user(admin, "driver")
    feed = listeners(driver.token)
    before = relay_metrics(stack)

    stale = feed.client.call("location", ping(*CENTRE, time.time() - 301), timeout=WAIT_S)
    future = feed.client.call("location", ping(*CENTRE, time.time() + 61), timeout=WAIT_S)

    assert stale == {"status": 200, "ignored": "stale"}
    assert (future["status"], future["error"]["code"], future["error"]["field"]) == (
        422,
        "invalid",
        "at",
    )
    name, error = feed.next("error")
    assert (error["code"], error["field"]) == ("invalid", "at")
    assert "ahead" in error["message"]
    wait_for(
        lambda: grown(before, relay_metrics(stack), IGNORED, "future") == 1,
        WAIT_S,
        "the ignored pings to be counted",
    )
    assert grown(before, relay_metrics(stack), IGNORED, "stale") == 1
    assert cache.hget(FIX_AT_KEY, driver.id) is None and position(cache, driver.id) is None
    assert feed.client.connected


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"lng": CENTRE[1], "at": 1.0}, "lat"),
        ({"lat": CENTRE[0], "at": 1.0}, "lng"),
        ({"lat": CENTRE[0], "lng": CENTRE[1]}, "at"),
        ({"lat": 91, "lng": CENTRE[1], "at": 1.0}, "lat"),
        ({"lat": "38.7", "lng": CENTRE[1], "at": 1.0}, "lat"),
        ({"lat": True, "lng": CENTRE[1], "at": 1.0}, "lat"),
        ({"lat": CENTRE[0], "lng": -181, "at": 1.0}, "lng"),
        ({"lat": CENTRE[0], "lng": None, "at": 1.0}, "lng"),
        ({"lat": CENTRE[0], "lng": CENTRE[1], "at": "now"}, "at"),
        ({"lat": CENTRE[0], "lng": CENTRE[1], "at": -1.0}, "at"),
        ({"lat": CENTRE[0], "lng": CENTRE[1], "at": 1.0, "heading": 361}, "heading"),
        ({"lat": CENTRE[0], "lng": CENTRE[1], "at": 1.0, "speed": -1}, "speed"),
        ({"lat": CENTRE[0], "lng": CENTRE[1], "at": 1.0, "accuracy": "5"}, "accuracy"),
        ({"lat": CENTRE[0], "lng": CENTRE[1], "at": 1.0, "altitude": 30}, "altitude"),
        ([CENTRE[0], CENTRE[1]], None),
        ("38.7,-9.1", None),
    ],
)
def test_bad_input_is_an_error_naming_the_field_and_the_connection_stays(
    admin, listeners, message, field
):
    driver = new_user(admin, "driver")
    feed = listeners(driver.token)

    feed.client.emit("location", message)  # No acknowledgement asked for.

    name, error = feed.next("error")
    assert (error["code"], error["field"]) == ("invalid", field)
    answer = feed.client.call("location", message, timeout=WAIT_S)
    assert answer == {"status": 422, "error": error}
    assert feed.client.connected


def test_only_drivers_share_a_location(admin, listeners, cache):
    rider = new_user(admin, "rider")
    for token in (rider.token, admin.http.headers["Authorization"].removeprefix("Bearer ")):
        feed = listeners(token)
        answer = feed.client.call("location", ping(*CENTRE, time.time()), timeout=WAIT_S)
        assert (answer["status"], answer["error"]["code"]) == (403, "forbidden")
        assert feed.next("error")[1]["code"] == "forbidden"
        assert feed.client.connected
    assert cache.zcard(PRESENCE_KEY) == 0


def test_pings_within_a_tick_are_one_write_of_each_driver_s_newest(
    admin, listeners, cache, engine, stack
):
    drivers = [new_user(admin, "driver", f"d{i}") for i in range(3)]
    feeds = [listeners(d.token) for d in drivers]
    before = settled(stack, admin, listeners, engine)
    pings_each = 40
    started = time.monotonic()
    at = time.time()

    for n in range(pings_each):
        for i, feed in enumerate(feeds):
            feed.client.emit("location", ping(CENTRE[0] + n / 10_000, CENTRE[1] + i / 100, at + n))
    last = at + pings_each - 1
    wait_for(
        lambda: all(float(cache.hget(FIX_AT_KEY, d.id) or 0) == last for d in drivers),
        WAIT_S,
        "every driver's last fix applied",
    )
    elapsed = time.monotonic() - started
    sent = pings_each * len(drivers)

    # Counted once the tick's write is done, a moment after Redis shows it; one scrape
    # reads the counters one after another, so wait for every one of them.
    def counted() -> dict | None:
        now = relay_metrics(stack)
        done = grown(before, now, APPLIED) + grown(before, now, IGNORED, "coalesced")
        return now if min(grown(before, now, RECEIVED), done) >= sent else None

    after = wait_for(counted, WAIT_S, "the pings to be counted")
    writes, applied = grown(before, after, WRITES), grown(before, after, APPLIED)
    assert grown(before, after, RECEIVED) == sent
    assert applied + grown(before, after, IGNORED, "coalesced") == sent
    # One Redis write a tick, whatever the number of pings in it.
    assert 1 <= writes <= elapsed / TICK_S + 2
    assert applied <= len(drivers) * writes < sent
    for i, d in enumerate(drivers):
        expected = (round(CENTRE[0] + (pings_each - 1) / 10_000, 5), round(CENTRE[1] + i / 100, 5))
        assert position(cache, d.id) == expected


def test_many_drivers_are_one_postgresql_write_and_a_silent_one_drops_out(
    admin, listeners, cache, engine, stack
):
    drivers = [new_user(admin, "driver", f"d{i}") for i in range(6)]
    feeds = [listeners(d.token) for d in drivers]
    before = settled(stack, admin, listeners, engine)
    at = time.time()

    for i, feed in enumerate(feeds):
        feed.client.emit("location", ping(CENTRE[0] + i / 1000, CENTRE[1], at))

    wait_for(
        lambda: all(stored(engine, d.id).lat is not None for d in drivers),
        WAIT_S,
        "every position in PostgreSQL",
    )
    after = wait_for(
        lambda: metrics_once(stack, before, FLUSHED, len(drivers)),
        WAIT_S,
        "the flush to be counted",
    )
    # Sent together, they land in one flush (two, if a flush fell between their ticks).
    assert grown(before, after, FLUSHED) == len(drivers)
    assert 1 <= grown(before, after, FLUSHES) <= 2
    for i, d in enumerate(drivers):
        assert (stored(engine, d.id).lat, stored(engine, d.id).lng) == (
            CENTRE[0] + i / 1000,
            CENTRE[1],
        )
    # The drivers' presence is what the index offers: push one's last ping back past the
    # stale setting, as if its app had gone silent since.
    from smartroute.infra.driver_index import RedisDriverIndex

    index = RedisDriverIndex(cache, stale_s=stack.settings.driver_stale_s)
    everyone = {d.id for d in drivers}
    assert index.near_any([(*CENTRE, 5.0)]) == everyone
    cache.zadd(PRESENCE_KEY, {str(drivers[0].id): time.time() - stack.settings.driver_stale_s - 1})
    assert index.near_any([(*CENTRE, 5.0)]) == everyone - {drivers[0].id}


def test_the_http_ping_keeps_presence_too(admin, cache):
    driver = new_user(admin, "driver")
    driver.call("PUT", "/v1/drivers/me/location", json={"lat": CENTRE[0], "lng": CENTRE[1]})
    assert time.time() - 5 < cache.zscore(PRESENCE_KEY, driver.id) <= time.time()
    driver.call("PUT", "/v1/drivers/me/status", json={"status": "offline"})
    assert cache.zscore(PRESENCE_KEY, driver.id) is None and position(cache, driver.id) is None
