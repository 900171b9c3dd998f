"""Reading bookings: one for whoever may see it, a page of them for an admin, and a
rider's or driver's own history.

Pages of history and of the admin search are keyset-paginated on ``(created_at, id)``,
newest first: a page starts strictly after the last row of the one before, so rides booked
while a client pages never shift what it has yet to read (no duplicates, no gaps), and each
page is an index range scan however deep it lies.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from dispatch.actors import Actor
from dispatch.errors import NotFound
from dispatch.models import Booking
from dispatch.states import Role


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


@dataclass(frozen=True)
class Keyset:
    """Where a page of bookings ends: the last row's ``created_at`` and ``id``."""

    created_at: dt.datetime
    id: int

    @classmethod
    def of(cls, booking: Booking) -> Keyset:
        return cls(booking.created_at, booking.id)


@dataclass(frozen=True)
class BookingFilter:
    """What an admin search narrows to; every field left None matches every booking.

    ``date``, ``date_from`` and ``date_to`` are on the requested pickup date (UTC), as the
    listing's ``date`` always was; the range is inclusive at both ends.
    """

    status: str | None = None
    rider_id: int | None = None
    driver_id: int | None = None
    region: str | None = None
    date: dt.date | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None


@dataclass(frozen=True)
class Page:
    """One page of bookings, and where the next one starts (None on the last page)."""

    bookings: list[Booking]
    next: Keyset | None


def search_bookings(
    session: Session,
    filters: BookingFilter,
    *,
    limit: int,
    after: Keyset | None = None,
    before_id: int | None = None,
) -> Page:
    """A page of bookings matching ``filters``, newest first by ``(created_at, id)``.

    ``after`` is the previous page's end. ``before_id`` reads a cursor handed out when the
    listing was paginated on id alone: the page continues after that booking's position
    (below its id, should that booking be gone).
    """
    query = select(Booking)
    if filters.status is not None:
        query = query.where(Booking.status == filters.status)
    if filters.rider_id is not None:
        query = query.where(Booking.user_id == filters.rider_id)
    if filters.driver_id is not None:
        query = query.where(Booking.driver_id == filters.driver_id)
    if filters.region is not None:
        query = query.where(Booking.region == filters.region)
    if filters.date is not None:
        query = query.where(Booking.date == filters.date)
    if filters.date_from is not None:
        query = query.where(Booking.date >= filters.date_from)
    if filters.date_to is not None:
        query = query.where(Booking.date <= filters.date_to)
    if before_id is not None and after is None:
        row = session.execute(
            select(Booking.created_at, Booking.id).where(Booking.id == before_id)
        ).first()
        if row is not None:
            after = Keyset(row.created_at, row.id)
        else:
            query = query.where(Booking.id < before_id)
    return _page(session, query, limit=limit, after=after)


def history_for(
    session: Session,
    actor: Actor,
    *,
    status: str | None,
    limit: int,
    after: Keyset | None,
) -> Page:
    """A rider's or a driver's own bookings, newest first: a rider's are those they booked,
    a driver's those they hold or drove (an offer they declined is no longer theirs)."""
    if actor.role == Role.RIDER:
        query = select(Booking).where(Booking.user_id == actor.id)
    elif actor.role == Role.DRIVER:
        query = select(Booking).where(Booking.driver_id == actor.id)
    else:
        raise ValueError(f"only riders and drivers have a history, not {actor.role}")
    if status is not None:
        query = query.where(Booking.status == status)
    return _page(session, query, limit=limit, after=after)


def _page(session: Session, query: Select[Booking], *, limit: int, after: Keyset | None) -> Page:
    if after is not None:
        query = query.where(tuple_(Booking.created_at, Booking.id) < (after.created_at, after.id))
    query = query.order_by(Booking.created_at.desc(), Booking.id.desc()).limit(limit + 1)
    rows = list(session.execute(query).scalars())
    if len(rows) > limit:
        return Page(rows[:limit], Keyset.of(rows[limit - 1]))
    return Page(rows, None)
