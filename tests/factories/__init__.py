"""Small builders for test data, made through the domain's own services."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from dispatch.bookings.creation import BookingRequest, Point, create_booking
from dispatch.drivers import set_availability, update_location
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy, Outcome
from dispatch.models import Booking, Driver, User
from dispatch.states import DriverStatus, Role
from dispatch.users import create_user

LISBON = Point(38.7223, -9.1393)


def offset(point: Point, north_km: float = 0.0, east_km: float = 0.0) -> Point:
    """A point about ``north_km`` north and ``east_km`` east of ``point``."""
    import math

    dlat = north_km / 111.32
    dlng = east_km / (111.32 * math.cos(math.radians(point.lat)))
    return Point(point.lat + dlat, point.lng + dlng)


def rider(session: Session, name: str = "rider") -> User:
    user = create_user(session, name, Role.RIDER)
    return user


def driver(
    session: Session,
    at: Point | None = LISBON,
    *,
    now: dt.datetime,
    available: bool = True,
    name: str = "driver",
) -> Driver:
    user = create_user(session, name, Role.DRIVER)
    if at is not None:
        update_location(session, user.id, at.lat, at.lng, now=now)
    if available:
        set_availability(session, user.id, DriverStatus.AVAILABLE, now=now)
    session.flush()
    return session.get(Driver, user.id)


def booking(
    session: Session,
    rider_user: User,
    pickup: Point = LISBON,
    *,
    now: dt.datetime,
    pickup_at: dt.datetime | None = None,
    deadline_s: int = 300,
    key: str | None = None,
) -> Booking:
    created, _new = create_booking(
        session,
        rider_user.id,
        BookingRequest(pickup, offset(pickup, north_km=3), pickup_at),
        now=now,
        deadline_s=deadline_s,
        first_retry_s=5,
        idempotency_key=key,
    )
    return session.get(Booking, created.id)


def offered_booking(session: Session, *, now: dt.datetime) -> tuple[Booking, User, Driver]:
    """A rider's booking, offered by matching to a driver near it: (booking, rider, driver)."""
    rider_user = rider(session)
    near = driver(session, now=now)
    offered = booking(session, rider_user, now=now)
    assert dispatch_booking(session, offered.id, MatchPolicy(), now).outcome == Outcome.ASSIGNED
    return offered, rider_user, near


def token(session: Session, user_id: int, secret_key: str, ttl_s: int = 3600) -> str:
    """A signed token for the user, issued as the API issues one (its row is live)."""
    from dispatch.tokens import issue

    signed, _row = issue(session, session.get(User, user_id), secret_key, ttl_s)
    return signed
