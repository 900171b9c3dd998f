"""Rebalancing end to end: beat schedules the task, the worker plans and publishes, the
relay emits ``reposition`` to a real Socket.IO client in the idle driver's room, and the
simulated driver hears it."""

from __future__ import annotations

import datetime as dt
import queue
import random

import pytest

from smartroute_sim.client import Api
from smartroute_sim.driver import SimulatedDriver
from tests import factories as make
from tests.integration.conftest import WAIT_S, expected_demand, online_driver

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_beat_pushes_a_reposition_to_the_idle_drivers_room(
    admin, committed_sessions, listeners, rebalancing_beat
):
    now = dt.datetime.now(dt.UTC)
    expected_demand(committed_sessions, now)
    east = make.offset(make.LISBON, east_km=1.5)
    driver = online_driver(admin, east.lat, east.lng)
    feed = listeners(driver.token)
    received: queue.Queue = queue.Queue()
    feed.client.on("reposition", received.put)

    suggestion = received.get(timeout=WAIT_S)
    assert set(suggestion) == {"zone", "lat", "lng", "reason", "expires_at"}
    assert abs(suggestion["lat"] - make.LISBON.lat) < 0.01
    assert abs(suggestion["lng"] - make.LISBON.lng) < 0.01
    assert suggestion["reason"].startswith(f"zone {suggestion['zone']} expects ")
    assert dt.datetime.fromisoformat(suggestion["expires_at"]) > now


def test_the_simulated_driver_hears_the_suggestion_and_drives_toward_it(
    admin, stack, committed_sessions, rebalancing_beat
):
    expected_demand(committed_sessions, dt.datetime.now(dt.UTC))
    set_up = Api(admin.base_url, stack.settings.admin_token)
    user_id, token = set_up.create_user("driver", "simulated")
    east = make.offset(make.LISBON, east_km=1.5)
    heard: queue.Queue = queue.Queue()
    driver = SimulatedDriver(
        Api(admin.base_url, token),
        user_id,
        {"lat": east.lat, "lng": east.lng},
        random.Random(1),
        relays=stack.relay_url,
        on_reposition=lambda d, data: heard.put(data),
    )
    driver.go_online()
    try:
        suggestion = heard.get(timeout=WAIT_S)
        driver.heading = {"lat": suggestion["lat"], "lng": suggestion["lng"]}
        driver.drive_toward_heading(1.0)
        assert driver.position["lng"] < east.lng and driver.heading is not None
        driver.drive_toward_heading(1.0)
        assert driver.heading is None
        assert (driver.position["lat"], driver.position["lng"]) == (
            suggestion["lat"],
            suggestion["lng"],
        )
    finally:
        driver.go_offline()
        driver.disconnect()
