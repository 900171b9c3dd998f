"""The official JavaScript client (npm socket.io-client under node) as a driver's app."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.integration.conftest import new_user, online_driver

JS = Path(__file__).resolve().parents[1] / "js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (JS / "node_modules" / "socket.io-client").exists(),
    reason="node and `npm ci --prefix tests/js` are needed (.ci/run installs them)",
)


def _lines(process: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def read():
        for line in process.stdout:
            lines.put(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_the_js_client_receives_its_assignment_and_accepts_it(admin, stack):
    driver = online_driver(admin, 38.7253, -9.1393)
    rider = new_user(admin, "rider")
    app = subprocess.Popen(
        [NODE, str(JS / "driver.js"), stack.relay_url, driver.token],
        stdout=subprocess.PIPE,
        text=True,
        cwd=JS,
    )
    try:
        lines = _lines(app)
        assert lines.get(timeout=20)["event"] == "connect"
        booking_id = rider.call(
            "POST",
            "/v1/bookings",
            expect=202,
            json={
                "pickup": {"lat": 38.7223, "lng": -9.1393},
                "dropoff": {"lat": 38.75, "lng": -9.15},
            },
        )["id"]
        received = lines.get(timeout=30)
        assert received["event"] == "new_assignment"
        assert received["data"]["id"] == booking_id
        assert received["data"]["driver_id"] == driver.id
        accepted = lines.get(timeout=30)
        assert accepted["event"] == "accepted"
        assert (accepted["data"]["status"], accepted["data"]["booking"]["status"]) == (
            200,
            "accepted",
        )
        assert admin.call("GET", f"/v1/bookings/{booking_id}")["status"] == "accepted"
        assert app.wait(timeout=10) == 0
    finally:
        if app.poll() is None:
            app.kill()
        app.wait()
        app.stdout.close()


def test_the_js_client_is_refused_without_a_valid_token(stack):
    app = subprocess.run(
        [NODE, str(JS / "driver.js"), stack.relay_url, "forged"],
        capture_output=True,
        text=True,
        cwd=JS,
        timeout=30,
    )
    assert app.returncode == 3
    assert json.loads(app.stdout.splitlines()[-1])["event"] == "connect_error"


def test_the_js_client_told_to_resync_reloads_over_http_and_accepts(admin, stack, engine):
    import redis
    from sqlalchemy import text

    from smartroute.infra.push import REPLAY_PREFIX
    from tests.support import wait_for

    driver = online_driver(admin, 38.7253, -9.1393)
    rider = new_user(admin, "rider")
    booking_id = rider.call(
        "POST",
        "/v1/bookings",
        expect=202,
        json={
            "pickup": {"lat": 38.7223, "lng": -9.1393},
            "dropoff": {"lat": 38.75, "lng": -9.15},
        },
    )["id"]
    wait_for(
        lambda: admin.call("GET", f"/v1/bookings/{booking_id}")["status"] == "assigned",
        30,
        "the offer",
    )
    with engine.connect() as conn:
        wait_for(
            lambda: conn.execute(text("SELECT count(*) FROM outbox_events")).scalar() == 0,
            30,
            "the offer's push to go out",
        )
    # The relay's replay log is lost (a Redis restart): the offer cannot be replayed.
    cache = redis.Redis.from_url(stack.settings.redis_url)
    cache.delete(*cache.keys(REPLAY_PREFIX + "*"))
    app = subprocess.Popen(
        [NODE, str(JS / "driver.js"), stack.relay_url, driver.token, "1", stack.url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=JS,
    )
    try:
        lines = _lines(app)
        # socket.io-client hands over events sent during the handshake just before "connect".
        first = {line["event"]: line for line in (lines.get(timeout=20), lines.get(timeout=20))}
        assert set(first) == {"connect", "resync_required"}
        assert first["resync_required"]["data"]["reason"]
        reloaded = lines.get(timeout=20)
        assert reloaded["event"] == "reloaded"
        assert reloaded["data"]["current_booking"]["id"] == booking_id
        accepted = lines.get(timeout=30)
        assert accepted["event"] == "accepted" and accepted["data"]["status"] == 200
        assert app.wait(timeout=10) == 0
    finally:
        if app.poll() is None:
            app.kill()
        app.wait()
        app.stdout.close()


def test_the_js_client_with_an_impossible_last_event_id_is_refused_naming_it(admin, stack):
    driver = online_driver(admin, 38.7253, -9.1393)
    app = subprocess.run(
        [NODE, str(JS / "driver.js"), stack.relay_url, driver.token, str(2**64)],
        capture_output=True,
        text=True,
        cwd=JS,
        timeout=30,
    )
    assert app.returncode == 3
    refused = json.loads(app.stdout.splitlines()[-1])
    assert refused["event"] == "connect_error"
    assert refused["data"]["data"] == {
        "code": "invalid_field",
        "field": "last_event_id",
        "message": refused["data"]["message"],
    }
