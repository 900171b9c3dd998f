"""Booking statistics for operators: counts by status, today's totals, time to assign.

"Today" is each region's own local day: a booking counts from the midnight of its
region's time zone (``SMARTROUTE_REGION_TIME_ZONES``), so Lisbon's day and Tokyo's day
each start at their own midnight. The stats also carry each region's surge.

The API's stats, beat's snapshot and the Prometheus gauges all read them from here, so
an "active booking" or "the oldest pending booking" means the same everywhere.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from dispatch.models import Booking
from dispatch.regions import DEFAULT_REGION, local_day_start, zone_of
from dispatch.states import ACTIVE_STATUSES, Status
from dispatch.surge import surge_levels


def active_bookings(session: Session) -> int:
    """How many bookings a driver holds (assigned, accepted, in progress)."""
    return session.scalar(select(func.count()).where(Booking.status.in_(ACTIVE_STATUSES))) or 0


def oldest_pending_age_s(session: Session, now: dt.datetime) -> float | None:
    """How long the oldest booking still waiting for a driver has waited; None if none."""
    oldest = session.scalar(
        select(func.min(Booking.created_at)).where(Booking.status == Status.PENDING.value)
    )
    return None if oldest is None else (now - oldest).total_seconds()


def booking_stats(
    session: Session, *, now: dt.datetime, time_zones: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Counts by status, today's bookings by status (each region's today by its own time
    zone in ``time_zones``, UTC if it has none), time to assign over the last hour, and each
    region's surge."""
    by_status = dict(
        session.execute(select(Booking.status, func.count()).group_by(Booking.status)).all()
    )
    zones = time_zones or {}
    utc_midnight = local_day_start(now, zone_of(DEFAULT_REGION, {}))
    starts = {name: local_day_start(now, zone_of(name, zones)) for name in zones}
    since: Any = utc_midnight
    if starts:
        since = case(
            *((Booking.region == name, start) for name, start in starts.items()),
            else_=utc_midnight,
        )
    today_rows = session.execute(
        select(Booking.region, Booking.status, func.count())
        # The earliest midnight first, so the created_at index narrows the scan.
        .where(Booking.created_at >= min([utc_midnight, *starts.values()]))
        .where(Booking.created_at >= since)
        .group_by(Booking.region, Booking.status)
    ).all()
    today: Counter[str] = Counter()
    today_by_region: Counter[str] = Counter()
    for region, status, count in today_rows:
        today[status] += count
        today_by_region[region] += count
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
            "by_region": {
                name: {
                    "since": starts.get(name, utc_midnight).isoformat(),
                    "total": today_by_region[name],
                }
                for name in sorted(set(starts) | set(today_by_region))
            },
        },
        "surge": {name: level.as_payload() for name, level in surge_levels(session).items()},
        "time_to_assign_last_hour": {
            "mean_s": None if mean_s is None else round(float(mean_s), 3),
            "p95_s": None if p95_s is None else round(float(p95_s), 3),
            "sample": sample,
        },
        "oldest_pending_age_s": (None if oldest_pending_s is None else round(oldest_pending_s, 3)),
    }
