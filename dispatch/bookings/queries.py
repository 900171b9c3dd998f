"""Reading bookings: one for whoever may see it, or a page of them for an admin."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatch.actors import Actor
from dispatch.errors import NotFound
from dispatch.models import Booking


def get_booking_for(session: Session, booking_id: int, actor: Actor) -> Booking:
    """The booking if ``actor`` may see it: its rider, its current driver, or an admin."""
    booking = session.get(Booking, booking_id)
    if booking is None or not _can_see(booking, actor):
        raise NotFound("no such booking", booking_id=booking_id)
    return booking


def _can_see(booking: Booking, actor: Actor) -> bool:
    return actor.is_admin or actor.id in (booking.user_id, booking.driver_id)


def list_bookings(
    session: Session,
    *,
    status: str | None,
    date: dt.date | None,
    limit: int,
    before_id: int | None,
) -> list[Booking]:
    """A page of bookings, newest first, keyset-paginated on id."""
    query = select(Booking).order_by(Booking.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Booking.status == status)
    if date is not None:
        query = query.where(Booking.date == date)
    if before_id is not None:
        query = query.where(Booking.id < before_id)
    return list(session.execute(query).scalars())
