"""Taking bookings and drivers for this transaction, so no one else matches them too.

Drivers are claimed with a compare-and-set on their row
(``UPDATE drivers SET status = 'busy' WHERE user_id = :d AND status = 'available'``):
two workers racing for one driver cannot both win, because the loser's UPDATE waits for
the winner's commit and then re-checks its WHERE clause. The partial unique index on
active bookings is the last word behind it. A batch's bookings are taken with
``FOR UPDATE SKIP LOCKED``, so two batches never share a booking.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from dispatch.db import expire_loaded
from dispatch.matching.policy import MatchPolicy, free_driver
from dispatch.models import Booking, Driver
from dispatch.states import DriverStatus, Status


def claim_driver(session: Session, driver_id: int, now: dt.datetime) -> bool:
    """Compare-and-set an available driver to busy; False if someone else got there first."""
    claimed = (
        session.connection()
        .execute(_CLAIM_DRIVER, {"claimed_id": driver_id, "claimed_at": now})
        .first()
    )
    expire_loaded(session, Driver, driver_id)
    return claimed is not None


def claim_drivers(session: Session, driver_ids: list[int], now: dt.datetime) -> set[int]:
    """``claim_driver`` for many drivers in one statement; the ids claimed. Rows are locked
    in id order, so two batches racing for drivers wait for each other, never deadlock."""
    if not driver_ids:
        return set()
    claimed: set[int] = set(
        session.connection()
        .execute(_CLAIM_DRIVERS, {"claimed_ids": sorted(driver_ids), "claimed_at": now})
        .scalars()
    )
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
    update(Driver)
    .where(
        Driver.__table__.c.user_id == bindparam("claimed_id"),
        Driver.__table__.c.status == DriverStatus.AVAILABLE.value,
    )
    .values(status=DriverStatus.BUSY.value, updated_at=bindparam("claimed_at"))
    .returning(Driver.__table__.c.user_id)
)


def waiting_anywhere(policy: MatchPolicy, now: dt.datetime) -> tuple[ColumnElement[bool], ...]:
    """The conditions a booking meets while it waits to be matched: pending, and due
    within the policy's lead time."""
    pickup_at = func.timezone("UTC", Booking.date + Booking.time)
    return (
        Booking.status == Status.PENDING.value,
        pickup_at <= now + dt.timedelta(seconds=policy.schedule_lead_s),
    )


def waiting(region: str, policy: MatchPolicy, now: dt.datetime) -> tuple[ColumnElement[bool], ...]:
    """``waiting_anywhere``, in one region."""
    return (*waiting_anywhere(policy, now), Booking.region == region)


def claim_bookings(
    session: Session, region: str, policy: MatchPolicy, now: dt.datetime, limit: int
) -> list[Booking]:
    """Up to ``limit`` of the region's waiting bookings, locked for this transaction;
    those another transaction holds are skipped, not waited for.

    Never more than the free drivers could take (``_servable``). When riders outnumber
    drivers, a batch that took the whole backlog would search, update and log every
    waiting booking to place the few drivers there are, and each batch would cost more the
    further behind the engine fell. Bookings take their turns by when each falls due
    (``next_attempt_at``): a new one a few seconds after it arrived; one whose claim was
    lost, whose driver declined, or whose batch gave every driver in its reach to others,
    at once; one whose try found nobody in reach only after its retry interval, behind
    those that arrived meanwhile. So the queue moves in arrival order, and riders no free
    driver can reach (a far suburb at night) cannot hold every place in the batch while
    drivers idle in town.
    """
    return list(
        session.execute(
            select(Booking)
            .where(*waiting(region, policy, now))
            .order_by(Booking.next_attempt_at, Booking.created_at)
            .limit(_servable(policy, now, limit))
            .with_for_update(skip_locked=True)
        ).scalars()
    )


def _servable(policy: MatchPolicy, now: dt.datetime, limit: int) -> ColumnElement[int]:
    """How many bookings a batch takes: ``policy.bookings_per_free_driver`` per free
    driver (counted only as far as ``limit`` needs), at least ``policy.batch_floor``, at
    most ``limit``. Free drivers are counted in every region: it bounds the batch, and a
    region's own share is found only through its bookings' positions."""
    per_driver = policy.bookings_per_free_driver
    free = (
        select(Driver.user_id)
        .where(free_driver(policy, now))
        .limit(-(-limit // per_driver))
        .subquery()
    )
    counted = select(func.count()).select_from(free).scalar_subquery()
    return func.least(limit, func.greatest(policy.batch_floor, per_driver * counted))
