"""Riders watching their driver come, and admins watching every driver, through real relay
processes and real Socket.IO clients: positions go out after each flush, to the ride's
rider only, at most once an interval, and to no one once the ride is over."""

from __future__ import annotations

import queue
import subprocess
import time
from collections.abc import Callable

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from dispatch.geo import haversine_km
from smartroute.cli.processes import relay_argv
from tests.integration.conftest import (
    METRICS_TOKEN,
    START_TIMEOUT_S,
    WAIT_S,
    Listener,
    new_user,
    online_driver,
)
from tests.integration.test_push import CENTRE, TRIP
from tests.support import free_port, healthy, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

PICKUP = CENTRE
DROPOFF = (TRIP["dropoff"]["lat"], TRIP["dropoff"]["lng"])
SOUTH_1_KM = (round(CENTRE[0] - 0.009, 5), CENTRE[1])  # About a kilometre from the pickup.
# What the relay's default is (SMARTROUTE_RIDER_POSITION_EVERY_S).
EVERY_S = 2.0


class Positions:
    """The drivers' positions a client hears, each with when it arrived (monotonic)."""

    def __init__(self, listener: Listener) -> None:
        self.arrivals: queue.Queue = queue.Queue()
        self.heard: list[tuple[float, str, dict]] = []
        for name in ("driver_position", "driver_positions"):
            listener.client.on(
                name, lambda data, name=name: self.arrivals.put((time.monotonic(), name, data))
            )

    def until(self, wanted: Callable[[str, dict], bool], what: str) -> dict:
        """The first position heard from now on that is ``wanted``; fails after WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                arrival = self.arrivals.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out after {WAIT_S}s waiting for {what}") from None
            self.heard.append(arrival)
            if wanted(arrival[1], arrival[2]):
                return arrival[2]

    def so_far(self) -> list[tuple[float, str, dict]]:
        """Everything heard until now."""
        while True:
            try:
                self.heard.append(self.arrivals.get_nowait())
            except queue.Empty:
                return self.heard


def ping(driver_feed: Listener, lat: float, lng: float) -> None:
    driver_feed.client.emit("location", {"lat": lat, "lng": lng, "at": time.time()})


def rider_event(booking_id: int, status: str | None = None):
    return lambda name, data: (
        name == "driver_position"
        and data["booking_id"] == booking_id
        and (status is None or data["status"] == status)
    )


def admin_batch_with(driver_id: int, lat: float, lng: float):
    return lambda name, data: (
        name == "driver_positions" and [driver_id, lat, lng] in data["drivers"]
    )


def accepted_ride(admin, listeners, rider, near=SOUTH_1_KM) -> tuple:
    """A driver at ``near`` who has accepted ``rider``'s new booking, its connection, and
    the booking's id."""
    driver = online_driver(admin, *near)
    feed = listeners(driver.token)
    booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    _, offer = feed.next("new_assignment")
    assert (offer["id"], offer["driver_id"]) == (booking_id, driver.id)
    driver.call("POST", f"/v1/bookings/{booking_id}/accept")
    return driver, feed, booking_id


def expected_eta_s(stack, frm: tuple[float, float], to: tuple[float, float]) -> float:
    """The ETA model's answer, worked out here from the settings."""
    settings = stack.settings
    return haversine_km(*frm, *to) * settings.road_factor / settings.speed_kmh * 3600


def test_a_rider_sees_their_own_driver_with_the_eta_and_no_one_else_does(admin, listeners, stack):
    rider, other_rider, bystander = (new_user(admin, "rider", n) for n in ("a", "b", "c"))
    heard = {r.id: Positions(listeners(r.token)) for r in (rider, other_rider, bystander)}
    driver, driver_feed, booking_id = accepted_ride(admin, listeners, rider)
    other_driver, other_feed, other_booking = accepted_ride(
        admin, listeners, other_rider, near=(CENTRE[0] + 0.009, CENTRE[1])
    )

    ping(driver_feed, *SOUTH_1_KM)
    ping(other_feed, CENTRE[0] + 0.0045, CENTRE[1])

    seen = heard[rider.id].until(rider_event(booking_id), "the rider's driver_position")
    assert {k: seen[k] for k in ("booking_id", "driver_id", "lat", "lng", "status")} == {
        "booking_id": booking_id,
        "driver_id": driver.id,
        "lat": SOUTH_1_KM[0],
        "lng": SOUTH_1_KM[1],
        "status": "accepted",
    }
    assert seen["eta_s"] == pytest.approx(expected_eta_s(stack, SOUTH_1_KM, PICKUP), abs=1)
    assert 140 < seen["eta_s"] < 220  # A kilometre and a third of road at 25 km/h.
    assert time.time() - 10 < seen["at"] <= time.time()
    theirs = heard[other_rider.id].until(rider_event(other_booking), "the other rider's")
    assert (theirs["driver_id"], theirs["lat"]) == (other_driver.id, round(CENTRE[0] + 0.0045, 5))
    # A flush later, anything for the wrong rider would have come too.
    ping(driver_feed, *CENTRE)
    heard[rider.id].until(lambda n, d: d.get("lat") == CENTRE[0], "the driver at the pickup")
    assert {d["booking_id"] for _, _, d in heard[rider.id].so_far()} == {booking_id}
    assert {d["booking_id"] for _, _, d in heard[other_rider.id].so_far()} == {other_booking}
    assert heard[bystander.id].so_far() == []


def test_the_eta_follows_the_ride_to_the_dropoff_and_stops_when_it_ends(admin, listeners, stack):
    rider = new_user(admin, "rider")
    heard = Positions(listeners(rider.token))
    admin_heard = Positions(listeners(admin.http.headers["Authorization"].removeprefix("Bearer ")))
    driver, driver_feed, booking_id = accepted_ride(admin, listeners, rider)

    ping(driver_feed, *SOUTH_1_KM)
    assert heard.until(rider_event(booking_id, "accepted"), "accepted")["eta_s"] > 0
    driver.call("POST", f"/v1/bookings/{booking_id}/arrive")
    ping(driver_feed, SOUTH_1_KM[0] + 0.001, SOUTH_1_KM[1])  # Stopped short of the pin.
    assert heard.until(rider_event(booking_id, "arrived"), "arrived")["eta_s"] == 0
    driver.call("POST", f"/v1/bookings/{booking_id}/start")
    ping(driver_feed, *CENTRE)
    under_way = heard.until(rider_event(booking_id, "in_progress"), "in progress")
    assert under_way["eta_s"] == pytest.approx(expected_eta_s(stack, CENTRE, DROPOFF), abs=1)
    driver.call("POST", f"/v1/bookings/{booking_id}/complete")
    ended = len(heard.so_far())

    # Two flushes after completion, each shown by the admins' batch carrying the driver's
    # newer position: the rider heard nothing of either.
    for lat in (38.74, 38.745):
        ping(driver_feed, lat, DROPOFF[1])
        admin_heard.until(admin_batch_with(driver.id, lat, DROPOFF[1]), f"admins to see {lat}")
    after = [d for _, _, d in heard.so_far()[ended:]]
    assert [d["lat"] for d in after if d["lat"] in (38.74, 38.745)] == []
    assert {d["status"] for _, _, d in heard.so_far()} <= {"accepted", "arrived", "in_progress"}


def test_admins_get_one_batch_of_every_driver_that_moved(admin, listeners):
    admin_heard = Positions(listeners(admin.http.headers["Authorization"].removeprefix("Bearer ")))
    rider = new_user(admin, "rider")
    rider_heard = Positions(listeners(rider.token))
    drivers = [new_user(admin, "driver", f"d{i}") for i in range(3)]
    feeds = [listeners(d.token) for d in drivers]

    for i, feed in enumerate(feeds):
        ping(feed, CENTRE[0] + i / 1000, CENTRE[1] + 0.123456789)

    everyone = {
        d.id: [d.id, round(CENTRE[0] + i / 1000, 5), round(CENTRE[1] + 0.123456789, 5)]
        for i, d in enumerate(drivers)
    }
    # Sent together, they land in one flush (two, if a flush fell between their ticks).
    got: dict[int, list] = {}

    def all_seen(name: str, data: dict) -> bool:
        if name == "driver_positions":
            got.update({entry[0]: entry for entry in data["drivers"] if entry[0] in everyone})
        return len(got) == len(everyone)

    admin_heard.until(all_seen, "every driver in the admins' batches")
    assert got == everyone
    batches = [
        d
        for _, name, d in admin_heard.so_far()
        if name == "driver_positions" and any(entry[0] in everyone for entry in d["drivers"])
    ]
    assert 1 <= len(batches) <= 2
    # Drivers holding no ride: no rider hears of them.
    assert rider_heard.so_far() == []


def relay_samples(url: str) -> dict[str, float]:
    exposition = requests.get(
        f"{url}/metrics", timeout=10, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    ).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if not sample.labels or sample.labels == {"to": "rider"}
    }


@pytest.fixture
def fast_relay(stack, tmp_path):
    """A second relay that flushes four times as often as the interval allows positions to
    go to a rider, with metrics of its own."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = {
        **stack.env,
        "SMARTROUTE_LOCATION_FLUSH_S": "0.5",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        "SMARTROUTE_RELAY_CORS_ORIGINS": f"{stack.url},{url}",
    }
    with open(tmp_path / "relay-fast.log", "wb") as log:
        relay = subprocess.Popen(
            relay_argv("127.0.0.1", port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(lambda: healthy(url), START_TIMEOUT_S, "the second relay", every=0.2)
            yield url
        finally:
            relay.terminate()
            try:
                relay.wait(timeout=20)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait()


def test_a_rider_on_another_relay_gets_at_most_one_position_an_interval(
    admin, listeners, fast_relay
):
    rider = new_user(admin, "rider")
    heard = Positions(listeners(rider.token))  # On the stack's relay.
    driver, _feed, booking_id = accepted_ride(admin, listeners, rider)
    on_fast = Listener(fast_relay, driver.token)
    try:
        ping(on_fast, *SOUTH_1_KM)
        heard.until(rider_event(booking_id), "the first position through the other relay")
        before = relay_samples(fast_relay)
        started = time.monotonic()
        for n in range(60):  # A ping every 0.1 s for six seconds: a phone's pace.
            ping(on_fast, SOUTH_1_KM[0] + n / 10_000, SOUTH_1_KM[1])
            time.sleep(0.1)
        ended = time.monotonic()
        after = relay_samples(fast_relay)
    finally:
        on_fast.close()

    arrivals = [at for at, _, d in heard.so_far() if started <= at <= ended]
    flushes = after["smartroute_relay_location_flush_drivers_count"] - before.get(
        "smartroute_relay_location_flush_drivers_count", 0
    )
    # Flushes came four times an interval; the rider heard at most once an interval, give
    # or take the way through Redis and the other relay on a busy machine.
    assert flushes >= 2 * len(arrivals) >= 4
    assert len(arrivals) <= (ended - started) / EVERY_S + 1
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert min(gaps) > EVERY_S - 0.5, gaps
    thinned = after["smartroute_relay_rider_positions_thinned_total"] - before.get(
        "smartroute_relay_rider_positions_thinned_total", 0
    )
    pushed = after["smartroute_relay_positions_pushed_total"] - before.get(
        "smartroute_relay_positions_pushed_total", 0
    )
    assert thinned > 0 and pushed >= len(arrivals)
