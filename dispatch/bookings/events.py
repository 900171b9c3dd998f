"""The record every booking change leaves: its audit row and the pushes it causes.

Both are written by one statement in the change's own transaction. The statement lives
here, beside the audit trail, rather than in ``dispatch.outbox``: the outbox module is
the publisher's side (positions, delivery, pruning), while this is the writer's side of
a status change, and ``dispatch.outbox.pushes`` still decides which rooms hear of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from dispatch.actors import Actor
from dispatch.bookings.payloads import BookingFields, booking_payload
from dispatch.outbox import pushes

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

    booking: BookingFields
    from_status: str | None
    actor: Actor
    reason: str


def record_event(
    session: Session,
    booking: BookingFields,
    from_status: str | None,
    actor: Actor,
    reason: str,
) -> None:
    """Append the booking's current status to its audit trail, and queue its pushes."""
    record_events(session, [Change(booking, from_status, actor, reason)])


def record_events(session: Session, changes: list[Change]) -> None:
    """``record_event`` for many bookings at once, in one statement."""
    if not changes:
        return
    session.flush()
    pushed = []
    for c in changes:
        # One payload for every room it goes to (two or three): built and encoded once.
        payload = json.dumps(booking_payload(c.booking))
        pushed += [(room, event, c.booking.id, payload) for room, event in pushes(c.booking)]
    rooms, events, pushed_ids, payloads = (list(column) for column in zip(*pushed, strict=True))
    session.connection().execute(
        _RECORD_EVENTS,
        {
            "rooms": rooms,
            "events": events,
            "pushed_ids": pushed_ids,
            "payloads": payloads,
            "booking_ids": [c.booking.id for c in changes],
            "from_statuses": [c.from_status for c in changes],
            "to_statuses": [c.booking.status for c in changes],
            "driver_ids": [c.booking.driver_id for c in changes],
            "actor_ids": [c.actor.id for c in changes],
            "reasons": [c.reason for c in changes],
            "versions": [c.booking.version for c in changes],
        },
    )
