"""Booking statistics for operators: counts by status, today's totals, time to assign.

The API's stats, beat's snapshot and the Prometheus gauges all read them from here, so
an "active booking" or "the oldest pending booking" means the same everywhere.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatch.models import Booking
from dispatch.states import ACTIVE_STATUSES, Status


def active_bookings(session: Session) -> int:
    """How many bookings a driver holds (assigned, accepted, in progress)."""
    return session.scalar(select(func.count()).where(Booking.status.in_(ACTIVE_STATUSES))) or 0


def oldest_pending_age_s(session: Session, now: dt.datetime) -> float | None:
    """How long the oldest booking still waiting for a driver has waited; None if none."""
    oldest = session.scalar(
        select(func.min(Booking.created_at)).where(Booking.status == Status.PENDING.value)
    )
    return None if oldest is None else (now - oldest).total_seconds()


def booking_stats(session: Session, *, now: dt.datetime) -> dict[str, Any]:
    """Counts by status, today's bookings by status, and time to assign over the last hour."""
    by_status = dict(
        session.execute(select(Booking.status, func.count()).group_by(Booking.status)).all()
    )
    midnight = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    today = dict(
        session.execute(
            select(Booking.status, func.count())
            .where(Booking.created_at >= midnight)
            .group_by(Booking.status)
        ).all()
    )
    wait = func.extract("epoch", Booking.assigned_at - Booking.created_at)
    mean_s, p95_s, sample = session.execute(
        select(
            func.avg(wait),
            func.percentile_cont(0.95).within_group(wait),
            func.count(Booking.assigned_at),
        ).where(Booking.assigned_at >= now - dt.timedelta(hours=1))
    ).one()
    oldest_pending_s = oldest_pending_age_s(session, now)
    return {
        "computed_at": now.isoformat(),
        "by_status": {s.value: by_status.get(s.value, 0) for s in Status},
        "active": sum(by_status.get(s, 0) for s in ACTIVE_STATUSES),
        "today": {
            "total": sum(today.values()),
            "by_status": {s.value: today.get(s.value, 0) for s in Status},
        },
        "time_to_assign_last_hour": {
            "mean_s": None if mean_s is None else round(float(mean_s), 3),
            "p95_s": None if p95_s is None else round(float(p95_s), 3),
            "sample": sample,
        },
        "oldest_pending_age_s": (None if oldest_pending_s is None else round(oldest_pending_s, 3)),
    }
