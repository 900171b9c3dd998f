"""Matching a pending booking to the nearest available driver.

The claim is a compare-and-set on the driver row
(``UPDATE drivers SET status = 'busy' WHERE user_id = :d AND status = 'available'``):
two workers racing for one driver cannot both win, because the loser's UPDATE
waits for the winner's commit and then re-checks its WHERE clause. The partial
unique index on active bookings is the last word behind it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import and_, bindparam, exists, func, select, text, update
from sqlalchemy.orm import Session

from dispatch.bookings import (
    NO_DRIVER_FOUND,
    SYSTEM,
    apply_transition,
    apply_transitions,
    lock_booking,
    pickup_time,
)
from dispatch.db import expire_loaded, transaction_now
from dispatch.dispatch_log import CLAIM_LOST, OFFERED, DispatchLog
from dispatch.geo import EARTH_RADIUS_KM, bounding_box
from dispatch.models import Booking, Decline, Driver
from dispatch.states import DriverStatus, Status


class Outcome(StrEnum):
    ASSIGNED = "assigned"
    NO_DRIVER = "no_driver"
    NOT_DUE = "not_due"
    EXPIRED = "expired"
    NOT_PENDING = "not_pending"


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

    def radius_for(self, attempts: int) -> float:
        """The search radius for a booking that has been tried ``attempts`` times."""
        return min(self.max_radius_km, self.radius_km * (1 + 0.5 * attempts))


@dataclass(frozen=True)
class Candidate:
    driver_id: int
    distance_km: float


@dataclass(frozen=True)
class MatchResult:
    outcome: Outcome
    booking_id: int
    driver_id: int | None = None
    distance_km: float | None = None


def _distance_km(lat: float, lng: float):
    """SQL for the haversine distance from (lat, lng) to each driver's location."""
    dlat = func.radians(Driver.lat - lat) / 2
    dlng = func.radians(Driver.lng - lng) / 2
    a = func.power(func.sin(dlat), 2) + func.cos(func.radians(lat)) * func.cos(
        func.radians(Driver.lat)
    ) * func.power(func.sin(dlng), 2)
    return 2 * EARTH_RADIUS_KM * func.asin(func.least(1.0, func.sqrt(a)))


def find_candidates(
    session: Session, booking: Booking, policy: MatchPolicy, now: dt.datetime
) -> list[Candidate]:
    """Available, recently seen drivers within the radius who have not turned this booking down,
    nearest first and, among equals, the longest idle."""
    distance = _distance_km(booking.pickup_lat, booking.pickup_lng).label("distance_km")
    declined = exists().where(
        and_(Decline.booking_id == booking.id, Decline.driver_id == Driver.user_id)
    )
    conditions = [
        Driver.status == DriverStatus.AVAILABLE.value,
        Driver.lat.is_not(None),
        Driver.last_seen_at >= now - dt.timedelta(seconds=policy.driver_stale_s),
        ~declined,
    ]
    radius_km = policy.radius_for(booking.match_attempts)
    box = bounding_box(booking.pickup_lat, booking.pickup_lng, radius_km)
    if box is not None:
        min_lat, max_lat, min_lng, max_lng = box
        conditions += [Driver.lat.between(min_lat, max_lat), Driver.lng.between(min_lng, max_lng)]
    inner = select(Driver.user_id, Driver.available_since, distance).where(*conditions).subquery()
    rows = session.execute(
        select(inner.c.user_id, inner.c.distance_km)
        .where(inner.c.distance_km <= radius_km)
        .order_by(inner.c.distance_km, inner.c.available_since.asc().nulls_last())
        .limit(policy.candidates)
    )
    return [Candidate(driver_id=r.user_id, distance_km=r.distance_km) for r in rows]


def claim_driver(session: Session, driver_id: int, now: dt.datetime) -> bool:
    """Compare-and-set an available driver to busy; False if someone else got there first."""
    claimed = session.connection().execute(
        _CLAIM_DRIVER, {"claimed_id": driver_id, "claimed_at": now}).first()
    expire_loaded(session, Driver, driver_id)
    return claimed is not None


def claim_drivers(session: Session, driver_ids: list[int], now: dt.datetime) -> set[int]:
    """``claim_driver`` for many drivers in one statement; the ids claimed. Rows are locked
    in id order, so two batches racing for drivers wait for each other, never deadlock."""
    if not driver_ids:
        return set()
    claimed = set(session.connection().execute(
        _CLAIM_DRIVERS, {"claimed_ids": sorted(driver_ids), "claimed_at": now}).scalars())
    for driver_id in claimed:
        expire_loaded(session, Driver, driver_id)
    return claimed


# Built once: a batch claims all its drivers at once, the nearest-first path one at a time.
_CLAIM_DRIVERS = text("""
    UPDATE drivers SET status = 'busy', updated_at = :claimed_at
    WHERE status = 'available' AND user_id IN (
        SELECT user_id FROM drivers
        WHERE user_id = ANY(CAST(:claimed_ids AS bigint[])) AND status = 'available'
        ORDER BY user_id FOR UPDATE)
    RETURNING user_id
""")
_CLAIM_DRIVER = (
    update(Driver.__table__)
    .where(Driver.__table__.c.user_id == bindparam("claimed_id"),
           Driver.__table__.c.status == DriverStatus.AVAILABLE.value)
    .values(status=DriverStatus.BUSY.value, updated_at=bindparam("claimed_at"))
    .returning(Driver.__table__.c.user_id)
)


def dispatch_booking(
    session: Session, booking_id: int, policy: MatchPolicy, now: dt.datetime | None = None
) -> MatchResult:
    """Try once to offer a pending booking to a driver. Safe to call any number of times.

    ``now`` defaults to the database's clock (``dispatch.db.transaction_now``), which
    decides expiry, due time, driver freshness and the offer's window for every process
    alike; tests pass their own to play time forward.
    """
    now = now or transaction_now(session)
    # Wait for the row lock rather than skip: a duplicate message then sees the result of
    # the first and returns, and a lock left by a killed worker is released when Postgres
    # notices its connection is gone.
    booking = lock_booking(session, booking_id)
    if booking is None or booking.status != Status.PENDING:
        return MatchResult(Outcome.NOT_PENDING, booking_id)
    if booking.expires_at <= now:
        apply_transition(session, booking, "expire", now=now, actor=SYSTEM, reason=NO_DRIVER_FOUND)
        return MatchResult(Outcome.EXPIRED, booking_id)
    due_at = pickup_time(booking) - dt.timedelta(seconds=policy.schedule_lead_s)
    if due_at > now:
        booking.next_attempt_at = due_at
        return MatchResult(Outcome.NOT_DUE, booking_id)

    candidates = find_candidates(session, booking, policy, now)
    log = DispatchLog(session, "nearest", now)
    radius_km = policy.radius_for(booking.match_attempts)
    for candidate in candidates:
        if claim_driver(session, candidate.driver_id, now):
            make_offer(session, booking, candidate.driver_id, policy, now)
            log.record(booking, Outcome.ASSIGNED, radius_km, 1, [
                log.candidate(c.driver_id, c.distance_km, chosen=c is candidate,
                              reason=_nearest_reason(c, candidate, candidates))
                for c in candidates
            ])
            log.flush()
            return MatchResult(
                Outcome.ASSIGNED, booking_id, candidate.driver_id, candidate.distance_km
            )

    no_driver(booking, policy, now)
    log.record(booking, Outcome.NO_DRIVER, radius_km, 1, [
        log.candidate(c.driver_id, c.distance_km, reason=CLAIM_LOST) for c in candidates
    ])
    log.flush()
    return MatchResult(Outcome.NO_DRIVER, booking_id)


def _nearest_reason(c: Candidate, chosen: Candidate, candidates: list[Candidate]) -> str:
    if c is chosen:
        return OFFERED
    if candidates.index(c) < candidates.index(chosen):
        return CLAIM_LOST
    return "farther than the driver chosen"


def make_offer(
    session: Session, booking: Booking, driver_id: int, policy: MatchPolicy, now: dt.datetime
) -> None:
    """Offer a locked pending booking to a driver this transaction has claimed."""
    booking.driver_id = driver_id
    booking.assigned_at = now
    booking.offer_expires_at = now + dt.timedelta(seconds=policy.offer_window_s)
    apply_transition(session, booking, "offer", now=now, actor=SYSTEM)


def make_offers(session: Session, offers: list[tuple[Booking, int]], policy: MatchPolicy,
                now: dt.datetime) -> None:
    """``make_offer`` for many locked pending bookings, each to a driver this transaction has
    claimed: one UPDATE round trip and one record for all of them."""
    for booking, driver_id in offers:
        booking.driver_id = driver_id
        booking.assigned_at = now
        booking.offer_expires_at = now + dt.timedelta(seconds=policy.offer_window_s)
    apply_transitions(session, [booking for booking, _ in offers], "offer", now=now,
                      actor=SYSTEM)


def no_driver(booking: Booking, policy: MatchPolicy, now: dt.datetime) -> None:
    """Nobody in reach this time: try again later, a little wider."""
    booking.match_attempts += 1
    booking.next_attempt_at = now + dt.timedelta(seconds=policy.retry_interval_s)
