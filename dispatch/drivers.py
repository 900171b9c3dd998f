"""Drivers' own state: where they are and whether they take rides."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Row, bindparam, select, text, update
from sqlalchemy.orm import Session

from dispatch.db import expire_loaded
from dispatch.errors import DispatchError, DriverBusy, NotFound
from dispatch.models import Booking, Driver
from dispatch.states import ACTIVE_STATUSES, DriverStatus


class LocationRequired(DispatchError):
    """A driver cannot take rides before SmartRoute knows where they are."""

    code = "location_required"


def get_driver(session: Session, driver_id: int) -> Driver:
    """A driver's current state."""
    driver = session.get(Driver, driver_id)
    if driver is None:
        raise NotFound("no such driver", driver_id=driver_id)
    return driver


def _lock_driver(session: Session, driver_id: int) -> Driver:
    driver = session.get(Driver, driver_id, with_for_update=True, populate_existing=True)
    if driver is None:
        raise NotFound("no such driver", driver_id=driver_id)
    return driver


def update_location(
    session: Session, driver_id: int, lat: float, lng: float, *, now: dt.datetime
) -> Row[Any]:
    """Record a driver's location ping; returns the driver's row (the model's names)."""
    driver = (
        session.connection()
        .execute(
            _PING,
            {
                "pinged_id": driver_id,
                "new_lat": lat,
                "new_lng": lng,
                "pinged_at": now,
            },
        )
        .first()
    )
    if driver is None:
        raise NotFound("no such driver", driver_id=driver_id)
    expire_loaded(session, Driver, driver_id)
    return driver


# Core, built once: the busiest write of all, a ping every few seconds from every driver.
_PING = (
    update(Driver)
    .where(Driver.__table__.c.user_id == bindparam("pinged_id"))
    .values(
        lat=bindparam("new_lat"),
        lng=bindparam("new_lng"),
        last_seen_at=bindparam("pinged_at"),
        updated_at=bindparam("pinged_at"),
    )
    .returning(*Driver.__table__.c)
)


def record_locations(
    session: Session, positions: list[tuple[int, float, float, dt.datetime]]
) -> int:
    """Record many drivers' last-known positions at once, as ``update_location`` records
    one: (driver id, lat, lng, when it was received). A driver last seen at or after a
    position's time keeps what it has, so a late write never moves a driver backwards.
    How many drivers moved."""
    if not positions:
        return 0
    ids, lats, lngs, seen = (list(column) for column in zip(*positions, strict=True))
    moved = session.connection().execute(
        _POSITIONS, {"ids": ids, "lats": lats, "lngs": lngs, "seen": seen}
    )
    for driver_id in ids:
        expire_loaded(session, Driver, driver_id)
    return moved.rowcount


# One statement for every driver: the arrays are four parameters however many drivers
# there are, so a flush of thousands costs one round trip and one plan.
_POSITIONS = text(
    """
    UPDATE drivers AS d
    SET lat = p.lat, lng = p.lng, last_seen_at = p.seen, updated_at = p.seen
    FROM unnest(
        CAST(:ids AS bigint[]),
        CAST(:lats AS double precision[]),
        CAST(:lngs AS double precision[]),
        CAST(:seen AS timestamptz[])
    ) AS p(user_id, lat, lng, seen)
    WHERE d.user_id = p.user_id AND (d.last_seen_at IS NULL OR d.last_seen_at < p.seen)
    """
)


def set_availability(
    session: Session, driver_id: int, status: DriverStatus, *, now: dt.datetime
) -> Driver:
    """Go available or offline. A driver holding a booking is busy until it ends."""
    driver = _lock_driver(session, driver_id)
    if driver.status == DriverStatus.BUSY:
        raise DriverBusy("finish or hand back your current booking first", status=driver.status)
    if status == DriverStatus.AVAILABLE and driver.lat is None:
        raise LocationRequired("send your location before going available")
    if driver.status != status:
        driver.status = status.value
        driver.available_since = now if status == DriverStatus.AVAILABLE else None
    driver.last_seen_at = now
    driver.updated_at = now
    return driver


def current_booking(session: Session, driver_id: int) -> Booking | None:
    """The booking a driver holds (offered, accepted or under way), if any."""
    return session.execute(
        select(Booking).where(Booking.driver_id == driver_id, Booking.status.in_(ACTIVE_STATUSES))
    ).scalar_one_or_none()


def driver_payload(driver: Driver | Row[Any]) -> dict[str, Any]:
    """A driver's state as the driver's app and admins see it."""
    return {
        "id": driver.user_id,
        "status": driver.status,
        "location": None if driver.lat is None else {"lat": driver.lat, "lng": driver.lng},
        "last_seen_at": driver.last_seen_at.isoformat() if driver.last_seen_at else None,
    }
