"""Beat recovers stuck rides on the running engine: a ride accepted and never started goes
to another driver, and a ride under way too long is flagged for operators."""

from __future__ import annotations

from sqlalchemy import text

from tests.integration.conftest import new_user, online_driver
from tests.support import wait_for

CENTRE = (38.7223, -9.1393)
TRIP = {"pickup": {"lat": CENTRE[0], "lng": CENTRE[1]}, "dropoff": {"lat": 38.75, "lng": -9.15}}


def _becomes(client, booking_id, predicate, what, timeout=20):
    def check():
        booking = client.call("GET", f"/v1/bookings/{booking_id}")
        return booking if predicate(booking) else None

    return wait_for(check, timeout, what)


def test_an_accepted_ride_never_started_goes_to_another_driver(admin, beat, engine):
    near = online_driver(admin, CENTRE[0] + 0.002, CENTRE[1], "near")
    rider = new_user(admin, "rider")
    booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    _becomes(rider, booking_id, lambda b: b["driver_id"] == near.id, "the offer to the near one")
    near.call("POST", f"/v1/bookings/{booking_id}/accept")
    near.call("POST", f"/v1/bookings/{booking_id}/arrive")
    far = online_driver(admin, CENTRE[0] + 0.02, CENTRE[1], "far")
    with engine.begin() as conn:  # SMARTROUTE_START_TIMEOUT_S passes without a start.
        conn.execute(
            text(
                "UPDATE cab_bookings SET accepted_at = now() - interval '1 hour', "
                "date = (now() AT TIME ZONE 'UTC' - interval '1 hour')::date, "
                "time = (now() AT TIME ZONE 'UTC' - interval '1 hour')::time WHERE id = :b"
            ),
            {"b": booking_id},
        )
    offered = _becomes(
        rider, booking_id, lambda b: b["driver_id"] == far.id, "beat to give it to another"
    )
    assert (offered["status"], offered["arrived_at"]) == ("assigned", None)
    assert near.call("GET", "/v1/drivers/me")["status"] == "offline"
    with engine.connect() as conn:
        assert conn.execute(
            text(
                "SELECT from_status, to_status, actor_id FROM booking_events "
                "WHERE booking_id = :b AND to_status = 'pending' AND from_status = 'arrived'"
            ),
            {"b": booking_id},
        ).all() == [("arrived", "pending", None)]


def test_a_ride_under_way_too_long_is_flagged(admin, beat, engine):
    driver = online_driver(admin, CENTRE[0] + 0.002, CENTRE[1])
    rider = new_user(admin, "rider")
    booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    _becomes(rider, booking_id, lambda b: b["driver_id"] == driver.id, "the offer")
    driver.call("POST", f"/v1/bookings/{booking_id}/accept")
    driver.call("POST", f"/v1/bookings/{booking_id}/start")
    with engine.begin() as conn:  # SMARTROUTE_MAX_RIDE_S passes.
        conn.execute(
            text("UPDATE cab_bookings SET started_at = now() - interval '5 hours' WHERE id = :b"),
            {"b": booking_id},
        )
    flagged = _becomes(admin, booking_id, lambda b: b["overrun_at"], "beat to flag it")
    assert flagged["status"] == "in_progress"
    closed = admin.call(
        "POST",
        f"/v1/bookings/{booking_id}/force-complete",
        json={"reason": "driver's phone died"},
    )
    assert closed["status"] == "completed"
    assert driver.call("GET", "/v1/drivers/me")["status"] == "available"
