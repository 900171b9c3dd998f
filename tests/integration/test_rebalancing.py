"""Rebalancing end to end: beat schedules the task, the worker plans and publishes, the
relay emits ``reposition`` to a real Socket.IO client in the idle driver's room."""

from __future__ import annotations

import datetime as dt
import queue
import subprocess

import pytest

from smartroute.cli.processes import beat_argv
from tests import factories as make
from tests.integration.conftest import WAIT_S, online_driver

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def rebalancing_beat(stack, tmp_path):
    """A beat whose rebalancing runs every second (the shortest interval allowed)."""
    log = open(tmp_path / "beat.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        beat_argv(tmp_path),
        env={**stack.env, "SMARTROUTE_REBALANCE_EVERY_S": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield process
    process.terminate()
    process.wait(timeout=20)
    log.close()


def test_beat_pushes_a_reposition_to_the_idle_drivers_room(
    admin, committed_sessions, listeners, rebalancing_beat
):
    now = dt.datetime.now(dt.UTC)
    # Bookings at Lisbon's centre, for later, so no driver is taken by them: demand seen.
    with committed_sessions.begin() as s:
        rider = make.rider(s)
        for _ in range(6):
            make.booking(s, rider, make.LISBON, now=now, pickup_at=now + dt.timedelta(hours=1))
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
