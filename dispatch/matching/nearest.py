"""Nearest-first matching: one pending booking offered to the nearest free driver.

The candidates are the free drivers (``policy.free_driver``) within the booking's search
radius who have not turned it down, nearest first; the first one claimed
(``claims.claim_driver``) gets the offer.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlalchemy.orm import Session

from dispatch.actors import SYSTEM
from dispatch.bookings.payloads import pickup_time
from dispatch.bookings.transitions import NO_DRIVER_FOUND, apply_transition, lock_booking
from dispatch.db import transaction_now
from dispatch.geo import EARTH_RADIUS_KM, bounding_box
from dispatch.matching.claims import claim_driver
from dispatch.matching.log import CLAIM_LOST, OFFERED, DispatchLog
from dispatch.matching.offers import make_offer, no_driver
from dispatch.matching.policy import Candidate, MatchPolicy, Outcome, free_driver
from dispatch.models import Booking, Decline, Driver
from dispatch.states import Status


@dataclass(frozen=True)
class MatchResult:
    outcome: Outcome
    booking_id: int
    driver_id: int | None = None
    distance_km: float | None = None


def _distance_km(lat: float, lng: float) -> ColumnElement[float]:
    """SQL for the haversine distance from (lat, lng) to each driver's location."""
    dlat = func.radians(Driver.lat - lat) / 2
    dlng = func.radians(Driver.lng - lng) / 2
    a = func.power(func.sin(dlat), 2) + func.cos(func.radians(lat)) * func.cos(
        func.radians(Driver.lat)
    ) * func.power(func.sin(dlng), 2)
    distance: ColumnElement[float] = 2 * EARTH_RADIUS_KM * func.asin(func.least(1.0, func.sqrt(a)))
    return distance


def find_candidates(
    session: Session, booking: Booking, policy: MatchPolicy, now: dt.datetime
) -> list[Candidate]:
    """Free drivers within the radius who have not turned this booking down, nearest first
    and, among equals, the longest idle."""
    distance = _distance_km(booking.pickup_lat, booking.pickup_lng).label("distance_km")
    declined = exists().where(
        and_(Decline.booking_id == booking.id, Decline.driver_id == Driver.user_id)
    )
    conditions = [free_driver(policy, now), ~declined]
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
            log.record(
                booking,
                Outcome.ASSIGNED,
                radius_km,
                1,
                [
                    log.candidate(
                        c.driver_id,
                        c.distance_km,
                        chosen=c is candidate,
                        reason=_nearest_reason(c, candidate, candidates),
                    )
                    for c in candidates
                ],
            )
            log.flush()
            return MatchResult(
                Outcome.ASSIGNED, booking_id, candidate.driver_id, candidate.distance_km
            )

    no_driver(booking, policy, now)
    log.record(
        booking,
        Outcome.NO_DRIVER,
        radius_km,
        1,
        [log.candidate(c.driver_id, c.distance_km, reason=CLAIM_LOST) for c in candidates],
    )
    log.flush()
    return MatchResult(Outcome.NO_DRIVER, booking_id)


def _nearest_reason(c: Candidate, chosen: Candidate, candidates: list[Candidate]) -> str:
    if c is chosen:
        return OFFERED
    if candidates.index(c) < candidates.index(chosen):
        return CLAIM_LOST
    return "farther than the driver chosen"
