"""The outbox: every push a status change causes, written in that change's transaction.

Socket.IO delivers at most once, so the row, not the emit, is the promise. A publisher
sends unsent rows in id order and marks them sent; a client that was away asks for
everything after the last ``event_id`` it saw.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from dispatch.models import Booking, OutboxEvent
from dispatch.states import Status

ADMIN_ROOM = "admin_dashboard"
NEW_ASSIGNMENT = "new_assignment"
BOOKING_UPDATED = "booking_updated"
# One publisher at a time keeps delivery in event_id order (a transaction-scoped lock).
PUBLISHER_LOCK = 0x5352_4F55  # "SROU"


def driver_room(driver_id: int) -> str:
    return f"driver_{driver_id}"


def rider_room(rider_id: int) -> str:
    return f"rider_{rider_id}"


def pushes(booking: Booking) -> list[tuple[str, str]]:
    """The rooms and events the booking's current status goes to: admins and its rider
    always, and its driver when it has just been offered to them."""
    rows = [(ADMIN_ROOM, BOOKING_UPDATED), (rider_room(booking.user_id), BOOKING_UPDATED)]
    if booking.status == Status.ASSIGNED and booking.driver_id is not None:
        rows.append((driver_room(booking.driver_id), NEW_ASSIGNMENT))
    return rows


def claim_unsent(session: Session, limit: int = 500) -> list[OutboxEvent]:
    """The oldest unsent events, for this transaction's publisher alone.

    Waits for a publisher already at work rather than leaving to it: that one read its
    rows before events committed since, and publish requests are coalesced, so nobody
    else may be coming for those. A publisher stalled inside its transaction is ended by
    PostgreSQL (``idle_in_transaction_session_timeout``), so the wait is bounded.
    """
    session.execute(select(func.pg_advisory_xact_lock(PUBLISHER_LOCK)))
    return list(session.execute(
        select(OutboxEvent).where(OutboxEvent.sent_at.is_(None)).order_by(OutboxEvent.id)
        .limit(limit)
    ).scalars())


def mark_sent(session: Session, ids: list[int], now: dt.datetime) -> None:
    session.execute(update(OutboxEvent).where(OutboxEvent.id.in_(ids)).values(sent_at=now)
                    .execution_options(synchronize_session=False))


def oldest_unsent_age_s(session: Session, now: dt.datetime) -> float:
    """How long the oldest undelivered push has waited (0 when none waits)."""
    oldest = session.scalar(select(func.min(OutboxEvent.created_at))
                            .where(OutboxEvent.sent_at.is_(None)))
    return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())


def prune(session: Session, *, sent_before: dt.datetime) -> int:
    """Delete events delivered before ``sent_before``; returns how many."""
    return session.execute(
        delete(OutboxEvent).where(OutboxEvent.sent_at < sent_before)
        .execution_options(synchronize_session=False)
    ).rowcount


def message(row: OutboxEvent) -> dict:
    """What a client receives: the booking as of the change, and the event's id."""
    return row.payload | {"event_id": row.id}


