"""Riders watching their driver: which rides a batch of drivers' positions concerns, how far
each driver is from where the ride is heading, and what the rider is told.

From acceptance to pickup a ride heads for its pickup; under way, for its drop-off. Before
acceptance the driver is not yet the rider's, and after the ride ends there is nothing to
watch, so only ``TRACKED_STATUSES`` are followed.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from dispatch.eta import GreatCircleEta
from dispatch.states import Status

Place = tuple[float, float]

# The events: one ride's driver to its rider, and a batch of drivers to the admin dashboard.
DRIVER_POSITION = "driver_position"
DRIVER_POSITIONS = "driver_positions"

# A rider sees their driver's position from acceptance until the ride ends.
TRACKED_STATUSES = (Status.ACCEPTED.value, Status.ARRIVED.value, Status.IN_PROGRESS.value)


@dataclass(frozen=True)
class TrackedRide:
    """A ride whose rider watches its driver: who, in which status, and its two ends."""

    booking_id: int
    rider_id: int
    driver_id: int
    status: str
    pickup: Place
    dropoff: Place


def tracked_rides(session: Session, driver_ids: Collection[int]) -> list[TrackedRide]:
    """The tracked rides these drivers hold (at most one each), in one query that the
    one-active-booking-per-driver index answers."""
    if not driver_ids:
        return []
    # The ids travel as one array literal: a parameter per driver, or psycopg2's ARRAY[...]
    # of one constant each, would have PostgreSQL parse thousands of them every flush.
    ids = "{" + ",".join(str(int(driver_id)) for driver_id in driver_ids) + "}"
    rows = session.connection().execute(_TRACKED, {"ids": ids}).all()
    return [
        TrackedRide(booking_id, rider_id, driver_id, status, (p_lat, p_lng), (d_lat, d_lng))
        for booking_id, rider_id, driver_id, status, p_lat, p_lng, d_lat, d_lng in rows
    ]


# Built once, as the busiest statements are (dispatch.drivers): one a relay flush. The
# statuses are written out so that the planner sees they imply the active-driver index's.
_TRACKED = text(
    f"""
    SELECT id, user_id, driver_id, status, pickup_lat, pickup_lng, dropoff_lat, dropoff_lng
    FROM cab_bookings
    WHERE driver_id = ANY(CAST(:ids AS bigint[]))
      AND status IN ({", ".join(f"'{status}'" for status in TRACKED_STATUSES)})
    """
)


def ride_eta_s(
    eta: GreatCircleEta, status: str, position: Place, pickup: Place, dropoff: Place
) -> int:
    """Whole seconds for a driver at ``position`` to reach where the ride heads next, by
    the ETA model quotes use: the pickup before the ride starts (0 once arrived there), the
    drop-off while it is under way."""
    if status == Status.ARRIVED:
        return 0
    target = dropoff if status == Status.IN_PROGRESS else pickup
    return round(eta.eta_s(*position, *target))


def driver_position(
    ride: TrackedRide, position: Place, at: float, eta: GreatCircleEta
) -> dict[str, Any]:
    """The ``driver_position`` event a ride's rider receives: where its driver is, when the
    position was received (epoch seconds), and the ETA to where the ride heads next."""
    lat, lng = position
    return {
        "booking_id": ride.booking_id,
        "driver_id": ride.driver_id,
        "lat": lat,
        "lng": lng,
        "eta_s": ride_eta_s(eta, ride.status, position, ride.pickup, ride.dropoff),
        "status": ride.status,
        "at": at,
    }
