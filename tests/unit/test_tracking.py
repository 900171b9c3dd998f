"""What a rider is told of their driver: the ETA to where the ride heads next, and the
relay's feed of positions after a flush (its query stubbed: the rides it would find)."""

from __future__ import annotations

import contextlib

import pytest

from dispatch.eta import GreatCircleEta
from dispatch.geo import haversine_km
from dispatch.tracking import TrackedRide, driver_position, ride_eta_s
from web import relay_tracking
from web.relay_tracking import PositionFeed

# 36 km/h on straight roads: 10 m/s, so a kilometre is 100 s.
TEN_M_PER_S = GreatCircleEta(speed_kmh=36.0, road_factor=1.0)
PICKUP, DROPOFF = (38.7223, -9.1393), (38.75, -9.15)
ONE_KM_SOUTH = (38.7223 - 1 / 111.195, -9.1393)


def test_before_pickup_the_eta_is_to_the_pickup_at_the_configured_speed():
    eta = ride_eta_s(TEN_M_PER_S, "accepted", ONE_KM_SOUTH, PICKUP, DROPOFF)
    assert eta == pytest.approx(100, abs=1)


def test_the_road_factor_and_speed_are_the_quotes_model():
    slower = GreatCircleEta(speed_kmh=18.0, road_factor=1.5)  # Half the speed, 1.5x the road.
    assert ride_eta_s(slower, "accepted", ONE_KM_SOUTH, PICKUP, DROPOFF) == pytest.approx(
        300, abs=1
    )
    assert ride_eta_s(slower, "accepted", ONE_KM_SOUTH, PICKUP, DROPOFF) == round(
        slower.eta_s(*ONE_KM_SOUTH, *PICKUP)
    )


def test_under_way_the_eta_is_to_the_dropoff():
    km = haversine_km(*PICKUP, *DROPOFF)
    eta = ride_eta_s(TEN_M_PER_S, "in_progress", PICKUP, PICKUP, DROPOFF)
    assert eta == round(km * 100)
    assert eta > 300


def test_at_the_pickup_the_eta_is_zero_wherever_the_driver_stopped():
    assert ride_eta_s(TEN_M_PER_S, "arrived", ONE_KM_SOUTH, PICKUP, DROPOFF) == 0
    assert ride_eta_s(TEN_M_PER_S, "accepted", PICKUP, PICKUP, DROPOFF) == 0


def ride(booking_id: int, driver_id: int, status: str = "accepted") -> TrackedRide:
    return TrackedRide(booking_id, 100 + booking_id, driver_id, status, PICKUP, DROPOFF)


def test_the_event_names_the_ride_its_driver_and_where_it_is():
    event = driver_position(ride(7, 3), ONE_KM_SOUTH, 1764550000.5, TEN_M_PER_S)
    assert event == {
        "booking_id": 7,
        "driver_id": 3,
        "lat": ONE_KM_SOUTH[0],
        "lng": ONE_KM_SOUTH[1],
        "eta_s": 100,
        "status": "accepted",
        "at": 1764550000.5,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def feed(monkeypatch):
    """A feed whose query finds ``rides`` among the flushed drivers, and what it emits."""
    rides: list[TrackedRide] = []
    monkeypatch.setattr(
        relay_tracking,
        "tracked_rides",
        lambda _session, drivers: [r for r in rides if r.driver_id in set(drivers)],
    )
    emitted: list[list] = []
    clock = Clock()
    feed = PositionFeed(
        contextlib.nullcontext,
        TEN_M_PER_S,
        emitted.append,
        every_s=2.0,
        admin_limit=3,
        clock=clock,
    )
    feed.rides, feed.emitted, feed.time = rides, emitted, clock
    return feed


def flushed(*drivers: int, lat: float = PICKUP[0]) -> dict:
    return {d: (lat, PICKUP[1], 1764550000.0) for d in drivers}


def to_riders(messages: list) -> list[tuple[str, int]]:
    return [
        (room, data["booking_id"]) for room, event, data in messages if event != "driver_positions"
    ]


def test_each_ride_s_rider_gets_its_driver_and_admins_get_every_driver(feed):
    feed.rides += [ride(1, 11), ride(2, 12, "in_progress")]

    feed.after_flush(flushed(11, 12, 13))

    (messages,) = feed.emitted
    assert to_riders(messages) == [("rider_101", 1), ("rider_102", 2)]
    assert messages[-1] == (
        "admin_dashboard",
        "driver_positions",
        {"drivers": [[11, PICKUP[0], PICKUP[1]], [12, PICKUP[0], PICKUP[1]], [13, *PICKUP]]},
    )


def test_a_ride_gets_at_most_one_position_an_interval_however_often_flushes_come(feed):
    feed.rides.append(ride(1, 11))
    sent = []
    for step in range(12):  # A flush every half second for six seconds.
        feed.time.now = 1000.0 + step * 0.5
        feed.emitted.clear()
        feed.after_flush(flushed(11, lat=PICKUP[0] + step / 1000))
        if to_riders(feed.emitted[0]):
            sent.append(feed.time.now)
    assert sent == [1000.0, 1002.0, 1004.0]


def test_a_flush_a_full_interval_later_is_never_thinned(feed):
    feed.rides.append(ride(1, 11))
    for step in range(5):
        feed.time.now = 1000.0 + step * 2.0
        feed.after_flush(flushed(11))
    assert sum(len(to_riders(m)) for m in feed.emitted) == 5


def test_admins_get_at_most_the_limit_and_the_rest_next_flush_oldest_first(feed):
    feed.after_flush(flushed(1, 2, 3, 4, 5))
    feed.after_flush(flushed(5, 6, lat=1.0))

    first, second = (m[-1][2]["drivers"] for m in feed.emitted)
    assert [d[0] for d in first] == [1, 2, 3]
    assert [d[0] for d in second] == [4, 5, 6]
    assert second[1] == [5, 1.0, PICKUP[1]]  # The newest position of one still waiting.


def test_nothing_is_emitted_for_a_flush_of_no_one_watched_and_no_admin_waiting(feed):
    feed.after_flush({})
    assert feed.emitted == []
