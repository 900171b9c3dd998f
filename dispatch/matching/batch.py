"""Live batched matching: a region's waiting bookings solved together, claimed one by one.

A batch takes the region's pending, due bookings (``claims.claim_bookings``, so two
batches never share a booking), solves the assignment problem (``solver``) over the free
drivers near them, then claims each chosen driver with the same compare-and-set as the
nearest-first path. A claim lost to a concurrent batch (or to a driver going offline)
leaves every other offer committed and sends that booking round again: at once with a
fixed window, with the next window's batch when the window adapts (workers.tasks).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dispatch.actors import SYSTEM
from dispatch.bookings.transitions import NO_DRIVER_FOUND, apply_transition
from dispatch.db import transaction_now
from dispatch.eta import CostModel, haversine_matrix_km
from dispatch.geo import bounding_box
from dispatch.matching.claims import claim_bookings, claim_drivers, waiting
from dispatch.matching.log import CLAIM_LOST, OFFERED, DispatchLog
from dispatch.matching.offers import make_offers, no_driver
from dispatch.matching.policy import MatchPolicy, Outcome, free_driver
from dispatch.matching.solver import FreeDriver, Request, solve_batch
from dispatch.models import Booking, Decline, Driver
from dispatch.ratings import RatingAverage, averages


@dataclass(frozen=True)
class Nearby:
    """The drivers a search found around one point; ``complete`` unless it stopped at its
    count, with more drivers within the radius beyond the farthest it took."""

    drivers: list[int]
    complete: bool


class DriverLocator(Protocol):
    def near_each(
        self, points: list[tuple[float, float, float]], count: int | None = None
    ) -> list[Nearby] | None:
        """For each (lat, lng, radius_km), the drivers within the radius (with ``count``,
        only that many, nearest first), or None if it cannot say."""


@dataclass
class BatchReport:
    """What one batch did with its bookings, for the task that ran it."""

    batch_id: str | None = None
    offered: dict[int, int] = field(default_factory=dict)  # booking id -> driver id
    waited_s: list[float] = field(default_factory=list)  # created -> offered, per offer
    unmatched: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    full: bool = False  # The batch hit its limit: more bookings may be waiting.
    # Waiting bookings the batch did not take: beyond what its free drivers could serve
    # (claims.claim_bookings), or held by another transaction (a concurrent batch, or a
    # killed worker's transaction not yet rolled back). A later batch must look again.
    left_waiting: int = 0
    # Free drivers the batch read: within reach of its bookings, among each one's nearest.
    free_drivers: int = 0


def _free_drivers(
    session: Session,
    bookings: list[Booking],
    policy: MatchPolicy,
    now: dt.datetime,
    locator: DriverLocator | None,
    declined: set[tuple[int, int]],
) -> list[Driver]:
    conditions = [free_driver(policy, now)]
    if locator is not None:
        drivers = _nearest_free(session, bookings, policy, locator, conditions, declined)
        if drivers is not None:
            return drivers
    boxes = [
        bounding_box(b.pickup_lat, b.pickup_lng, policy.radius_for(b.match_attempts))
        for b in bookings
    ]
    known = [box for box in boxes if box is not None]
    if len(known) == len(boxes):
        conditions += [
            Driver.lat.between(min(b[0] for b in known), max(b[1] for b in known)),
            Driver.lng.between(min(b[2] for b in known), max(b[3] for b in known)),
        ]
    return list(session.execute(select(Driver).where(*conditions)).scalars())


def _nearest_free(
    session: Session,
    bookings: list[Booking],
    policy: MatchPolicy,
    locator: DriverLocator,
    conditions: list[ColumnElement[bool]],
    declined: set[tuple[int, int]],
) -> list[Driver] | None:
    """The free drivers the solver can choose from, found through the index; None when the
    index cannot say.

    The solver looks at each booking's ``policy.candidates`` nearest drivers, and at the
    next nearest only for a booking whose nearest the batch's other bookings took. So each
    booking needs only its nearest few (``_enough``): in a city of thousands of drivers a
    batch then reads dozens of drivers, not every one within reach, which would make each
    batch's cost grow with the fleet instead of with its bookings. The index ranks by
    straight-line distance, as the ETA does (dispatch.eta). It holds busy drivers too: a
    booking whose nearest turn out to hold too few free ones, with more indexed beyond
    them, gets everyone within its radius instead, so no booking loses a driver the
    solver would have offered it.
    """
    points = [(b.pickup_lat, b.pickup_lng, policy.radius_for(b.match_attempts)) for b in bookings]
    enough = _enough(policy, len(bookings))
    found = locator.near_each(points, count=None if enough is None else 2 * enough)
    if found is None:
        return None
    ids = {d for n in found for d in n.drivers}
    drivers = _drivers_among(session, conditions, ids)
    if enough is None:
        return drivers  # Every search took its whole radius.
    free = {d.user_id for d in drivers}
    short = [
        point
        for point, booking, nearby in zip(points, bookings, found, strict=True)
        if not nearby.complete
        and sum(d in free and (booking.id, d) not in declined for d in nearby.drivers) < enough
    ]
    if short:
        wider = locator.near_each(short)
        if wider is None:
            return None
        drivers += _drivers_among(session, conditions, {d for n in wider for d in n.drivers} - ids)
    return drivers


def _enough(policy: MatchPolicy, batch_size: int) -> int | None:
    """Free drivers a booking of a batch this size needs among its nearest for the solver
    to choose as it would among all of them: its candidates, plus one for each other
    booking that may take one. None: the solver looks at every driver (no candidate limit)."""
    if not policy.candidates:
        return None
    return policy.candidates + batch_size - 1


def _drivers_among(
    session: Session, conditions: list[ColumnElement[bool]], ids: set[int]
) -> list[Driver]:
    """Those of ``ids`` who meet ``conditions``: PostgreSQL decides who is free and fresh."""
    if not ids:
        return []
    return list(
        session.execute(
            select(Driver).where(*conditions, Driver.user_id.in_(sorted(ids)))
        ).scalars()
    )


def dispatch_region(
    session: Session,
    region: str,
    policy: MatchPolicy,
    cost: CostModel,
    *,
    now: dt.datetime | None = None,
    limit: int = 500,
    locator: DriverLocator | None = None,
    window_s: float | None = None,
) -> BatchReport:
    """Match one batch of a region's waiting bookings. Safe to run concurrently and twice.

    ``now`` defaults to the database's clock, as in ``dispatch.matching.nearest.dispatch_booking``.
    ``window_s`` is how long the batch waited to gather its bookings, for the dispatch log.
    """
    now = now or transaction_now(session)
    bookings = claim_bookings(session, region, policy, now, limit)
    report = BatchReport(full=len(bookings) == limit)
    if not report.full:
        waiting_now = session.scalar(select(func.count()).where(*waiting(region, policy, now)))
        report.left_waiting = max(0, (waiting_now or 0) - len(bookings))
    live: list[Booking] = []
    for booking in bookings:
        if booking.expires_at <= now:
            apply_transition(
                session, booking, "expire", now=now, actor=SYSTEM, reason=NO_DRIVER_FOUND
            )
            report.expired.append(booking.id)
        else:
            live.append(booking)
    if not live:
        return report

    declined: set[tuple[int, int]] = {
        (booking_id, driver_id)
        for booking_id, driver_id in session.execute(
            select(Decline.booking_id, Decline.driver_id).where(
                Decline.booking_id.in_([b.id for b in live])
            )
        )
    }
    drivers = _free_drivers(session, live, policy, now, locator, declined)
    report.free_drivers = len(drivers)
    pickups = np.array([[b.pickup_lat, b.pickup_lng] for b in live]).reshape(-1, 2)
    spots = np.array([[d.lat, d.lng] for d in drivers]).reshape(-1, 2)
    distance = haversine_matrix_km(pickups, spots)
    radii = np.array([policy.radius_for(b.match_attempts) for b in live])
    allowed = distance <= radii[:, None]
    row = {b.id: i for i, b in enumerate(live)}
    column = {d.user_id: j for j, d in enumerate(drivers)}
    for booking_id, driver_id in declined:
        if driver_id in column:
            allowed[row[booking_id], column[driver_id]] = False

    ratings = averages(session, {d.user_id for d in drivers}) if policy.rating_weight_s > 0 else {}
    result = solve_batch(
        [Request(b.id, b.pickup_lat, b.pickup_lng) for b in live],
        [_free(d, now, ratings.get(d.user_id)) for d in drivers],
        cost,
        k=policy.candidates,
        allowed=allowed,
        rating_weight_s=policy.rating_weight_s,
    )
    by_id = {b.id: b for b in live}
    # One statement claims every chosen driver (in driver order, so two batches racing for
    # drivers wait for each other instead of deadlocking), one makes every offer.
    claimed = claim_drivers(session, [a.driver_id for a in result.assignments], now)
    offers: list[tuple[Booking, int]] = []
    for assignment in result.assignments:
        booking = by_id[assignment.booking_id]
        if assignment.driver_id in claimed:
            offers.append((booking, assignment.driver_id))
            report.offered[booking.id] = assignment.driver_id
            report.waited_s.append((now - booking.created_at).total_seconds())
        else:
            # Round again at once: the rest of this batch's offers stand.
            booking.next_attempt_at = now
            report.lost.append(booking.id)
    make_offers(session, offers, policy, now)
    for i, booking in enumerate(live):
        if booking.id not in report.offered and booking.id not in report.lost:
            no_driver(booking, policy, now, outbid=bool(allowed[i].any()))
            report.unmatched.append(booking.id)

    log = DispatchLog(session, "batched", now, window_s=window_s)
    report.batch_id = log.batch_id
    chosen = {a.booking_id: a.driver_id for a in result.assignments}
    taken_by = {a.driver_id: a.booking_id for a in result.assignments}
    for i, booking in enumerate(live):
        status = (
            Outcome.ASSIGNED
            if booking.id in report.offered
            else Outcome.CLAIM_LOST
            if booking.id in report.lost
            else Outcome.NO_DRIVER
        )
        candidates = [
            log.candidate(
                c.driver_id,
                float(distance[i, column[c.driver_id]]),
                eta_s=c.eta_s,
                chosen=chosen.get(booking.id) == c.driver_id and status == Outcome.ASSIGNED,
                reason=_reason(booking.id, c.driver_id, chosen, taken_by, report),
            )
            for c in result.candidates.get(booking.id, [])
        ]
        log.record(
            booking,
            status,
            float(radii[i]),
            len(live),
            candidates,
            {
                "declined": sorted(d for b, d in declined if b == booking.id),
                "beyond_radius": int((distance[i] > radii[i]).sum()),
                "free_drivers_seen": len(drivers),
            },
        )
    log.flush()
    return report


def _free(driver: Driver, now: dt.datetime, rating: RatingAverage | None = None) -> FreeDriver:
    """A driver selected as free, for the solver (a free driver has a location)."""
    assert driver.lat is not None and driver.lng is not None, "a free driver is located"
    stars = rating.average if rating is not None else None
    return FreeDriver(driver.user_id, driver.lat, driver.lng, _idle_s(driver, now), stars)


def _idle_s(driver: Driver, now: dt.datetime) -> float:
    return (now - driver.available_since).total_seconds() if driver.available_since else 0.0


def _reason(
    booking_id: int,
    driver_id: int,
    chosen: dict[int, int],
    taken_by: dict[int, int],
    report: BatchReport,
) -> str:
    if chosen.get(booking_id) == driver_id:
        return CLAIM_LOST if booking_id in report.lost else OFFERED
    other = taken_by.get(driver_id)
    if other is not None:
        return f"offered to booking {other} in the same batch (lower total ETA)"
    return "not needed: another driver gave the batch a lower total ETA"
