"""Nobody can hold up an action on someone else's booking by trying their own on it.

Decline and cancel lock the booking only if it is the caller's (the ownership check is in
the locking statement): a stranger's attempt is refused at once, however long another
transaction holds the row, instead of queueing behind that lock.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from dispatch.actors import Actor
from dispatch.bookings.transitions import cancel_booking, driver_action
from dispatch.errors import NotFound, NotOfferedToYou
from dispatch.models import Booking
from dispatch.states import Role
from tests import factories as make

# How long the stranger would wait for the row before giving up, on the code that locked
# first and checked after; a refusal well inside it did not wait.
LOCK_WAIT = "3s"
REFUSED_WITHIN_S = 1.0


@pytest.fixture
def offered(committed_sessions, now):
    """A booking offered to its driver, committed, plus a stranger of each role."""
    with committed_sessions.begin() as s:
        booking, rider, driver = make.offered_booking(s, now=now)
        other_driver = make.driver(
            s, make.offset(make.LISBON, north_km=50), now=now, name="other driver"
        )
        other_rider = make.rider(s, "other rider")
        return booking.id, rider.id, driver.user_id, other_rider.id, other_driver.user_id


def _refused_without_waiting(engine, booking_id: int, attempt) -> None:
    """Hold the booking's row in one transaction; ``attempt`` in another must be refused
    within REFUSED_WITHIN_S."""
    with engine.connect() as holder, Session(engine) as stranger:
        holder.begin()
        holder.execute(
            text("SELECT 1 FROM cab_bookings WHERE id = :b FOR UPDATE"), {"b": booking_id}
        )
        stranger.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
        started = time.monotonic()
        try:
            attempt(stranger)
        finally:
            elapsed = time.monotonic() - started
            stranger.rollback()
            holder.rollback()
        assert elapsed < REFUSED_WITHIN_S, f"the refusal waited {elapsed:.2f}s for the row"


def test_a_strangers_decline_does_not_wait_for_the_bookings_lock(engine, offered, now):
    booking_id, _rider, _driver, _other_rider, other_driver = offered

    def decline(session):
        with pytest.raises(NotOfferedToYou):
            driver_action(session, booking_id, other_driver, "decline", now=now)

    _refused_without_waiting(engine, booking_id, decline)


def test_a_strangers_cancel_does_not_wait_for_the_bookings_lock(engine, offered, now):
    booking_id, _rider, _driver, other_rider, _other_driver = offered

    def cancel(session):
        with pytest.raises(NotFound):
            cancel_booking(session, booking_id, Actor(other_rider, Role.RIDER), now=now)

    _refused_without_waiting(engine, booking_id, cancel)


def test_the_owners_decline_and_cancel_still_work(committed_sessions, offered, now):
    booking_id, rider, driver, _other_rider, _other_driver = offered
    with committed_sessions.begin() as s:
        assert driver_action(s, booking_id, driver, "decline", now=now).status == "pending"
    with committed_sessions.begin() as s:
        assert (
            cancel_booking(s, booking_id, Actor(rider, Role.RIDER), now=now).status == "cancelled"
        )
    with committed_sessions() as s:
        assert s.get(Booking, booking_id).status == "cancelled"
