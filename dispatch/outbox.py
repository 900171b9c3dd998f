"""The outbox: every push a status change causes, written in that change's transaction.

Socket.IO delivers at most once, so the row, not the emit, is the promise. A publisher
gives committed unsent rows a ``position`` (the order of publication), commits that, then
sends them in position order and marks them sent; a client that was away asks for
everything after the last ``event_id`` (a position) it saw.

Ids cannot serve as that order: an id is taken at INSERT, and transactions commit in any
order, so id 100 may commit after id 101 has been sent. A position is handed out only to
rows already committed, under the publisher lock, so each one is larger than every
position sent before it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, delete, func, select, text, update
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from dispatch.bookings.payloads import BookingFields

from dispatch.models import OutboxEvent
from dispatch.states import Status

ADMIN_ROOM = "admin_dashboard"
NEW_ASSIGNMENT = "new_assignment"
BOOKING_UPDATED = "booking_updated"
# One publisher at a time hands out positions and delivers in their order (a
# transaction-scoped lock).
PUBLISHER_LOCK = 0x5352_4F55  # "SROU"


def driver_room(driver_id: int) -> str:
    return f"driver_{driver_id}"


def rider_room(rider_id: int) -> str:
    return f"rider_{rider_id}"


def pushes(booking: BookingFields) -> list[tuple[str, str]]:
    """The rooms and events the booking's current status goes to: admins and its rider
    always; its driver when it has just been offered to them, and when it was cancelled
    while they held it (by its rider, an admin or beat), so their console lets it go.

    A driver hears of no other change: they made it themselves, and each push to a room
    costs the relay a send, so the driver's room gets only what no action of theirs shows.
    """
    rows = [(ADMIN_ROOM, BOOKING_UPDATED), (rider_room(booking.user_id), BOOKING_UPDATED)]
    if booking.driver_id is None:
        return rows
    if booking.status == Status.ASSIGNED:
        rows.append((driver_room(booking.driver_id), NEW_ASSIGNMENT))
    elif booking.status == Status.CANCELLED:
        # A cancelled booking keeps the driver who held it: that is who must hear of it.
        rows.append((driver_room(booking.driver_id), BOOKING_UPDATED))
    return rows


def try_lock(session: Session) -> bool:
    """Take the publisher lock for this transaction, or return False at once if another
    publisher holds it (it is never waited for: a waiting publisher would hold a worker)."""
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(PUBLISHER_LOCK))))


def assign_positions(session: Session, limit: int = 500) -> int:
    """Give the oldest committed unsent rows without one the next positions, in id order;
    how many. The caller holds the publisher lock and commits before delivering them."""
    return len(session.execute(_ASSIGN_POSITIONS, {"limit": limit}).all())


# One statement: the oldest unpositioned rows, as many new positions, paired by rank. The
# sequence hands out values in any order within a statement; ranking both sides makes the
# id order the position order without relying on how the statement is executed.
_ASSIGN_POSITIONS = text("""
    WITH waiting AS (
        SELECT id, row_number() OVER (ORDER BY id) AS rank
        FROM (SELECT id FROM outbox_events
              WHERE sent_at IS NULL AND position IS NULL
              ORDER BY id LIMIT :limit) AS oldest
    ), taken AS (
        SELECT position, row_number() OVER (ORDER BY position) AS rank
        FROM (SELECT nextval('outbox_event_positions') AS position FROM waiting) AS drawn
    )
    UPDATE outbox_events o SET position = taken.position
    FROM waiting JOIN taken USING (rank)
    WHERE o.id = waiting.id
    RETURNING o.id
""")


def any_positioned(session: Session) -> bool:
    """Whether any unsent row has a position (a delivery failed after positions committed)."""
    return bool(
        session.scalar(
            select(
                select(OutboxEvent.id)
                .where(OutboxEvent.sent_at.is_(None), OutboxEvent.position.is_not(None))
                .exists()
            )
        )
    )


@dataclass(frozen=True, slots=True)
class Positioned:
    """An unsent event that has its position, as the publisher delivers it. ``message`` is
    the JSON a client receives: the booking as of the change, and its ``event_id`` (the
    position: the order clients see events in and name on reconnect). It is written by
    PostgreSQL from the stored JSON, so the publisher never decodes a payload to encode it
    again."""

    id: int
    position: int
    room: str
    event: str
    message: str
    created_at: dt.datetime


def claim_positioned(session: Session, limit: int = 500) -> list[Positioned]:
    """The unsent rows that have a position, in position order, for the lock holder.

    Read by walking their index in order. Each row leaves that index dead (marked sent) a
    moment after it enters, and until vacuum the index still points at those versions. An
    ordered index scan marks the dead entries it passes, so the next scan skips them; a
    bitmap scan, which the planner prefers when it expects the whole (small) queue to be
    read, visits every dead version on the heap on every read and marks nothing. Bitmap
    scans are off for the rest of this transaction, whose other statements go by id.
    """
    session.execute(text("SET LOCAL enable_bitmapscan = off"))
    return [Positioned(*row) for row in session.execute(_CLAIM_POSITIONED, {"limit": limit})]


# The WHERE clause is the partial index's own predicate (models.OutboxEvent), so the index
# serves it in position order.
_CLAIM_POSITIONED = text("""
    SELECT id, position, room, event,
           CAST(payload || jsonb_build_object('event_id', position) AS text),
           created_at
    FROM outbox_events
    WHERE sent_at IS NULL AND position IS NOT NULL
    ORDER BY position
    LIMIT :limit
""")


def mark_sent(session: Session, ids: list[int], now: dt.datetime) -> None:
    session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id.in_(ids))
        .values(sent_at=now)
        .execution_options(synchronize_session=False)
    )


def oldest_unsent_age_s(session: Session, now: dt.datetime) -> float:
    """How long the oldest undelivered push has waited (0 when none waits)."""
    # One read per queue, so each uses its own index (models.OutboxEvent).
    oldest = session.scalar(
        select(
            func.least(
                select(func.min(OutboxEvent.created_at))
                .where(OutboxEvent.sent_at.is_(None), OutboxEvent.position.is_(None))
                .scalar_subquery(),
                select(func.min(OutboxEvent.created_at))
                .where(OutboxEvent.sent_at.is_(None), OutboxEvent.position.is_not(None))
                .scalar_subquery(),
            )
        )
    )
    return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())


def prune(session: Session, *, sent_before: dt.datetime) -> int:
    """Delete events delivered before ``sent_before``; returns how many."""
    return cast(
        "CursorResult[Any]",
        session.execute(
            delete(OutboxEvent)
            .where(OutboxEvent.sent_at < sent_before)
            .execution_options(synchronize_session=False)
        ),
    ).rowcount
