"""The simulated city's answer to a ``reposition``: followed with the policy's probability,
only by an idle driver, and driven toward between pings."""

from __future__ import annotations

import random
import threading
from collections import Counter
from types import SimpleNamespace

import pytest

from dispatch.geo import haversine_km
from smartroute_sim.driver import SimulatedDriver
from smartroute_sim.run import DriverPolicy, LoadRun

SUGGESTION = {"zone": "r1c1", "lat": 38.7223, "lng": -9.1393, "reason": "why", "expires_at": ""}


def driver(holding: int | None = None) -> SimulatedDriver:
    d = SimulatedDriver(None, 1, {"lat": 38.7223, "lng": -9.12}, random.Random(1), relays="x")
    d.holding = holding
    return d


def run(follow: float, compression: float = 60.0) -> SimpleNamespace:
    counts: Counter[str] = Counter()
    return SimpleNamespace(
        policy=DriverPolicy(follow_reposition=follow, time_compression=compression),
        recorder=SimpleNamespace(count=lambda name, n=1: counts.update({name: n})),
        lock=threading.Lock(),
        reposition_rng=random.Random("1:reposition"),
        counts=counts,
    )


@pytest.mark.parametrize(
    ("follow", "compression", "holding", "heads"),
    [
        (1.0, 60.0, None, True),
        (0.0, 60.0, None, False),
        (1.0, 0.0, None, False),
        (1.0, 60.0, 5, False),
    ],
)
def test_an_idle_driver_follows_with_the_policys_probability(follow, compression, holding, heads):
    city, d = run(follow, compression), driver(holding)
    LoadRun.on_reposition(city, d, SUGGESTION)
    assert (d.heading is not None) is heads
    assert city.counts["reposition_suggestions"] == 1
    assert city.counts["repositioned"] == int(heads)


def test_about_the_policys_share_of_suggestions_is_followed():
    city = run(0.5)
    for _ in range(400):
        LoadRun.on_reposition(city, driver(), SUGGESTION)
    assert 160 < city.counts["repositioned"] < 240


def test_the_driver_drives_toward_the_zone_and_stops_there():
    d = driver()
    d.heading = {"lat": SUGGESTION["lat"], "lng": SUGGESTION["lng"]}
    start = haversine_km(d.position["lat"], d.position["lng"], SUGGESTION["lat"], SUGGESTION["lng"])
    d.drive_toward_heading(0.5)
    left = haversine_km(d.position["lat"], d.position["lng"], SUGGESTION["lat"], SUGGESTION["lng"])
    assert left == pytest.approx(start - 0.5, abs=0.01)
    d.drive_toward_heading(start)
    assert d.heading is None
    assert d.position == {"lat": SUGGESTION["lat"], "lng": SUGGESTION["lng"]}
