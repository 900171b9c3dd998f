"""Races in two real sessions. A cancel racing a driver's accept (or a driver's cancel):
whichever takes the booking's row first wins, the other waits for it and then acts on what
it finds, and the driver ends up free with the audit trail whole. Two bookings with one
Idempotency-Key: the second waits for the first and answers with its booking."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from dispatch.actors import Actor
from dispatch.bookings.transitions import cancel_booking, driver_action, driver_cancellations
from dispatch.errors import InvalidTransition
from dispatch.models import Booking, BookingEvent, Decline, Driver
from dispatch.states import Role
from tests import factories as make
from tests.support import wait_for


@pytest.fixture
def offered(committed_sessions, now):
    """A committed booking offered to its driver: (booking, rider, driver) ids."""
    with committed_sessions.begin() as s:
        booking, rider, driver = make.offered_booking(s, now=now)
        return booking.id, rider.id, driver.user_id


def _second(engine, booking_id: int, act) -> Future:
    """Run ``act(session)`` in a thread of its own and commit; once it waits on the booking's
    row lock, return its future (the result, or the error it raised)."""
    done: Future = Future()

    def run():
        with Session(engine) as session:
            try:
                result = act(session)
                session.commit()
            except Exception as exc:
                session.rollback()
                done.set_exception(exc)
            else:
                done.set_result(result)

    threading.Thread(target=run, daemon=True).start()

    def waiting_on_the_lock():
        with engine.connect() as probe:
            return probe.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
            )

    wait_for(lambda: done.done() or waiting_on_the_lock(), 10, "the second session to wait")
    return done


def _settled(committed_sessions, booking_id: int, driver_id: int):
    with committed_sessions() as s:
        booking = s.get(Booking, booking_id)
        events = s.scalar(
            select(BookingEvent.version)
            .where(BookingEvent.booking_id == booking_id)
            .order_by(BookingEvent.version.desc())
            .limit(1)
        )
        assert events == booking.version, "every change is in the audit trail"
        return booking.status, s.get(Driver, driver_id).status


def test_a_rider_cancel_waiting_on_an_accept_cancels_the_accepted_ride(
    engine, committed_sessions, offered, now
):
    booking_id, rider_id, driver_id = offered
    with Session(engine) as first:
        driver_action(first, booking_id, driver_id, "accept", now=now)
        cancelled = _second(
            engine,
            booking_id,
            lambda s: cancel_booking(s, booking_id, Actor(rider_id, Role.RIDER), now=now).status,
        )
        assert not cancelled.done()
        first.commit()
    assert cancelled.result(timeout=10) == "cancelled"
    assert _settled(committed_sessions, booking_id, driver_id) == ("cancelled", "available")


def test_an_accept_waiting_on_a_rider_cancel_is_refused(engine, committed_sessions, offered, now):
    booking_id, rider_id, driver_id = offered
    with Session(engine) as first:
        cancel_booking(first, booking_id, Actor(rider_id, Role.RIDER), now=now)
        accepted = _second(
            engine, booking_id, lambda s: driver_action(s, booking_id, driver_id, "accept", now=now)
        )
        assert not accepted.done()
        first.commit()
    with pytest.raises(InvalidTransition, match="cannot accept a booking that is cancelled"):
        accepted.result(timeout=10)
    assert _settled(committed_sessions, booking_id, driver_id) == ("cancelled", "available")


def test_a_rider_cancel_waiting_on_a_drivers_cancel_cancels_the_booking_back_in_matching(
    engine, committed_sessions, offered, now
):
    booking_id, rider_id, driver_id = offered
    with committed_sessions.begin() as s:
        driver_action(s, booking_id, driver_id, "accept", now=now)
    with Session(engine) as first:
        driver_action(first, booking_id, driver_id, "cancel", now=now, reason="car broke down")
        cancelled = _second(
            engine,
            booking_id,
            lambda s: cancel_booking(s, booking_id, Actor(rider_id, Role.RIDER), now=now).status,
        )
        first.commit()
    assert cancelled.result(timeout=10) == "cancelled"
    assert _settled(committed_sessions, booking_id, driver_id) == ("cancelled", "available")
    with committed_sessions() as s:
        assert s.get(Decline, (booking_id, driver_id)).reason == "cancelled"
        assert driver_cancellations(s, driver_id) == 1


def test_two_requests_with_one_key_at_once_make_one_booking(committed_sessions, engine, now):
    """The second waits on the first's claim of the key, then answers with its booking,
    having written nothing of its own: no second booking, audit row or push."""
    from dispatch.bookings.creation import BookingRequest, create_booking
    from dispatch.models import IdempotencyKey, OutboxEvent

    with committed_sessions.begin() as s:
        rider_id = make.rider(s).id
    request = BookingRequest(make.LISBON, make.offset(make.LISBON, north_km=3))

    def book(session):
        return create_booking(
            session,
            rider_id,
            request,
            now=now,
            deadline_s=300,
            first_retry_s=5,
            idempotency_key="twice",
        )

    with Session(engine) as first:
        created, new = book(first)  # holds the key's claim until it commits
        assert new
        second = _second(engine, created.id, book)
        first.commit()
    replayed, second_new = second.result(timeout=10)
    assert (replayed.id, second_new) == (created.id, False)
    with committed_sessions() as s:
        assert s.scalars(select(Booking.id).where(Booking.user_id == rider_id)).all() == [
            created.id
        ]
        # One audit row, and one push each to the admins and the rider.
        for table, rows in ((BookingEvent, 1), (OutboxEvent, 2)):
            written = select(func.count()).where(table.booking_id == created.id)
            assert s.scalar(written) == rows, table.__tablename__
        assert s.get(IdempotencyKey, (rider_id, "twice")).booking_id == created.id
