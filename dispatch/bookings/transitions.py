"""Booking status changes, each under the booking's row lock and the state machine.

Every status change locks the booking row, checks the transition against
``dispatch.states``, bumps ``version`` and writes an audit event
(``dispatch.bookings.events``), all in the caller's transaction. Most lock it with
``SELECT … FOR UPDATE`` and then decide; a driver's accept, arrive, start and complete are
one compare-and-set ``UPDATE … WHERE status IN …``, the busiest writes of all. Either way,
under READ COMMITTED a second writer waits for the lock and then sees the new status, so
a stale action is refused rather than applied twice.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Row, Select, Update, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from dispatch import tokens
from dispatch.actors import Actor
from dispatch.bookings.events import Change, record_event, record_events
from dispatch.bookings.payloads import BookingSnapshot, pickup_time, snapshot
from dispatch.db import expire_loaded, transaction_now
from dispatch.errors import DispatchError, InvalidTransition, NotFound, NotOfferedToYou
from dispatch.models import Booking, Decline, Driver
from dispatch.quotes import booking_fee, final_fare, settle_fare
from dispatch.states import TRANSITIONS, DriverStatus, Role, Status, next_status

NO_DRIVER_FOUND = "no driver found before the deadline"


@dataclass(frozen=True)
class RidePolicy:
    """The waits a ride's later steps go by, from the settings (these are their defaults).

    ``no_show_wait_s``: how long a driver waits at the pickup, counted from their arrival
    or the requested pickup time, whichever is later, before they may report a no-show.
    ``rematch_deadline_s``: how long a booking handed back to matching (a driver's cancel,
    a stuck ride) has to find another driver, at least, before it expires.
    ``cancel_grace_s``: how long after assignment a rider's cancel costs nothing.
    """

    no_show_wait_s: int = 300
    rematch_deadline_s: int = 300
    # How long after a driver is assigned the rider may still cancel without a fee.
    cancel_grace_s: int = 120


class NoShowTooEarly(InvalidTransition):
    """A driver reported a no-show before the wait at the pickup was over."""

    code = "no_show_too_early"

    def __init__(self, allowed_at: dt.datetime, *, current_status: str, version: int) -> None:
        super().__init__(
            f"a no-show may be reported from {allowed_at.isoformat()}",
            current_status=current_status,
            version=version,
        )
        self.details["allowed_at"] = allowed_at.isoformat()


class ReasonRequired(DispatchError):
    """An admin's or a driver's cancel, or a force-complete, came without a reason."""

    code = "reason_required"


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


def _held_by(driver_id: int, token_id: int | None) -> list[ColumnElement[bool]]:
    """The conditions on a booking a driver acts on: theirs, and, given the token they act
    with, while that token is live (its row held until commit; ``driver_action``)."""
    held = [Booking.driver_id == driver_id]
    if token_id is not None:
        held.append(tokens.held_live(token_id))
    return held


def _refusal(
    session: Session,
    booking_id: int,
    driver_id: int,
    action: str,
    now: dt.datetime,
    token_id: int | None = None,
) -> DispatchError:
    """Why ``action`` cannot be done, read from the token (if given) and the booking's row
    as they are now."""
    if token_id is not None and not tokens.hold_live(session, token_id):
        return tokens.TokenNotLive("the token has expired or been revoked")
    current = session.get(Booking, booking_id, populate_existing=True)
    return _cannot(action, _offered_to(session, current, booking_id, driver_id, action, now))


def driver_action(
    session: Session,
    booking_id: int,
    driver_id: int,
    action: str,
    *,
    now: dt.datetime,
    reason: str | None = None,
    policy: RidePolicy = RidePolicy(),
    clock: dt.datetime | None = None,
    token_id: int | None = None,
) -> BookingSnapshot:
    """accept, decline, arrive, start, complete, no_show or cancel, by the booking's driver;
    returns the booking as it now is.

    A cancel needs ``reason``. A no-show is judged by the database's clock, or by ``clock``
    when given (tests play time forward with it).

    With ``token_id`` (the relay's actions, made on a connection authenticated long ago), the
    action is done only while that token is live, its row held against revocation until the
    caller commits; ``TokenNotLive`` if it is not. It is asked in the statement that locks or
    moves the booking, not in one of its own: a round trip fewer."""
    actor = Actor(driver_id, Role.DRIVER)
    if action == "cancel":
        return snapshot(
            _driver_cancel(session, booking_id, actor, reason, now, policy, token_id=token_id)
        )
    if action in ("decline", "no_show"):
        booking = lock_booking(session, booking_id, *_held_by(driver_id, token_id))
        if booking is None:
            # Not this driver's (or gone): say why from the row as it is, without its lock.
            raise _refusal(session, booking_id, driver_id, action, now, token_id)
        if action == "decline":
            return_to_pending(session, booking, "decline", now=now, actor=actor)
        else:
            _no_show(session, booking, actor, now, policy, clock or transaction_now(session))
        return snapshot(booking)
    moved = _move_if_holder(session, booking_id, driver_id, action, now, token_id)
    if moved is None:
        # Nothing moved: say why, from the token and the row as they are now.
        raise _refusal(session, booking_id, driver_id, action, now, token_id)
    booking_now = snapshot(moved)
    if action == "complete":
        booking_now = settle_fare(session, booking_now)
    record_event(session, booking_now, _left(action, booking_now).value, actor, action)
    if action == "complete":
        # Released by the move itself (``_move_statement``).
        expire_loaded(session, Driver, driver_id)
    return booking_now


def _no_show(
    session: Session,
    booking: Booking,
    actor: Actor,
    now: dt.datetime,
    policy: RidePolicy,
    decided_at: dt.datetime,
) -> None:
    """The rider never came: a final status once the wait at the pickup is over."""
    if next_status("no_show", booking.status) is None:
        raise _cannot("no_show", booking)
    assert booking.arrived_at is not None, "an arrived booking has its arrival time"
    waited_from = max(booking.arrived_at, pickup_time(booking))
    allowed_at = waited_from + dt.timedelta(seconds=policy.no_show_wait_s)
    if decided_at < allowed_at:
        raise NoShowTooEarly(allowed_at, current_status=booking.status, version=booking.version)
    booking.cancellation_fee = _fee(session, booking, "no_show")
    apply_transition(session, booking, "no_show", now=now, actor=actor)
    assert booking.driver_id is not None
    release_driver(session, booking.driver_id, now)


def _driver_cancel(
    session: Session,
    booking_id: int,
    actor: Actor,
    reason: str | None,
    now: dt.datetime,
    policy: RidePolicy,
    *,
    token_id: int | None,
) -> Booking:
    """The driver gives a ride back before pickup: it goes back to matching, never to them
    again, and their cancellation is counted."""
    assert actor.id is not None
    if not reason:
        raise ReasonRequired("a driver's cancel needs a reason")
    booking = lock_booking(session, booking_id, *_held_by(actor.id, token_id))
    if booking is None:
        raise _refusal(session, booking_id, actor.id, "cancel", now, token_id)
    if next_status("driver_cancel", booking.status) is None:
        raise _cannot("cancel", booking)
    hand_back(
        session,
        booking,
        "driver_cancel",
        now=now,
        actor=actor,
        reason=reason,
        never_again="cancelled",
        deadline_s=policy.rematch_deadline_s,
    )
    release_driver(session, actor.id, now)
    return booking


def driver_cancellations(session: Session, driver_id: int) -> int:
    """How many rides a driver accepted and then cancelled before pickup: each is the
    booking's never-again row with the reason "cancelled", one per booking and driver."""
    return (
        session.scalar(
            select(func.count()).where(
                Decline.driver_id == driver_id, Decline.reason == "cancelled"
            )
        )
        or 0
    )


def hand_back(
    session: Session,
    booking: Booking,
    action: str,
    *,
    now: dt.datetime,
    actor: Actor,
    reason: str,
    never_again: str,
    deadline_s: int,
) -> int:
    """A booking taken from its driver before pickup goes back to matching (``action``:
    the driver's cancel, or beat's rematch); that driver is never offered it again, and it
    has at least ``deadline_s`` to find another before it expires. Returns the driver's id;
    what becomes of the driver is the caller's to say."""
    driver_id = booking.driver_id
    assert driver_id is not None, "a booking before pickup has a driver"
    apply_transition(session, booking, action, now=now, actor=actor, reason=reason)
    session.execute(
        pg_insert(Decline)
        .values(booking_id=booking.id, driver_id=driver_id, reason=never_again)
        .on_conflict_do_nothing()
    )
    booking.driver_id = None
    booking.accepted_at = None
    booking.arrived_at = None
    booking.next_attempt_at = now
    booking.expires_at = max(booking.expires_at, now + dt.timedelta(seconds=deadline_s))
    session.flush()
    return driver_id


def _move_if_holder(
    session: Session,
    booking_id: int,
    driver_id: int,
    action: str,
    now: dt.datetime,
    token_id: int | None,
) -> Row[Any] | None:
    """One compare-and-set UPDATE: the booking moves along ``action`` only if this driver
    holds it in the status the action starts from (and, to accept, before the offer
    lapses), and, given ``token_id``, while that token is live. A concurrent writer's lock
    is waited for and its result re-checked, as a ``SELECT … FOR UPDATE`` would; the row
    stays locked until the caller's commit.

    Core, not the ORM: the booking is only read back to answer and announce it."""
    moved = (
        session.connection()
        .execute(
            _move_statement(action, guarded=token_id is not None),
            {
                "moved_id": booking_id,
                "holder_id": driver_id,
                "moved_at": now,
                "token_id": token_id,
                # For a completed ride's ``_RELEASE_DRIVER``.
                "released_id": driver_id,
                "released_at": now,
            },
        )
        .first()
    )
    expire_loaded(session, Booking, booking_id)
    return moved


@functools.cache
def _move_statement(action: str, *, guarded: bool) -> Update | Select[Any]:
    """Built once per action (and with or without the token's guard), like
    ``_RELEASE_DRIVER``."""
    bookings = Booking.__table__.c
    sources, target = TRANSITIONS[action]
    conditions = [
        bookings.id == bindparam("moved_id"),
        bookings.driver_id == bindparam("holder_id"),
        bookings.status.in_(sorted(s.value for s in sources)),
    ]
    if guarded:
        conditions.append(tokens.held_live(bindparam("token_id")))
    if action == "accept":
        # The window closes by the database's clock, the one the lapse sweep goes by, not by
        # the clock of whichever API or relay process took the driver's answer.
        conditions.append(
            bookings.offer_expires_at.is_(None) | (bookings.offer_expires_at > func.now())
        )
    # When the driver accepted, reached the pickup and set off.
    stamped = {"accept": "accepted_at", "arrive": "arrived_at", "start": "started_at"}
    stamp: dict[str, Any] = {stamped[action]: bindparam("moved_at")} if action in stamped else {}
    move = (
        update(Booking)
        .where(*conditions)
        .values(
            status=target.value,
            version=bookings.version + 1,
            updated_at=bindparam("moved_at"),
            offer_expires_at=None,
            **stamp,
        )
        .returning(*Booking.__table__.c)
    )
    if target != Status.COMPLETED:
        return move
    # A completed ride frees its driver in the same statement (``release_driver``'s UPDATE,
    # done only if the booking moved): one round trip, not two.
    moved = move.cte("moved")
    released = _RELEASE_DRIVER.where(select(moved.c.id).exists()).cte("released")
    return select(moved).add_cte(released)


def _left(action: str, moved: BookingSnapshot) -> Status:
    """The status a compare-and-set move left. Only start has two: a booking that went
    through arrived has its arrival time (cleared whenever it goes back to matching)."""
    if action == "start":
        return Status.ARRIVED if moved.arrived_at is not None else Status.ACCEPTED
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
        f"cannot {action.replace('_', '-')} a booking that is {booking.status}",
        current_status=booking.status,
        version=booking.version,
    )


def cancellation_fee(
    session: Session, booking: Booking, actor: Actor, policy: RidePolicy
) -> int | None:
    """The fee a cancel of ``booking`` by ``actor`` carries, in the currency's minor units,
    or None for none: the tariff's cancellation fee when its rider cancels once a driver
    has held the booking longer than the grace period (by PostgreSQL's clock); nothing for
    a driver's, an admin's or the system's cancel, or before a driver was assigned."""
    if actor.role != Role.RIDER or booking.assigned_at is None:
        return None
    if booking.status not in (Status.ASSIGNED, Status.ACCEPTED, Status.ARRIVED):
        return None
    grace_ends = booking.assigned_at + dt.timedelta(seconds=policy.cancel_grace_s)
    if transaction_now(session) < grace_ends:
        return None
    return _fee(session, booking, "cancellation")


def _fee(
    session: Session, booking: Booking, kind: Literal["cancellation", "no_show"]
) -> int | None:
    """The fee of ``kind`` under the terms the booking was priced on (none if unpriced)."""
    fee = booking_fee(session, booking.id, kind)
    return None if fee is None else fee.amount


def cancel_booking(
    session: Session,
    booking_id: int,
    actor: Actor,
    *,
    now: dt.datetime,
    reason: str | None = None,
    policy: RidePolicy = RidePolicy(),
) -> Booking:
    """Cancel a booking, by its rider (before pickup, a reason optional), its driver (before
    pickup, with a reason: the booking goes back to matching), an admin (any open booking,
    with a reason) or the system (beat, for a ride never started)."""
    if actor.role == Role.DRIVER:
        return _driver_cancel(session, booking_id, actor, reason, now, policy, token_id=None)
    if actor.is_admin and not reason:
        raise ReasonRequired("an admin's cancel needs a reason")
    # A rider's lock asks for their own booking only (lock_booking): another rider's attempt
    # neither waits on the row nor learns more than that there is no such booking for them.
    owned = (Booking.user_id == actor.id,) if actor.role == Role.RIDER else ()
    booking = lock_booking(session, booking_id, *owned)
    if booking is None:
        raise NotFound("no such booking", booking_id=booking_id)
    fee = cancellation_fee(session, booking, actor, policy)
    end_booking(
        session,
        booking,
        "force_cancel" if actor.is_admin else "cancel",
        actor,
        now,
        reason,
        fee=fee,
    )
    return booking


def force_complete(
    session: Session, booking_id: int, actor: Actor, *, now: dt.datetime, reason: str | None
) -> Booking:
    """An admin closes a ride under way that its driver cannot (a phone gone dead)."""
    if not reason:
        raise ReasonRequired("a force-complete needs a reason")
    booking = lock_booking(session, booking_id)
    if booking is None:
        raise NotFound("no such booking", booking_id=booking_id)
    if next_status("force_complete", booking.status) is None:
        raise _cannot("complete", booking)
    # Priced like a completion by its driver (the trip as measured, against the quote), in
    # the same write as the move, so the booking its rider and the admins are pushed
    # carries the fare.
    settled = final_fare(session, snapshot(booking))
    if settled is not None:
        booking.final_fare, booking.fare = settled
    end_booking(session, booking, "force_complete", actor, now, reason)
    return booking


def end_booking(
    session: Session,
    booking: Booking,
    action: str,
    actor: Actor,
    now: dt.datetime,
    reason: str | None,
    *,
    driver_goes: DriverStatus = DriverStatus.AVAILABLE,
    fee: int | None = None,
) -> None:
    """Move a locked booking to a final status along ``action`` (a cancel, a force-complete)
    and free its driver, if it had one, as ``driver_goes``."""
    if next_status(action, booking.status) is None:
        raise _cannot(action.removeprefix("force_"), booking)
    if TRANSITIONS[action][1] == Status.CANCELLED:
        booking.cancelled_by = actor.role.value if actor.role is not None else "system"
        booking.cancel_reason = reason
        booking.cancellation_fee = fee
    driver_id = booking.driver_id
    apply_transition(session, booking, action, now=now, actor=actor, reason=reason)
    if driver_id is None:
        return
    if driver_goes == DriverStatus.OFFLINE:
        take_offline(session, driver_id, now)
    else:
        release_driver(session, driver_id, now)


def take_offline(session: Session, driver_id: int, now: dt.datetime) -> None:
    """A busy driver whose ride was taken from them goes offline rather than available: a
    driver who never started a ride they held is not offered the next one."""
    session.execute(
        update(Driver)
        .where(Driver.user_id == driver_id, Driver.status == DriverStatus.BUSY.value)
        .values(status=DriverStatus.OFFLINE.value, available_since=None, updated_at=now)
    )
    expire_loaded(session, Driver, driver_id)
