"""Bookings: creating them, reading them, and moving them through the state machine.

Every status change locks the booking row, checks the transition against
``dispatch.states``, bumps ``version`` and writes an audit event, all in the caller's
transaction. Most lock it with ``SELECT … FOR UPDATE`` and then decide; a driver's
accept, start and complete are one compare-and-set ``UPDATE … WHERE status = …``, the
busiest writes of all. Either way, under READ COMMITTED a second writer waits for the
lock and then sees the new status, so a stale action is refused rather than applied twice.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from dataclasses import asdict, dataclass

from sqlalchemy import Row, Update, bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from dispatch.db import expire_loaded, transaction_now
from dispatch.errors import (
    IdempotencyConflict,
    InvalidTransition,
    NotFound,
    NotOfferedToYou,
)
from dispatch.models import Booking, Decline, Driver, IdempotencyKey
from dispatch.outbox import pushes
from dispatch.regions import DEFAULT_REGION
from dispatch.states import TRANSITIONS, DriverStatus, Role, Status, next_status


@dataclass(frozen=True)
class Point:
    lat: float
    lng: float


@dataclass(frozen=True)
class BookingRequest:
    """What a rider asks for; ``pickup_at`` None means as soon as possible."""

    pickup: Point
    dropoff: Point
    pickup_at: dt.datetime | None = None

    def fingerprint(self) -> str:
        """A stable hash of the request, to tell a retry from a different request."""
        body = json.dumps(asdict(self), sort_keys=True, default=lambda v: v.isoformat())
        return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user id and role (the system acts with id None)."""

    id: int | None
    role: Role | None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


SYSTEM = Actor(id=None, role=None)
NO_DRIVER_FOUND = "no driver found before the deadline"


def pickup_time(booking: Booking) -> dt.datetime:
    """The requested pickup as an aware UTC datetime."""
    return dt.datetime.combine(booking.date, booking.time, tzinfo=dt.UTC)


def booking_payload(booking: Booking) -> dict:
    """The booking as riders, drivers and admins see it (also the push payload)."""
    return {
        "id": booking.id,
        "status": booking.status,
        "rider_id": booking.user_id,
        "driver_id": booking.driver_id,
        "pickup": {"lat": booking.pickup_lat, "lng": booking.pickup_lng},
        "dropoff": {"lat": booking.dropoff_lat, "lng": booking.dropoff_lng},
        "pickup_at": pickup_time(booking).isoformat(),
        "version": booking.version,
        "region": booking.region,
        "offer_expires_at": _iso(booking.offer_expires_at),
        "expires_at": _iso(booking.expires_at),
        "assigned_at": _iso(booking.assigned_at),
        "created_at": _iso(booking.created_at),
        "updated_at": _iso(booking.updated_at),
    }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# The audit rows and the outbox's pushes of a set of changes, in one statement: this runs in
# every transition (and once for a whole batch of offers), where a round trip costs more
# than either INSERT.
_RECORD_EVENTS = text("""
    WITH pushed AS (
        INSERT INTO outbox_events (room, event, booking_id, payload)
        SELECT room, event, booking_id, CAST(payload AS jsonb)
        FROM unnest(CAST(:rooms AS varchar[]), CAST(:events AS varchar[]),
                    CAST(:pushed_ids AS bigint[]), CAST(:payloads AS text[]))
            AS p(room, event, booking_id, payload)
    )
    INSERT INTO booking_events
        (booking_id, from_status, to_status, driver_id, actor_id, reason, version)
    SELECT * FROM unnest(CAST(:booking_ids AS bigint[]), CAST(:from_statuses AS varchar[]),
                         CAST(:to_statuses AS varchar[]), CAST(:driver_ids AS bigint[]),
                         CAST(:actor_ids AS bigint[]), CAST(:reasons AS text[]),
                         CAST(:versions AS integer[]))
""")


@dataclass(frozen=True)
class Change:
    """One booking's move, for its audit row and its pushes."""

    booking: Booking | Row
    from_status: str | None
    actor: Actor
    reason: str


def record_event(
    session: Session, booking: Booking, from_status: str | None, actor: Actor, reason: str
) -> None:
    """Append the booking's current status to its audit trail, and queue its pushes."""
    record_events(session, [Change(booking, from_status, actor, reason)])


def record_events(session: Session, changes: list[Change]) -> None:
    """``record_event`` for many bookings at once, in one statement."""
    if not changes:
        return
    session.flush()
    pushed = [(room, event, c.booking.id, json.dumps(booking_payload(c.booking)))
              for c in changes for room, event in pushes(c.booking)]
    rooms, events, pushed_ids, payloads = (list(column) for column in zip(*pushed, strict=True))
    session.connection().execute(_RECORD_EVENTS, {
        "rooms": rooms, "events": events, "pushed_ids": pushed_ids, "payloads": payloads,
        "booking_ids": [c.booking.id for c in changes],
        "from_statuses": [c.from_status for c in changes],
        "to_statuses": [c.booking.status for c in changes],
        "driver_ids": [c.booking.driver_id for c in changes],
        "actor_ids": [c.actor.id for c in changes],
        "reasons": [c.reason for c in changes],
        "versions": [c.booking.version for c in changes],
    })


def create_booking(
    session: Session,
    rider_id: int,
    request: BookingRequest,
    *,
    now: dt.datetime,
    deadline_s: int,
    first_retry_s: int,
    idempotency_key: str | None = None,
    region: str = DEFAULT_REGION,
) -> tuple[Booking | Row, bool]:
    """Create a pending booking; returns it and whether it is new (False: an idempotent
    replay). A new booking comes back as its row, with the model's attribute names."""
    fingerprint = request.fingerprint()
    if idempotency_key is not None:
        existing = _replay(session, rider_id, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False

    pickup_at = request.pickup_at or now
    start = max(now, pickup_at)
    values = {
        "user_id": rider_id,
        "pickup_lat": request.pickup.lat,
        "pickup_lng": request.pickup.lng,
        "dropoff_lat": request.dropoff.lat,
        "dropoff_lng": request.dropoff.lng,
        "date": pickup_at.astimezone(dt.UTC).date(),
        "time": pickup_at.astimezone(dt.UTC).time(),
        "status": Status.PENDING.value,
        "version": 1,
        "region": region,
        # The caller enqueues the first attempt right after commit; the sweeper's retry is
        # the safety net for a message the broker lost, so it waits a little.
        "next_attempt_at": now + dt.timedelta(seconds=first_retry_s),
        "expires_at": start + dt.timedelta(seconds=deadline_s),
        "created_at": now,
        "updated_at": now,
    }
    if idempotency_key is None:
        return _insert_booking(session, values), True
    try:
        with session.begin_nested():
            booking = _insert_booking(session, values)
            claimed = session.execute(
                pg_insert(IdempotencyKey)
                .values(
                    user_id=rider_id,
                    key=idempotency_key,
                    request_hash=fingerprint,
                    booking_id=booking.id,
                )
                .on_conflict_do_nothing()
                .returning(IdempotencyKey.key)
            ).first()
            if claimed is None:
                raise _KeyTaken
    except _KeyTaken:
        # A concurrent request with the same key committed first (ON CONFLICT waited for
        # it); ours is rolled back to the savepoint and theirs is the answer.
        existing = _replay(session, rider_id, idempotency_key, fingerprint)
        assert existing is not None, "a conflicting idempotency key must be readable"
        return existing, False
    return booking, True


def _insert_booking(session: Session, values: dict) -> Row:
    # Core, built once: the row is only read back to answer, announce and enqueue it.
    booking = session.connection().execute(_INSERT_BOOKING, values).one()
    record_event(session, booking, None, Actor(values["user_id"], Role.RIDER), "booked")
    return booking


_INSERT_BOOKING = insert(Booking.__table__).returning(*Booking.__table__.c)


class _KeyTaken(Exception):
    pass


def _replay(session: Session, rider_id: int, key: str, fingerprint: str) -> Booking | None:
    row = session.execute(
        select(IdempotencyKey).where(IdempotencyKey.user_id == rider_id, IdempotencyKey.key == key)
    ).scalar_one_or_none()
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise IdempotencyConflict(
            "this Idempotency-Key was used with a different request body", key=key
        )
    return session.get(Booking, row.booking_id)


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


def lock_booking(session: Session, booking_id: int, *conditions) -> Booking | None:
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
        select(Booking).where(Booking.id == booking_id, *conditions).with_for_update()
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


def apply_transitions(session: Session, bookings: list[Booking], action: str, *,
                      now: dt.datetime, actor: Actor) -> None:
    """``apply_transition`` for many locked bookings at once: one flush, one record."""
    changes = [Change(booking, _move(booking, action, now), actor, action)
               for booking in bookings]
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
    update(Driver.__table__)
    .where(_drivers.user_id == bindparam("released_id"),
           _drivers.status == DriverStatus.BUSY.value)
    .values(status=DriverStatus.AVAILABLE.value, available_since=bindparam("released_at"),
            updated_at=bindparam("released_at"))
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


def driver_action(
    session: Session, booking_id: int, driver_id: int, action: str, *, now: dt.datetime
) -> Booking | Row:
    """accept, decline, start or complete, by the booking's driver; returns the booking as
    it now is (accept, start and complete: its row, with the model's attribute names)."""
    actor = Actor(driver_id, Role.DRIVER)
    if action == "decline":
        booking = lock_booking(session, booking_id, Booking.driver_id == driver_id)
        if booking is None:
            # Not this driver's (or gone): say why from the row as it is, without its lock.
            current = _offered_to(session, session.get(Booking, booking_id,
                                                       populate_existing=True),
                                  booking_id, driver_id, action, now)
            raise _cannot(action, current)
        return_to_pending(session, booking, "decline", now=now, actor=actor)
        return booking
    booking = _move_if_holder(session, booking_id, driver_id, action, now)
    if booking is None:
        # Nothing moved: say why, from the row as it is now.
        current = _offered_to(session, session.get(Booking, booking_id, populate_existing=True),
                              booking_id, driver_id, action, now)
        raise _cannot(action, current)
    record_event(session, booking, _source(action).value, actor, action)
    if action == "complete":
        release_driver(session, driver_id, now)
    return booking


def _move_if_holder(session: Session, booking_id: int, driver_id: int, action: str,
                    now: dt.datetime) -> Row | None:
    """One compare-and-set UPDATE: the booking moves along ``action`` only if this driver
    holds it in the status the action starts from (and, to accept, before the offer
    lapses). A concurrent writer's lock is waited for and its result re-checked, as a
    ``SELECT … FOR UPDATE`` would; the row stays locked until the caller's commit.

    Core, not the ORM: the booking is only read back to answer and announce it."""
    moved = session.connection().execute(_move_statement(action), {
        "moved_id": booking_id, "holder_id": driver_id, "moved_at": now,
    }).first()
    expire_loaded(session, Booking, booking_id)
    return moved


@functools.cache
def _move_statement(action: str) -> Update:
    """Built once per action, like ``_RELEASE_DRIVER``."""
    bookings = Booking.__table__.c
    conditions = [bookings.id == bindparam("moved_id"),
                  bookings.driver_id == bindparam("holder_id"),
                  bookings.status == _source(action).value]
    if action == "accept":
        # The window closes by the database's clock, the one the lapse sweep goes by, not by
        # the clock of whichever API or relay process took the driver's answer.
        conditions.append(bookings.offer_expires_at.is_(None)
                          | (bookings.offer_expires_at > func.now()))
    return (
        update(Booking.__table__).where(*conditions)
        .values(status=TRANSITIONS[action][1].value, version=bookings.version + 1,
                updated_at=bindparam("moved_at"), offer_expires_at=None)
        .returning(*Booking.__table__.c)
    )


def _source(action: str) -> Status:
    """The one status accept, start and complete each start from."""
    (source,) = TRANSITIONS[action][0]
    return source


def _offered_to(session: Session, booking: Booking | None, booking_id: int, driver_id: int,
                action: str, now: dt.datetime) -> Booking:
    """The booking, if ``driver_id`` holds it and may still ``action`` it; raises if not."""
    if booking is None:
        raise NotFound("no such booking", booking_id=booking_id)
    if booking.driver_id != driver_id:
        raise NotOfferedToYou(
            "this booking is not offered to you",
            current_status=booking.status,
            version=booking.version,
        )
    if (action == "accept" and booking.offer_expires_at
            and booking.offer_expires_at <= transaction_now(session)):
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
