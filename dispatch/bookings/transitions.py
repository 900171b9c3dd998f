"""Booking status changes, each under the booking's row lock and the state machine.

Every status change locks the booking row, checks the transition against
``dispatch.states``, bumps ``version`` and writes an audit event
(``dispatch.bookings.events``), all in the caller's transaction. Most lock it with
``SELECT … FOR UPDATE`` and then decide; a driver's accept, start and complete are one
compare-and-set ``UPDATE … WHERE status = …``, the busiest writes of all. Either way,
under READ COMMITTED a second writer waits for the lock and then sees the new status, so
a stale action is refused rather than applied twice.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from sqlalchemy import ColumnElement, Row, Update, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from dispatch.actors import Actor
from dispatch.bookings.events import Change, record_event, record_events
from dispatch.bookings.payloads import BookingSnapshot, snapshot
from dispatch.db import expire_loaded, transaction_now
from dispatch.errors import InvalidTransition, NotFound, NotOfferedToYou
from dispatch.models import Booking, Decline, Driver
from dispatch.quotes import settle_fare
from dispatch.states import TRANSITIONS, DriverStatus, Role, Status, next_status

NO_DRIVER_FOUND = "no driver found before the deadline"


def lock_booking(
    session: Session, booking_id: int, *conditions: ColumnElement[bool]
) -> Booking | None:
    """The booking's latest version, row-locked until the caller's transaction ends; None if
    there is none (or, given ``conditions``, none that meets them).

    Conditions that say whose booking it is belong here, in the locking statement, not in a
    check after it: PostgreSQL then skips a row that is not the caller's without waiting for
    its lock, so nobody can hold up an action on someone else's booking by trying their own.
    (A row that does match is waited for, then checked again as it now is.)
    """
    if not conditions:
        return session.get(Booking, booking_id, with_for_update=True, populate_existing=True)
    return session.execute(
        select(Booking)
        .where(Booking.id == booking_id, *conditions)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def apply_transition(
    session: Session,
    booking: Booking,
    action: str,
    *,
    now: dt.datetime,
    actor: Actor,
    reason: str | None = None,
) -> str:
    """Move a locked booking along ``action``; returns the status it left.

    Raises InvalidTransition when the state machine forbids it.
    """
    previous = _move(booking, action, now)
    record_event(session, booking, previous, actor, reason or action)
    return previous


def apply_transitions(
    session: Session, bookings: list[Booking], action: str, *, now: dt.datetime, actor: Actor
) -> None:
    """``apply_transition`` for many locked bookings at once: one flush, one record."""
    changes = [Change(booking, _move(booking, action, now), actor, action) for booking in bookings]
    record_events(session, changes)


def _move(booking: Booking, action: str, now: dt.datetime) -> str:
    """Move the (locked, loaded) booking along ``action`` in memory; the status it left."""
    target = next_status(action, booking.status)
    if target is None:
        raise _cannot(action, booking)
    previous = booking.status
    booking.status = target.value
    booking.version += 1
    booking.updated_at = now
    if target != Status.ASSIGNED:
        booking.offer_expires_at = None
    return previous


def release_driver(session: Session, driver_id: int, now: dt.datetime) -> None:
    """A driver whose booking ended or was handed back is available again (if still busy)."""
    session.connection().execute(_RELEASE_DRIVER, {"released_id": driver_id, "released_at": now})
    expire_loaded(session, Driver, driver_id)


_drivers = Driver.__table__.c
# Built once: constructing a statement costs more than running it.
_RELEASE_DRIVER = (
    update(Driver)
    .where(_drivers.user_id == bindparam("released_id"), _drivers.status == DriverStatus.BUSY.value)
    .values(
        status=DriverStatus.AVAILABLE.value,
        available_since=bindparam("released_at"),
        updated_at=bindparam("released_at"),
    )
)


def return_to_pending(
    session: Session, booking: Booking, action: str, *, now: dt.datetime, actor: Actor
) -> None:
    """Take an offer back (declined or lapsed): the driver is freed and never offered it again."""
    driver_id = booking.driver_id
    assert driver_id is not None, "an assigned booking has a driver"
    apply_transition(session, booking, action, now=now, actor=actor)
    reason = "declined" if action == "decline" else "timeout"
    session.execute(
        pg_insert(Decline)
        .values(booking_id=booking.id, driver_id=driver_id, reason=reason)
        .on_conflict_do_nothing()
    )
    booking.driver_id = None
    booking.next_attempt_at = now
    session.flush()
    release_driver(session, driver_id, now)


def _refusal(
    session: Session, booking_id: int, driver_id: int, action: str, now: dt.datetime
) -> InvalidTransition:
    """Why ``action`` cannot be done, read from the booking's row as it is now."""
    current = session.get(Booking, booking_id, populate_existing=True)
    return _cannot(action, _offered_to(session, current, booking_id, driver_id, action, now))


def driver_action(
    session: Session, booking_id: int, driver_id: int, action: str, *, now: dt.datetime
) -> BookingSnapshot:
    """accept, decline, start or complete, by the booking's driver; returns the booking as
    it now is."""
    actor = Actor(driver_id, Role.DRIVER)
    if action == "decline":
        booking = lock_booking(session, booking_id, Booking.driver_id == driver_id)
        if booking is None:
            # Not this driver's (or gone): say why from the row as it is, without its lock.
            raise _refusal(session, booking_id, driver_id, action, now)
        return_to_pending(session, booking, "decline", now=now, actor=actor)
        return snapshot(booking)
    moved = _move_if_holder(session, booking_id, driver_id, action, now)
    if moved is None:
        # Nothing moved: say why, from the row as it is now.
        raise _refusal(session, booking_id, driver_id, action, now)
    booking_now = snapshot(moved)
    if action == "complete":
        booking_now = settle_fare(session, booking_now)
    record_event(session, booking_now, _source(action).value, actor, action)
    if action == "complete":
        release_driver(session, driver_id, now)
    return booking_now


def _move_if_holder(
    session: Session, booking_id: int, driver_id: int, action: str, now: dt.datetime
) -> Row[Any] | None:
    """One compare-and-set UPDATE: the booking moves along ``action`` only if this driver
    holds it in the status the action starts from (and, to accept, before the offer
    lapses). A concurrent writer's lock is waited for and its result re-checked, as a
    ``SELECT … FOR UPDATE`` would; the row stays locked until the caller's commit.

    Core, not the ORM: the booking is only read back to answer and announce it."""
    moved = (
        session.connection()
        .execute(
            _move_statement(action),
            {
                "moved_id": booking_id,
                "holder_id": driver_id,
                "moved_at": now,
            },
        )
        .first()
    )
    expire_loaded(session, Booking, booking_id)
    return moved


@functools.cache
def _move_statement(action: str) -> Update:
    """Built once per action, like ``_RELEASE_DRIVER``."""
    bookings = Booking.__table__.c
    conditions = [
        bookings.id == bindparam("moved_id"),
        bookings.driver_id == bindparam("holder_id"),
        bookings.status == _source(action).value,
    ]
    if action == "accept":
        # The window closes by the database's clock, the one the lapse sweep goes by, not by
        # the clock of whichever API or relay process took the driver's answer.
        conditions.append(
            bookings.offer_expires_at.is_(None) | (bookings.offer_expires_at > func.now())
        )
    return (
        update(Booking)
        .where(*conditions)
        .values(
            status=TRANSITIONS[action][1].value,
            version=bookings.version + 1,
            updated_at=bindparam("moved_at"),
            offer_expires_at=None,
        )
        .returning(*Booking.__table__.c)
    )


def _source(action: str) -> Status:
    """The one status accept, start and complete each start from."""
    (source,) = TRANSITIONS[action][0]
    return source


def _offered_to(
    session: Session,
    booking: Booking | None,
    booking_id: int,
    driver_id: int,
    action: str,
    now: dt.datetime,
) -> Booking:
    """The booking, if ``driver_id`` holds it and may still ``action`` it; raises if not."""
    if booking is None:
        raise NotFound("no such booking", booking_id=booking_id)
    if booking.driver_id != driver_id:
        raise NotOfferedToYou(
            "this booking is not offered to you",
            current_status=booking.status,
            version=booking.version,
        )
    if (
        action == "accept"
        and booking.offer_expires_at
        and booking.offer_expires_at <= transaction_now(session)
    ):
        raise InvalidTransition(
            "the offer window has closed", current_status=booking.status, version=booking.version
        )
    return booking


def _cannot(action: str, booking: Booking) -> InvalidTransition:
    return InvalidTransition(
        f"cannot {action} a booking that is {booking.status}",
        current_status=booking.status,
        version=booking.version,
    )


def cancel_booking(session: Session, booking_id: int, actor: Actor, *, now: dt.datetime) -> Booking:
    """Cancel a booking not yet under way, by its rider or an admin."""
    # A rider's lock asks for their own booking only (lock_booking): another rider's attempt
    # neither waits on the row nor learns more than that there is no such booking for them.
    owned = () if actor.is_admin else (Booking.user_id == actor.id,)
    booking = lock_booking(session, booking_id, *owned)
    if booking is None:
        raise NotFound("no such booking", booking_id=booking_id)
    driver_id = booking.driver_id
    apply_transition(session, booking, "cancel", now=now, actor=actor)
    if driver_id is not None:
        release_driver(session, driver_id, now)
    return booking
