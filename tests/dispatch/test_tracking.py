"""Which rides a flush of drivers' positions concerns: real PostgreSQL."""

import datetime as dt

from dispatch.tracking import TrackedRide, tracked_rides
from tests import factories as make


def test_only_rides_accepted_arrived_or_under_way_are_tracked(session, now):
    statuses = ("assigned", "accepted", "arrived", "in_progress", "completed", "cancelled")
    rides = {}
    for status in statuses:
        driver = make.driver(session, make.LISBON, now=now, name=status)
        booking = make.booking(session, make.rider(session, status), now=now)
        booking.driver_id, booking.status = driver.user_id, status
        booking.offer_expires_at = now + dt.timedelta(seconds=30) if status == "assigned" else None
        booking.arrived_at = now if status == "arrived" else None
        booking.cancelled_by = "rider" if status == "cancelled" else None
        rides[status] = booking
    idle = make.driver(session, make.LISBON, now=now, name="idle")
    session.flush()

    found = tracked_rides(session, [b.driver_id for b in rides.values()] + [idle.user_id])

    assert sorted(found, key=lambda r: r.booking_id) == [
        TrackedRide(
            b.id,
            b.user_id,
            b.driver_id,
            status,
            (b.pickup_lat, b.pickup_lng),
            (b.dropoff_lat, b.dropoff_lng),
        )
        for status, b in rides.items()
        if status in ("accepted", "arrived", "in_progress")
    ]


def test_no_drivers_means_no_rides(session):
    assert tracked_rides(session, []) == []
