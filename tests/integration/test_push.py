"""Real-time push through a real relay process, to real Socket.IO clients."""

from __future__ import annotations

import datetime as dt
import subprocess

import jwt
import pytest
import requests
import socketio

from dispatch import tokens
from dispatch.users import get_user
from smartroute.cli.processes import relay_argv
from tests.integration.conftest import Listener, disconnects, new_user, online_driver
from tests.support import free_port, healthy, wait_for

# python-socketio's client leaves a websocket the server closed for the garbage collector,
# which pytest reports as an unraisable ResourceWarning; it is the client's, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

CENTRE = (38.7223, -9.1393)
TRIP = {"pickup": {"lat": CENTRE[0], "lng": CENTRE[1]}, "dropoff": {"lat": 38.75, "lng": -9.15}}


def test_a_driver_gets_its_assignment_and_admins_see_every_change_in_order(admin, listeners):
    driver = online_driver(admin, CENTRE[0] + 0.003, CENTRE[1])
    rider = new_user(admin, "rider")
    driver_feed, admin_feed = (
        listeners(driver.token),
        listeners(admin.http.headers["Authorization"].removeprefix("Bearer ")),
    )
    rider_feed = listeners(rider.token)
    booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]

    name, offer = driver_feed.next("new_assignment")
    assert (offer["id"], offer["status"], offer["driver_id"]) == (booking_id, "assigned", driver.id)
    assert {"pickup", "dropoff", "version", "event_id"} <= set(offer)
    for action in ("accept", "start", "complete"):
        driver.call("POST", f"/v1/bookings/{booking_id}/{action}")

    seen = [admin_feed.next("booking_updated") for _ in range(5)]
    assert [d["status"] for _, d in seen] == [
        "pending",
        "assigned",
        "accepted",
        "in_progress",
        "completed",
    ]
    assert [d["version"] for _, d in seen] == [1, 2, 3, 4, 5]
    ids = [d["event_id"] for _, d in seen]
    assert ids == sorted(ids) and len(set(ids)) == 5
    # The rider follows their own booking too (and only in their own room).
    rider_seen = [rider_feed.next("booking_updated")[1]["status"] for _ in range(5)]
    assert rider_seen == ["pending", "assigned", "accepted", "in_progress", "completed"]


def test_without_a_valid_token_there_is_no_connection(stack):
    for token in (None, "not-a-token"):
        with pytest.raises(socketio.exceptions.ConnectionError):
            Listener(stack.relay_url, token)


def test_a_revoked_token_loses_its_connection_and_cannot_reconnect(admin, listeners, stack):
    driver = online_driver(admin, *CENTRE)
    other = online_driver(admin, *CENTRE)
    feed, bystander = listeners(driver.token), listeners(other.token)

    admin.call("DELETE", f"/v1/users/{driver.id}/tokens")
    feed.next("disconnect")  # Dropped by the relay's revalidation, not by the client.
    with pytest.raises(socketio.exceptions.ConnectionError):
        Listener(stack.relay_url, driver.token)
    assert bystander.client.connected


def test_the_relay_checks_signature_and_expiry_itself(admin, stack, committed_sessions):
    """Planted cache entries are tests/security's; here, the relay's own checks."""
    driver = online_driver(admin, *CENTRE)
    with committed_sessions.begin() as s:
        user = get_user(s, driver.id)
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        expired, _ = tokens.issue(s, user, stack.settings.secret_key, 60, now=long_ago)
    claims = jwt.decode(driver.token, options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-key-" * 4, algorithm="HS256")
    for token in (expired, forged):
        with pytest.raises(socketio.exceptions.ConnectionError):
            Listener(stack.relay_url, token)


def test_clients_cannot_choose_rooms_that_are_not_theirs(admin, listeners):
    driver = online_driver(admin, *CENTRE)
    feed = listeners(driver.token)
    feed.client.emit("join_driver_room", {"driver_id": driver.id + 1})
    assert feed.next("error")[1]["code"] == "forbidden"
    feed.client.emit("join_admin_room", {})
    assert feed.next("error")[1]["code"] == "forbidden"
    rider = new_user(admin, "rider")
    rider_feed = listeners(rider.token)
    rider_feed.client.emit("join_admin_room")
    assert rider_feed.next("error")[1]["code"] == "forbidden"


def test_an_oversized_message_is_refused(admin, listeners, stack):
    driver = online_driver(admin, *CENTRE)
    feed = listeners(driver.token)
    feed.client.emit("join_driver_room", {"driver_id": driver.id, "padding": "x" * 200_000})
    # The relay closes a connection that sends more than its limit.
    feed.client.sleep(0)
    assert disconnects(feed)


def test_a_driver_who_was_away_catches_up_on_reconnect(admin, listeners):
    driver = online_driver(admin, CENTRE[0] + 0.003, CENTRE[1])
    rider = new_user(admin, "rider")
    feed = listeners(driver.token)
    first_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    _, first = feed.next("new_assignment")
    assert first["id"] == first_id
    feed.close()  # The phone goes into a tunnel.

    driver.call("POST", f"/v1/bookings/{first_id}/decline")  # Declined just before, say.
    second_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    back = listeners(driver.token, last_event_id=first["event_id"])
    _, missed = back.next("new_assignment")
    assert missed["id"] == second_id and missed["event_id"] > first["event_id"]


@pytest.mark.chaos
def test_no_assignment_is_lost_when_the_relay_dies_mid_burst(admin, stack, engine, listeners):
    import concurrent.futures as cf
    import os
    import signal

    from sqlalchemy import text

    from tests.support import wait_for

    drivers = [online_driver(admin, CENTRE[0] + i * 0.0005, CENTRE[1], f"d{i}") for i in range(8)]
    feeds = {d.id: listeners(d.token) for d in drivers[1:]}
    away = drivers[0]  # Disconnected the whole time its booking is offered.
    rider = new_user(admin, "rider")

    def book(_):
        return rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]

    with cf.ThreadPoolExecutor(4) as pool:
        first = list(pool.map(book, range(3)))
        os.kill(stack.relay.pid, signal.SIGKILL)  # Mid-burst: every live connection drops.
        stack.relay.wait()
        rest = list(pool.map(book, range(5)))
        stack.relay = stack.start_relay()
    wait_for(stack.relay_up, 30, "the relay to come back")

    with engine.connect() as conn:
        offers = dict(
            wait_for(
                lambda: (
                    (
                        rows := conn.execute(
                            text("SELECT id, driver_id FROM cab_bookings WHERE status = 'assigned'")
                        ).all()
                    )
                    and len(rows) == len(first + rest)
                    and rows
                ),
                30,
                "every booking to be offered",
            )
        )

    received: dict[int, set[int]] = {}
    for driver_id, feed in feeds.items():
        # What arrived before the crash, then a reconnect asking for everything after it.
        seen = []
        while not feed.events.empty():
            name, data = feed.events.get()
            if name == "new_assignment":
                seen.append(data)
        last = max((d["event_id"] for d in seen), default=0)
        received[driver_id] = {d["id"] for d in seen}
        if driver_id in offers.values() and not received[driver_id] & set(offers):
            back = listeners(next(d.token for d in drivers if d.id == driver_id), last)
            received[driver_id].add(back.next("new_assignment")[1]["id"])
    back = listeners(away.token, 0)
    if away.id in offers.values():
        received[away.id] = {back.next("new_assignment")[1]["id"]}

    for booking_id, driver_id in offers.items():
        assert booking_id in received.get(driver_id, set()), (booking_id, driver_id)


def test_relay_and_outbox_metrics_are_scraped_with_the_rest(admin, stack, listeners):
    import requests

    from tests.support import wait_for

    driver = online_driver(admin, *CENTRE)
    listeners(driver.token)
    scraper = {"Authorization": f"Bearer {stack.settings.metrics_token}"}

    def connected_drivers() -> float:
        text = requests.get(f"{stack.url}/metrics", timeout=10, headers=scraper).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('smartroute_relay_connections{kind="driver"}')
        )

    assert wait_for(connected_drivers, 10, "the relay's connection gauge") >= 1
    scrape = requests.get(f"{stack.url}/metrics", timeout=10, headers=scraper).text
    assert "smartroute_outbox_lag_seconds" in scrape


@pytest.mark.parametrize("origin,allowed", [("{relay}", True), ("http://evil.example", False)])
def test_a_relay_with_no_origins_configured_admits_only_its_own(stack, origin, allowed):
    """Nothing configured means same origin only, not anyone (engine.io reads [] as 'off')."""
    env = {k: v for k, v in stack.env.items() if k != "SMARTROUTE_RELAY_CORS_ORIGINS"}
    port = free_port()
    relay_url = f"http://127.0.0.1:{port}"
    relay = subprocess.Popen(
        relay_argv("127.0.0.1", port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: healthy(relay_url), 30, "the second relay to start")
        handshake = requests.get(
            f"{relay_url}/socket.io/?EIO=4&transport=polling",
            timeout=5,
            headers={"Origin": origin.format(relay=relay_url)},
        )
        assert (handshake.status_code == 200) is allowed, handshake.status_code
    finally:
        relay.terminate()
        relay.wait(timeout=20)


def test_a_driver_hears_when_the_rider_cancels_the_ride_they_hold(admin, listeners):
    driver = online_driver(admin, CENTRE[0] + 0.003, CENTRE[1])
    rider = new_user(admin, "rider")
    feed = listeners(driver.token)
    booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    _, offer = feed.next("new_assignment")
    assert offer["id"] == booking_id
    driver.call("POST", f"/v1/bookings/{booking_id}/accept")
    rider.call("POST", f"/v1/bookings/{booking_id}/cancel", json={"reason": "plans changed"})

    # The next event the driver gets is the cancel: their own accept is not pushed back.
    name, update = feed.next()
    assert name == "booking_updated"
    assert (update["id"], update["status"], update["driver_id"]) == (
        booking_id,
        "cancelled",
        driver.id,
    )
    assert (update["cancelled_by"], update["cancel_reason"]) == ("rider", "plans changed")
    assert update["event_id"] > offer["event_id"]
