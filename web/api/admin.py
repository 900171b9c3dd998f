"""Admin-only reads for the live dashboard: drivers on the map, open bookings, an overview.

Each is a read-only projection on the read replica (when there is one). The queries live
here rather than in ``dispatch/`` because they decide nothing: they only shape rows that
``dispatch`` already owns for one page. Each is bounded (a limit, a window of minutes)
and uses an existing index, since the dashboard polls them every few seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatch.bookings.payloads import booking_payload
from dispatch.drivers import driver_payload
from dispatch.models import Booking, Driver
from dispatch.ratings import RatingAverage, averages
from dispatch.regions import region_names
from dispatch.states import ACTIVE_STATUSES, DRIVER_STATUSES, Role, Status
from dispatch.stats import booking_stats
from smartroute.infra import snapshots
from smartroute.infra.enqueue import batch_windows
from smartroute.infra.queues import queue_depths
from web.api import api, parse_query
from web.auth import requires
from web.runtime import read_db, runtime, utcnow

log = logging.getLogger(__name__)

# Waiting for a driver or holding one: what the map and the table show.
OPEN_STATUSES = (Status.PENDING.value, *ACTIVE_STATUSES)


class DriverQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal[DRIVER_STATUSES] | None = None  # type: ignore[valid-type]
    limit: int = Field(default=500, ge=1, le=5000)


class OpenBookingQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=200, ge=1, le=1000)


class OverviewQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    minutes: int = Field(default=15, ge=1, le=60)


@api.get("/admin/drivers")
@requires(Role.ADMIN)
def list_drivers():
    query = parse_query(DriverQuery)
    statement = select(Driver).order_by(Driver.user_id).limit(query.limit)
    if query.status is not None:
        statement = statement.where(Driver.status == query.status)
    session = read_db()
    drivers = list(session.execute(statement).scalars())
    # Every listed driver's rating in one query, whatever the page's length.
    ratings = averages(session, {d.user_id for d in drivers})
    return {"drivers": [_with_rating(driver_payload(d), ratings.get(d.user_id)) for d in drivers]}


def _with_rating(payload: dict, rating: RatingAverage | None) -> dict:
    """A driver as the dashboard lists them: with their riders' average (None: unrated)."""
    return payload | {"rating": rating.payload() if rating is not None else None}


@api.get("/admin/bookings/open")
@requires(Role.ADMIN)
def list_open_bookings():
    query = parse_query(OpenBookingQuery)
    bookings = (
        read_db()
        .execute(
            select(Booking)
            .where(Booking.status.in_(OPEN_STATUSES))
            .order_by(Booking.id.desc())
            .limit(query.limit)
        )
        .scalars()
    )
    return {"bookings": [booking_payload(b) for b in bookings]}


@api.get("/admin/overview")
@requires(Role.ADMIN)
def get_overview():
    query = parse_query(OverviewQuery)
    session, now = read_db(), utcnow()
    stats = snapshots.load(runtime().redis, snapshots.STATS_KEY)
    if stats is None:
        zones = dict(runtime().settings.region_time_zones)
        stats = booking_stats(session, now=now, time_zones=zones)
    return {
        "computed_at": now.isoformat(),
        "open_by_status": _open_by_status(session),
        "today": stats["today"],
        "time_to_assign_last_hour": stats["time_to_assign_last_hour"],
        # A snapshot written before surge existed has none; the next one will.
        "surge": stats.get("surge", {}),
        # Each region's batch window now (None: not set yet, so its next batch waits the
        # shortest, or Redis is unreachable).
        "batch_windows": batch_windows(
            runtime().redis, list(region_names(runtime().settings.regions))
        ),
        "queue_depths": _queue_depths(),
        "minutes": _minutes(session, now, query.minutes),
    }


def _open_by_status(session: Session) -> dict[str, int]:
    """Open bookings by status, counted now (the status index keeps this cheap)."""
    counts = dict(
        session.execute(
            select(Booking.status, func.count())
            .where(Booking.status.in_(OPEN_STATUSES))
            .group_by(Booking.status)
        ).all()
    )
    return {status: counts.get(status, 0) for status in OPEN_STATUSES}


def _queue_depths() -> dict[str, int]:
    """Each queue's depth now; beat's last snapshot if the broker does not answer."""
    settings = runtime().settings
    try:
        return queue_depths(runtime().celery, settings.queues)
    except Exception as exc:  # Any broker failure: the dashboard still shows the rest.
        log.warning("queue depths unavailable: %s", exc.__class__.__name__)
    snapshot = snapshots.load(runtime().redis, snapshots.HEALTH_KEY) or {}
    return snapshot.get("queue_depths", {})


def _minutes(session: Session, now: dt.datetime, minutes: int) -> list[dict]:
    """Bookings made in each of the last ``minutes`` minutes, how many got a driver, how
    many were completed, and their mean time to assign: a cohort by minute booked, so the
    scan is one range on the ``created_at`` index."""
    end = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    start = end - dt.timedelta(minutes=minutes)
    minute = func.date_trunc("minute", Booking.created_at)
    wait = func.extract("epoch", Booking.assigned_at - Booking.created_at)
    rows = session.execute(
        select(
            minute,
            func.count(),
            func.count(Booking.assigned_at),
            func.count().filter(Booking.status == Status.COMPLETED.value),
            func.avg(wait),
        )
        .where(Booking.created_at >= start)
        .group_by(minute)
    ).all()
    by_minute = {row[0].astimezone(dt.UTC): row[1:] for row in rows}
    series = []
    for i in range(minutes):
        at = start + dt.timedelta(minutes=i)
        created, assigned, completed, mean_s = by_minute.get(at, (0, 0, 0, None))
        series.append(
            {
                "minute": at.isoformat(),
                "created": created,
                "assigned": assigned,
                "completed": completed,
                "mean_time_to_assign_s": None if mean_s is None else round(float(mean_s), 3),
            }
        )
    return series
