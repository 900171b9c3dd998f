"""Who may be offered a booking, and how far the search reaches.

A free driver is defined once, here, as one SQL condition (``free_driver``): available,
located, and seen recently. Both matchers select with it; the claim then re-checks the
status with a compare-and-set, because being free when read is not the same as being
free when taken.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import ColumnElement, and_

from dispatch.models import Driver
from dispatch.states import DriverStatus


@dataclass(frozen=True)
class MatchPolicy:
    radius_km: float = 5.0
    candidates: int = 10
    offer_window_s: int = 25
    retry_interval_s: int = 5
    schedule_lead_s: int = 600
    driver_stale_s: int = 120
    # Each unsuccessful attempt widens the search by half the base radius, up to this.
    max_radius_km: float = 15.0
    # Seconds of ETA a one-star average costs a driver in the batch solver (0: ratings unused).
    rating_weight_s: float = 0.0
    # A batch takes at most this many waiting bookings per free driver, and never fewer
    # than ``batch_floor``: enough for the solver to choose which ones the drivers serve best.
    bookings_per_free_driver: int = 2
    batch_floor: int = 10

    def radius_for(self, attempts: int) -> float:
        """The search radius for a booking that has been tried ``attempts`` times."""
        return min(self.max_radius_km, self.radius_km * (1 + 0.5 * attempts))


def free_driver(policy: MatchPolicy, now: dt.datetime) -> ColumnElement[bool]:
    """The condition a free driver meets: available, with a location, and seen within
    ``policy.driver_stale_s`` of ``now``."""
    return and_(
        Driver.status == DriverStatus.AVAILABLE.value,
        Driver.lat.is_not(None),
        Driver.last_seen_at >= now - dt.timedelta(seconds=policy.driver_stale_s),
    )


class Outcome(StrEnum):
    """What one matching attempt did with a booking."""

    ASSIGNED = "assigned"
    NO_DRIVER = "no_driver"
    # Its chosen driver was taken (or went offline) between choosing and claiming.
    CLAIM_LOST = "claim_lost"
    NOT_DUE = "not_due"
    EXPIRED = "expired"
    NOT_PENDING = "not_pending"


@dataclass(frozen=True)
class Candidate:
    """A driver considered for a booking: by distance (nearest-first), by ETA (the
    solver), or both."""

    driver_id: int
    distance_km: float | None = None
    eta_s: float | None = None
