"""Ratings: after a completed ride, its rider rates the driver and its driver rates the rider.

Each party rates once per booking (the database's unique constraint settles two requests
racing), within a window after completion measured on PostgreSQL's clock. Every rating
also adds to its ratee's summary (a count and a sum of stars) in the same transaction, so
a driver's average, shown to riders, is one primary-key read rather than a scan.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from dispatch.actors import Actor
from dispatch.bookings.payloads import booking_payload
from dispatch.db import transaction_now
from dispatch.errors import DispatchError, NotFound
from dispatch.models import Booking, BookingEvent, Rating, RatingSummary
from dispatch.states import Role, Status


class RideNotCompleted(DispatchError):
    """A ride may be rated only once it is completed."""

    code = "ride_not_completed"


class AlreadyRated(DispatchError):
    """This party has already rated this ride."""

    code = "already_rated"


class RatingWindowClosed(DispatchError):
    """The ride was completed longer ago than ratings are taken."""

    code = "rating_window_closed"


@dataclass(frozen=True)
class RatingAverage:
    """A user's ratings received: their average (two decimals) and how many there are."""

    average: float
    count: int

    def payload(self) -> dict[str, float | int]:
        return {"average": self.average, "count": self.count}


def rate(
    session: Session,
    booking_id: int,
    actor: Actor,
    *,
    stars: int,
    comment: str | None,
    window: dt.timedelta,
) -> Rating:
    """Record ``actor``'s rating of the other party of a completed booking.

    The booking's rider rates its driver and its driver rates its rider; anyone else is
    told the booking does not exist, as when reading it. Raises ``RideNotCompleted``,
    ``RatingWindowClosed`` past ``window`` after completion, or ``AlreadyRated``.
    """
    booking = session.get(Booking, booking_id)
    role = _party(booking, actor)
    if booking is None or role is None:
        raise NotFound("no such booking", booking_id=booking_id)
    if booking.status != Status.COMPLETED:
        raise RideNotCompleted(
            "only a completed ride can be rated",
            booking_id=booking_id,
            current_status=booking.status,
        )
    completed_at = _completed_at(session, booking)
    closes_at = completed_at + window
    if transaction_now(session) > closes_at:
        raise RatingWindowClosed(
            f"ratings are taken for {_span(window)} after completion",
            booking_id=booking_id,
            closed_at=closes_at.isoformat(),
        )
    ratee_id = booking.driver_id if role == Role.RIDER else booking.user_id
    assert ratee_id is not None, "a completed booking has a driver"
    inserted = session.execute(
        insert(Rating)
        .values(
            booking_id=booking_id,
            rater_role=role.value,
            rater_id=actor.id,
            ratee_id=ratee_id,
            stars=stars,
            comment=comment,
        )
        .on_conflict_do_nothing(constraint="uq_ratings_booking_rater_role")
        .returning(Rating.id)
    ).scalar_one_or_none()
    if inserted is None:
        raise AlreadyRated("this ride is already rated by its " + role.value, booking_id=booking_id)
    summary = insert(RatingSummary).values(user_id=ratee_id, ratings=1, stars_total=stars)
    session.execute(
        summary.on_conflict_do_update(
            index_elements=[RatingSummary.user_id],
            set_={
                "ratings": RatingSummary.ratings + 1,
                "stars_total": RatingSummary.stars_total + summary.excluded.stars_total,
            },
        )
    )
    rating = session.get(Rating, inserted)
    assert rating is not None
    return rating


def _party(booking: Booking | None, actor: Actor) -> Role | None:
    """Which side of ``booking`` the actor is on, if any."""
    if booking is None or actor.id is None:
        return None
    if actor.role == Role.RIDER and booking.user_id == actor.id:
        return Role.RIDER
    if actor.role == Role.DRIVER and booking.driver_id == actor.id:
        return Role.DRIVER
    return None


def _completed_at(session: Session, booking: Booking) -> dt.datetime:
    """When the booking was completed, from its audit trail (its last change otherwise)."""
    completed: dt.datetime | None = session.scalar(
        select(func.max(BookingEvent.created_at)).where(
            BookingEvent.booking_id == booking.id,
            BookingEvent.to_status == Status.COMPLETED.value,
        )
    )
    return completed if completed is not None else booking.updated_at


def _span(window: dt.timedelta) -> str:
    if window % dt.timedelta(days=1):
        return f"{int(window.total_seconds())} seconds"
    return f"{window.days} day" + ("s" if window.days != 1 else "")


def averages(session: Session, user_ids: set[int]) -> dict[int, RatingAverage]:
    """The rating averages of those of ``user_ids`` who have been rated, in one query."""
    if not user_ids:
        return {}
    rows = session.execute(
        select(RatingSummary.user_id, RatingSummary.ratings, RatingSummary.stars_total).where(
            RatingSummary.user_id.in_(sorted(user_ids))
        )
    )
    return {
        user_id: RatingAverage(round(total / count, 2), count) for user_id, count, total in rows
    }


def average_for(session: Session, user_id: int | None) -> RatingAverage | None:
    """One user's rating average, or None if nobody has rated them yet."""
    if user_id is None:
        return None
    return averages(session, {user_id}).get(user_id)


def rating_payload(rating: Rating) -> dict[str, object]:
    """A rating as its rater sees it once recorded."""
    return {
        "booking_id": rating.booking_id,
        "rater_role": rating.rater_role,
        "ratee_id": rating.ratee_id,
        "stars": rating.stars,
        "comment": rating.comment,
        "created_at": rating.created_at.isoformat(),
    }


def party_payloads(session: Session, bookings: list[Booking], actor: Actor) -> list[dict[str, Any]]:
    """The bookings as one of their parties sees them, in two queries whatever their number.

    Each carries ``my_rating``, the caller's own rating of it (None until rated), so a
    client knows whether to ask for one; a rider's also carry ``driver_rating``, the
    average of the driver who holds or drove the ride (None while unrated or unmatched).
    An admin, a party to none of them, gets the plain payloads.
    """
    if actor.role not in (Role.RIDER, Role.DRIVER) or actor.id is None:
        return [booking_payload(b) for b in bookings]
    mine = {
        rating.booking_id: rating
        for rating in session.scalars(
            select(Rating).where(
                Rating.booking_id.in_([b.id for b in bookings]),
                Rating.rater_role == actor.role.value,
                Rating.rater_id == actor.id,
            )
        )
    }
    drivers: dict[int, RatingAverage] = {}
    if actor.role == Role.RIDER:
        drivers = averages(session, {b.driver_id for b in bookings if b.driver_id is not None})
    payloads = []
    for booking in bookings:
        payload = booking_payload(booking)
        if actor.role == Role.RIDER:
            driver = drivers.get(booking.driver_id) if booking.driver_id is not None else None
            payload["driver_rating"] = driver.payload() if driver is not None else None
        rating = mine.get(booking.id)
        payload["my_rating"] = rating_payload(rating) if rating is not None else None
        payloads.append(payload)
    return payloads
