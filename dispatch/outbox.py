"""The outbox: every push a status change causes, written in that change's transaction.

Socket.IO delivers at most once, so the row, not the emit, is the promise. A publisher
gives committed rows a ``position`` (the order of publication), commits that, then sends
them in position order and deletes them: the table holds only what is still to be sent.
A client that was away asks for everything after the last ``event_id`` (a position) it
saw, which the room's replay stream in Redis keeps (smartroute.infra.push).

Ids cannot serve as that order: an id is taken at INSERT, and transactions commit in any
order, so id 100 may commit after id 101 has been sent. A position is handed out only to
rows already committed, under the publisher lock, so each one is larger than every
position sent before it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING

from sqlalchemy import func, select, text
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
    publisher holds it (it is never waited for: a waiting publisher would hold a worker).

    The same statement turns bitmap and sequential scans off for the rest of the
    transaction, every statement of which has an index to go by. Both queues are read in
    their index's order (``assign_positions``, ``take_positioned``), and each row leaves
    its queue's index dead a moment after it enters: an updated row leaves the
    unpositioned one, a delivered (deleted) row the positioned one, and until vacuum the
    index still points at those versions. An ordered index scan marks the dead entries it
    passes, so the next scan skips them. A bitmap or sequential scan, which the planner
    prefers for a table it believes small (and this one is: it holds only what waits),
    visits every dead version on every read and marks nothing.
    """
    return bool(session.execute(_TRY_LOCK, {"lock": PUBLISHER_LOCK}).scalar())


_TRY_LOCK = text("""
    SELECT pg_try_advisory_xact_lock(:lock)
    FROM (SELECT set_config('enable_bitmapscan', 'off', true),
                 set_config('enable_seqscan', 'off', true)) AS planner
""")


def assign_positions(session: Session, limit: int = 500) -> bool:
    """Give the oldest committed rows without one the next positions, in id order; and
    whether any row has one now, that is, whether there is anything to deliver (a row
    positioned earlier is one whose delivery failed after its position committed). The
    caller holds the publisher lock and commits before delivering them."""
    return bool(session.execute(_ASSIGN_POSITIONS, {"limit": limit}).scalar())


# One statement: the oldest unpositioned rows, as many new positions, paired by rank. The
# sequence hands out values in any order within a statement; ranking both sides makes the
# id order the position order without relying on how the statement is executed. The UPDATE
# runs to its end whatever the outer query reads; the outer query's own scan sees the
# table as it was before it, so it finds only rows positioned by earlier transactions.
_ASSIGN_POSITIONS = text("""
    WITH waiting AS (
        SELECT id, row_number() OVER (ORDER BY id) AS rank
        FROM (SELECT id FROM outbox_events
              WHERE position IS NULL
              ORDER BY id LIMIT :limit) AS oldest
    ), taken AS (
        SELECT position, row_number() OVER (ORDER BY position) AS rank
        FROM (SELECT nextval('outbox_event_positions') AS position FROM waiting) AS drawn
    ), positioned AS (
        UPDATE outbox_events o SET position = taken.position
        FROM waiting JOIN taken USING (rank)
        WHERE o.id = waiting.id
        RETURNING o.id
    )
    SELECT EXISTS (SELECT FROM positioned)
        OR EXISTS (SELECT FROM outbox_events WHERE position IS NOT NULL)
""")


@dataclass(frozen=True, slots=True)
class Positioned:
    """An event that has its position, as the publisher delivers it. ``message`` is
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


def take_positioned(session: Session, limit: int = 500) -> list[Positioned]:
    """The oldest rows that have a position, in position order, deleted in one statement.
    The caller holds the publisher lock (``try_lock`` says why the lock's transaction
    walks the index) and delivers them before it commits: a delivery that fails rolls the
    delete back, and the rows wait with the same positions."""
    rows = [Positioned(*row) for row in session.execute(_TAKE_POSITIONED, {"limit": limit})]
    rows.sort(key=attrgetter("position"))
    return rows


# RETURNING keeps no order, so the caller sorts; the subquery walks the unique index on
# position.
_TAKE_POSITIONED = text("""
    DELETE FROM outbox_events
    WHERE id IN (SELECT id FROM outbox_events
                 WHERE position IS NOT NULL
                 ORDER BY position LIMIT :limit)
    RETURNING id, position, room, event,
              CAST(payload || jsonb_build_object('event_id', position) AS text),
              created_at
""")


def oldest_unsent_age_s(session: Session, now: dt.datetime) -> float:
    """How long the oldest undelivered push has waited (0 when none waits)."""
    oldest = session.scalar(select(func.min(OutboxEvent.created_at)))
    return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
