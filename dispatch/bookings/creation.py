"""Creating a booking, once per idempotency key.

A rider's client may send the same request twice (a retry after a lost answer); with an
``Idempotency-Key`` the second gets the first's booking back instead of a new one. The
key is claimed by the statement that inserts the booking, which inserts it only if the
claim held, so a concurrent request with the same key finds one booking, never two.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Insert, Row, bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from dispatch.actors import Actor
from dispatch.bookings.events import record_event
from dispatch.bookings.payloads import BookingSnapshot, snapshot
from dispatch.errors import IdempotencyConflict
from dispatch.models import Booking, IdempotencyKey
from dispatch.quotes import Pricing, price_booking
from dispatch.regions import DEFAULT_REGION
from dispatch.states import Role, Status


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
    # The rider's quote that prices it (dispatch.quotes); None: priced when booked.
    quote_id: int | None = None

    def fingerprint(self) -> str:
        """A stable hash of the request, to tell a retry from a different request."""
        fields = asdict(self)
        if fields["quote_id"] is None:
            del fields["quote_id"]  # A request without a quote hashes as it always did.
        body = json.dumps(fields, sort_keys=True, default=lambda v: v.isoformat())
        return hashlib.sha256(body.encode()).hexdigest()


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
    pricing: Pricing | None = None,
) -> tuple[BookingSnapshot, bool]:
    """Create a pending booking; returns it and whether it is new (False: an idempotent
    replay). It is priced by ``dispatch.quotes.price_booking``: on the request's quote, else
    under ``pricing``, else (neither given) not at all."""
    fingerprint = request.fingerprint()
    if idempotency_key is not None:
        existing = _replay(session, rider_id, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False

    pickup_at = request.pickup_at or now
    start = max(now, pickup_at)
    values: dict[str, Any] = {
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
    values.update(
        price_booking(
            session,
            rider_id,
            request.quote_id,
            (request.pickup.lat, request.pickup.lng),
            (request.dropoff.lat, request.dropoff.lng),
            region=region,
            pricing=pricing,
        )
    )
    row: Row[Any] | None
    if idempotency_key is None:
        row = session.connection().execute(_INSERT_BOOKING, values).one()
    else:
        row = (
            session.connection()
            .execute(
                _insert_once(tuple(values)),
                {
                    **{f"new_{name}": value for name, value in values.items()},
                    "key_owner": rider_id,
                    "idempotency_key": idempotency_key,
                    "fingerprint": fingerprint,
                },
            )
            .first()
        )
        if row is None:
            # A concurrent request with the same key committed first (ON CONFLICT waited for
            # it): nothing of ours was written, and theirs is the answer.
            existing = _replay(session, rider_id, idempotency_key, fingerprint)
            assert existing is not None, "a conflicting idempotency key must be readable"
            return existing, False
    booking = snapshot(row)
    record_event(session, booking, None, Actor(rider_id, Role.RIDER), "booked")
    return booking, True


# Core, built once: the row is only read back to answer, announce and enqueue it.
_INSERT_BOOKING = insert(Booking).returning(*Booking.__table__.c)


@functools.cache
def _insert_once(names: tuple[str, ...]) -> Insert:
    """One statement that claims the key and inserts the booking only if the claim held:
    the booking's id is drawn from its sequence first and written with the key (the key's
    foreign key is checked at the end of the statement, once the booking is there).

    Built once for each set of columns a booking is given (priced or not), like
    ``_INSERT_BOOKING``; run with the booking's values as ``new_<column>``, ``key_owner``,
    ``idempotency_key`` and ``fingerprint``. No bound name is a column's: SQLAlchemy would
    read a parameter named after a column of an INSERT as that column's value."""
    claimed = (
        pg_insert(IdempotencyKey)
        .values(
            user_id=bindparam("key_owner"),
            key=bindparam("idempotency_key"),
            request_hash=bindparam("fingerprint"),
            booking_id=func.nextval(func.pg_get_serial_sequence(Booking.__tablename__, "id")),
        )
        .on_conflict_do_nothing()
        .returning(IdempotencyKey.booking_id)
        .cte("claimed")
    )
    columns = Booking.__table__.c
    return (
        insert(Booking)
        .from_select(
            ["id", *names],
            select(
                claimed.c.booking_id,
                *(bindparam(f"new_{name}", type_=columns[name].type) for name in names),
            ),
        )
        .returning(*columns)
    )


# Core, built once: every booking with a key asks, and almost every answer is "none".
_FIND_KEY = select(IdempotencyKey.request_hash, IdempotencyKey.booking_id).where(
    IdempotencyKey.user_id == bindparam("rider_id"), IdempotencyKey.key == bindparam("key")
)


def _replay(session: Session, rider_id: int, key: str, fingerprint: str) -> BookingSnapshot | None:
    row = session.connection().execute(_FIND_KEY, {"rider_id": rider_id, "key": key}).first()
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise IdempotencyConflict(
            "this Idempotency-Key was used with a different request body", key=key
        )
    booking = session.get(Booking, row.booking_id)
    return None if booking is None else snapshot(booking)
