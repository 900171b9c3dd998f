"""What must hold after any fault, checked against PostgreSQL once the fault is healed.

- Never lost: every booking that got a 202 is in the database.
- Never stuck: within a bound, every one of them is completed (the drivers take every
  ride), and none is pending past its deadline on the way.
- Never double-assigned: no driver ever held two active bookings at once, judged from
  the audit trail of every transition, not only from the final state.
- Every offer reached its driver's app: pushed, live or by catch-up after a reconnect.
  Where the fault destroyed Redis's copy of a push, the app learning of the offer from
  the API (its ping says it is busy) is accepted too.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from sqlalchemy import text

from tests.chaos.load import Load
from tests.support import wait_for

SETTLE_S = 90
ACTIVE = ("assigned", "accepted", "in_progress")


def all_completed(engine, accepted: set[int]) -> bool:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status, count(*) FROM cab_bookings WHERE id = ANY(:ids) GROUP BY status"),
            {"ids": sorted(accepted)},
        ).all()
    return dict(rows) == {"completed": len(accepted)}


def _unfinished(engine, accepted: set[int]) -> list:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT id, status, driver_id, version, updated_at FROM cab_bookings "
                "WHERE id = ANY(:ids) AND status <> 'completed' ORDER BY id"
            ),
            {"ids": sorted(accepted)},
        ).all()


def check(engine, load: Load, *, fetched_offers_count: bool = False) -> None:
    """Assert every invariant, waiting (bounded) for the engine to settle first."""
    record = load.record
    accepted = set(record.accepted)
    assert accepted, "the load booked nothing: the fault was not under load"

    with engine.connect() as conn:
        present = set(
            conn.scalars(
                text("SELECT id FROM cab_bookings WHERE id = ANY(:ids)"), {"ids": sorted(accepted)}
            )
        )
    assert present == accepted, f"lost bookings: {sorted(accepted - present)}"

    try:
        wait_for(
            lambda: all_completed(engine, accepted),
            SETTLE_S,
            "every accepted booking to be completed",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; not completed: {_unfinished(engine, accepted)}") from None

    with engine.connect() as conn:
        assert (
            conn.scalar(
                text(
                    "SELECT count(*) FROM cab_bookings WHERE status = 'pending' AND "
                    "expires_at < now()"
                )
            )
            == 0
        ), "a booking was left pending past its deadline"
        # Event ids follow commit order wherever it matters here: a driver's next booking
        # is claimed only after the transaction that freed them committed.
        events = conn.execute(
            text("SELECT booking_id, version, to_status, driver_id FROM booking_events ORDER BY id")
        ).all()

    _no_driver_held_two(events)
    # Both ways of acting carried rides through the fault (tests/chaos/load.py).
    done = Counter(
        "relay" if a.path.startswith("relay ") else "http"
        for a in record.answers
        if a.status == 200 and a.path.endswith("/complete")
    )
    assert done["relay"] and done["http"], f"rides completed, by way: {done}"
    # Offers to the fleet's drivers: a test may add drivers of its own that hold no socket.
    fleet = {driver.id for driver in load.drivers}
    offers = {(b, d, v) for b, v, status, d in events if status == "assigned" and d in fleet}
    received = record.offers_received | (record.offers_fetched if fetched_offers_count else set())
    missed = offers - received
    assert not missed, (
        f"offers that never reached their driver: {sorted(missed)}\n{_outbox_of(engine, missed)}"
    )


def _no_driver_held_two(events) -> None:
    """Replay the audit trail in commit order; a driver may hold one active booking."""
    holder: dict[int, int | None] = {}  # booking -> driver holding it now
    held_by: dict[int, set[int]] = defaultdict(set)
    for booking_id, _version, status, driver_id in events:
        previous = holder.get(booking_id)
        if previous is not None:
            held_by[previous].discard(booking_id)
        if status in ACTIVE and driver_id is not None:
            held_by[driver_id].add(booking_id)
            holder[booking_id] = driver_id
            assert len(held_by[driver_id]) == 1, (
                f"driver {driver_id} held {sorted(held_by[driver_id])} at once"
            )
        else:
            holder[booking_id] = None


def _outbox_of(engine, offers) -> list:
    """The outbox rows still waiting behind missed offers (delivered ones are gone), for
    the failure message."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT id, room, booking_id, payload->>'version', created_at, position "
                "FROM outbox_events WHERE event = 'new_assignment' AND booking_id = ANY(:ids) "
                "ORDER BY id"
            ),
            {"ids": sorted({b for b, _, _ in offers})},
        ).all()
