"""The whole pipeline through HTTP: gunicorn, Postgres, Redis and Celery worker processes."""

from __future__ import annotations

import concurrent.futures as cf

from sqlalchemy import text

from tests.integration.conftest import new_user, online_driver
from tests.support import wait_for

CENTRE = (38.7223, -9.1393)
TRIP = {"pickup": {"lat": CENTRE[0], "lng": CENTRE[1]}, "dropoff": {"lat": 38.75, "lng": -9.15}}


def _status_becomes(client, booking_id: int, status: str, timeout: float = 15):
    return wait_for(
        lambda: (b := client.call("GET", f"/v1/bookings/{booking_id}"))["status"] == status and b,
        timeout,
        f"booking {booking_id} to become {status}",
    )


def test_book_assign_accept_start_complete(admin):
    driver = online_driver(admin, CENTRE[0] + 0.005, CENTRE[1])
    rider = new_user(admin, "rider")
    booking = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)
    assigned = _status_becomes(rider, booking["id"], "assigned")
    assert assigned["driver_id"] == driver.id
    assert driver.call("GET", "/v1/drivers/me")["current_booking"]["id"] == booking["id"]
    for action, status in (
        ("accept", "accepted"),
        ("start", "in_progress"),
        ("complete", "completed"),
    ):
        after = driver.call("POST", f"/v1/bookings/{booking['id']}/{action}")
        assert after["status"] == status
    assert after["version"] == 5
    assert driver.call("GET", "/v1/drivers/me")["status"] == "available"
    # Nothing further is possible on a completed ride.
    stale = driver.call("POST", f"/v1/bookings/{booking['id']}/accept", expect=409)
    assert stale["error"]["current_status"] == "completed"


def test_a_declined_offer_goes_to_the_next_driver(admin):
    near = online_driver(admin, CENTRE[0] + 0.002, CENTRE[1], "near")
    far = online_driver(admin, CENTRE[0] + 0.02, CENTRE[1], "far")
    rider = new_user(admin, "rider")
    booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    assert _status_becomes(rider, booking_id, "assigned")["driver_id"] == near.id
    near.call("POST", f"/v1/bookings/{booking_id}/decline")
    reoffered = wait_for(
        lambda: (b := rider.call("GET", f"/v1/bookings/{booking_id}"))["driver_id"] == far.id and b,
        15,
        "the offer to reach the second driver",
    )
    assert reoffered["status"] == "assigned"
    # The driver who declined no longer holds it: acting on it is a conflict.
    late = near.call("POST", f"/v1/bookings/{booking_id}/accept", expect=409)
    assert late["error"]["code"] == "not_your_booking"
    assert far.call("POST", f"/v1/bookings/{booking_id}/accept")["status"] == "accepted"


def test_the_same_idempotency_key_posted_at_once_yields_one_booking(admin, engine):
    rider = new_user(admin, "rider")

    def post(_):
        return rider.call(
            "POST", "/v1/bookings", expect=202, json=TRIP, headers={"Idempotency-Key": "tap-twice"}
        )["id"]

    with cf.ThreadPoolExecutor(max_workers=16) as pool:
        ids = set(pool.map(post, range(16)))
    assert len(ids) == 1
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM cab_bookings")) == 1


def test_a_booking_with_no_driver_waits_and_beat_retries_it(admin, beat, engine):
    rider = new_user(admin, "rider")
    booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    with engine.connect() as conn:
        wait_for(
            lambda: conn.scalar(
                text("SELECT match_attempts FROM cab_bookings WHERE id = :b"), {"b": booking_id}
            ),
            15,
            "a first matching attempt that finds nobody",
        )
    assert rider.call("GET", f"/v1/bookings/{booking_id}")["status"] == "pending"
    # A driver comes online; no request touches the booking: only beat's sweep can find it.
    driver = online_driver(admin, CENTRE[0], CENTRE[1] + 0.003)
    assert _status_becomes(rider, booking_id, "assigned")["driver_id"] == driver.id
