"""The sweeps beat runs, so that every booking keeps moving toward an end.

Timers live in rows (``offer_expires_at``, ``next_attempt_at``, ``expires_at``,
``accepted_at``, ``started_at``), not in broker countdowns. Each sweep claims its rows
with ``FOR UPDATE SKIP LOCKED``, so two beats, or a sweep and a worker, never act on the
same row at once, and each change re-checks the status it expects, so a sweep that runs
twice does nothing the second time.

What is due is decided by the database's clock (``transaction_now``), read inside the
sweep's transaction: a worker whose own clock runs fast, or that paused between reading
it and starting its transaction, cannot lapse or expire what is not yet due. ``now`` is
for tests that play time forward.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from dispatch.actors import SYSTEM
from dispatch.bookings.transitions import (
    NO_DRIVER_FOUND,
    apply_transition,
    end_booking,
    hand_back,
    return_to_pending,
    take_offline,
)
from dispatch.db import transaction_now
from dispatch.matching.claims import waiting_anywhere
from dispatch.matching.policy import MatchPolicy
from dispatch.models import Booking, Driver
from dispatch.states import UNSTARTED_STATUSES, DriverStatus, Status


def _claim(session: Session, query: Select[Booking], limit: int) -> list[Booking]:
    return list(
        session.execute(
            query.order_by(Booking.id).limit(limit).with_for_update(skip_locked=True)
        ).scalars()
    )


def lapse_offers(
    session: Session, *, now: dt.datetime | None = None, limit: int = 500
) -> list[int]:
    """Offers left unanswered past their window go back to pending; returns their ids."""
    now = now or transaction_now(session)
    lapsed = _claim(
        session,
        select(Booking).where(
            Booking.status == Status.ASSIGNED.value, Booking.offer_expires_at <= now
        ),
        limit,
    )
    for booking in lapsed:
        return_to_pending(session, booking, "lapse", now=now, actor=SYSTEM)
    return [b.id for b in lapsed]


def expire_overdue(
    session: Session, *, now: dt.datetime | None = None, limit: int = 500
) -> list[int]:
    """Pending bookings past their deadline become expired; returns their ids."""
    now = now or transaction_now(session)
    overdue = _claim(
        session,
        select(Booking).where(Booking.status == Status.PENDING.value, Booking.expires_at <= now),
        limit,
    )
    for booking in overdue:
        apply_transition(session, booking, "expire", now=now, actor=SYSTEM, reason=NO_DRIVER_FOUND)
    return [b.id for b in overdue]


def regions_due(
    session: Session, policy: MatchPolicy, *, now: dt.datetime | None = None
) -> list[str]:
    """The regions where a waiting booking's try is due: each needs a batch.

    This is what makes a lost broker message harmless when bookings are matched in
    batches: the booking row is the record, and the queue only a hint to act on it. It
    writes nothing. A batch takes its bookings in turn by ``next_attempt_at``
    (``dispatch.matching.claims.claim_bookings``), so pushing the due ones back, as
    ``claim_due`` does, would send them behind bookings that arrived after them; and it
    would rewrite every waiting row at each sweep, which under overload is hundreds.
    A region stays due, and is asked for at every sweep, until a batch tries its bookings.
    """
    now = now or transaction_now(session)
    return list(
        session.scalars(
            select(Booking.region)
            .where(*waiting_anywhere(policy, now), Booking.next_attempt_at <= now)
            .distinct()
            .order_by(Booking.region)
        )
    )


def claim_due(
    session: Session, *, now: dt.datetime | None = None, retry_interval_s: int, limit: int = 500
) -> list[int]:
    """Pending bookings due another matching attempt; pushes their next attempt back.

    For matching one booking per message (no batch window): each due booking is sent
    again, and pushing it back keeps the next sweep from sending it twice.
    """
    now = now or transaction_now(session)
    due = (
        select(Booking.id)
        .where(Booking.status == Status.PENDING.value, Booking.next_attempt_at <= now)
        .order_by(Booking.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = session.execute(
        update(Booking)
        .where(Booking.id.in_(due))
        .values(next_attempt_at=now + dt.timedelta(seconds=retry_interval_s))
        .returning(Booking.id)
    )
    return sorted(r.id for r in rows)


def mark_silent_drivers_offline(
    session: Session, *, now: dt.datetime | None = None, stale_after_s: int
) -> list[int]:
    """Available drivers whose app stopped pinging go offline; returns their ids.

    A busy driver keeps their ride: a phone in a tunnel does not cancel a trip.
    """
    now = now or transaction_now(session)
    rows = session.execute(
        update(Driver)
        .where(
            Driver.status == DriverStatus.AVAILABLE.value,
            Driver.last_seen_at < now - dt.timedelta(seconds=stale_after_s),
        )
        .values(status=DriverStatus.OFFLINE.value, available_since=None, updated_at=now)
        .returning(Driver.user_id)
    )
    return sorted(r.user_id for r in rows)


@dataclass(frozen=True)
class StuckRides:
    """What a stuck-ride sweep did: the bookings matched again, and those cancelled."""

    rematched: list[int]
    cancelled: list[int]


def recover_stuck_rides(
    session: Session,
    *,
    start_timeout_s: int,
    action_for: Callable[[str], str],
    deadline_s: int,
    now: dt.datetime | None = None,
    limit: int = 500,
) -> StuckRides:
    """Rides accepted (or arrived at) but not started ``start_timeout_s`` after their
    acceptance, or after the requested pickup time when that is later, are taken from their
    driver: matched again or cancelled, as ``action_for(region)`` says ("rematch" or
    "cancel"). The driver goes offline: one who held a ride without starting it is not
    offered the next."""
    now = now or transaction_now(session)
    cutoff = now - dt.timedelta(seconds=start_timeout_s)
    requested_pickup = func.timezone("UTC", Booking.date + Booking.time)
    stuck = _claim(
        session,
        select(Booking).where(
            Booking.status.in_(UNSTARTED_STATUSES),
            Booking.accepted_at <= cutoff,
            requested_pickup <= cutoff,
        ),
        limit,
    )
    reason = f"not started within {start_timeout_s} s"
    rematched, cancelled = [], []
    for booking in stuck:
        if action_for(booking.region) == "cancel":
            end_booking(
                session, booking, "cancel", SYSTEM, now, reason, driver_goes=DriverStatus.OFFLINE
            )
            cancelled.append(booking.id)
        else:
            driver_id = hand_back(
                session,
                booking,
                "rematch",
                now=now,
                actor=SYSTEM,
                reason=reason,
                never_again="stuck",
                deadline_s=deadline_s,
            )
            take_offline(session, driver_id, now)
            rematched.append(booking.id)
    return StuckRides(rematched, cancelled)


def flag_overrunning_rides(
    session: Session, *, max_ride_s: int, now: dt.datetime | None = None
) -> list[int]:
    """Rides in progress for longer than ``max_ride_s`` are flagged (``overrun_at``) for
    operators, once each; returns the ids flagged now. Nothing else changes: a long ride may
    be a real one, and only an admin may close it (force-complete or cancel)."""
    now = now or transaction_now(session)
    rows = session.execute(
        update(Booking)
        .where(
            Booking.status == Status.IN_PROGRESS.value,
            Booking.started_at <= now - dt.timedelta(seconds=max_ride_s),
            Booking.overrun_at.is_(None),
        )
        .values(overrun_at=now)
        .returning(Booking.id)
    )
    return sorted(r.id for r in rows)


def overrunning_rides(session: Session) -> int:
    """How many rides under way are flagged as running past their maximum."""
    return (
        session.scalar(
            select(func.count()).where(
                Booking.status == Status.IN_PROGRESS.value, Booking.overrun_at.is_not(None)
            )
        )
        or 0
    )
