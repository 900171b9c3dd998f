import datetime as dt
import json

import pytest
from sqlalchemy import select

from dispatch import outbox
from dispatch.actors import Actor
from dispatch.bookings.transitions import cancel_booking, driver_action
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy
from dispatch.models import OutboxEvent
from dispatch.states import Role
from tests import factories as make


def test_each_change_queues_its_pushes_in_the_same_transaction(session, now):
    rider = make.rider(session)
    driver = make.driver(session, now=now)
    booking = make.booking(session, rider, now=now)
    dispatch_booking(session, booking.id, MatchPolicy(), now)
    rows = session.execute(select(OutboxEvent).order_by(OutboxEvent.id)).scalars().all()
    assert [(r.room, r.event, r.payload["status"]) for r in rows] == [
        ("admin_dashboard", "booking_updated", "pending"),
        (f"rider_{rider.id}", "booking_updated", "pending"),
        ("admin_dashboard", "booking_updated", "assigned"),
        (f"rider_{rider.id}", "booking_updated", "assigned"),
        (f"driver_{driver.user_id}", "new_assignment", "assigned"),
    ]
    # Clients see positions, which only the publisher hands out.
    assert outbox.take_positioned(session) == []


def test_positions_follow_ids_among_committed_rows_then_delivered_rows_go(session, now):
    rider = make.rider(session)
    booking = make.booking(session, rider, now=now)
    assert outbox.try_lock(session)
    assert outbox.assign_positions(session)
    # A positioned row still waiting (its delivery failed) is something to deliver too.
    assert outbox.assign_positions(session)
    # created_at is the database's clock, a hair away from the test's.
    assert outbox.oldest_unsent_age_s(session, now + dt.timedelta(seconds=3)) == pytest.approx(
        3, abs=0.5
    )
    # A later change's rows wait, unpositioned, behind the positioned ones.
    later = make.booking(session, make.rider(session), now=now)
    stored = session.scalars(
        select(OutboxEvent.payload).where(OutboxEvent.booking_id == booking.id).order_by("id")
    ).first()
    taken = outbox.take_positioned(session)
    assert [r.id for r in taken] == sorted(r.id for r in taken) and len(taken) == 2
    assert taken[1].position == taken[0].position + 1
    assert [r.room for r in taken] == ["admin_dashboard", f"rider_{rider.id}"]
    # What a client receives: the stored booking, and the position as its event id.
    assert json.loads(taken[0].message) == stored | {"event_id": taken[0].position}
    # Taken rows are gone, and the later rows stay, still without positions.
    assert outbox.take_positioned(session) == []
    left = session.execute(select(OutboxEvent.booking_id, OutboxEvent.position)).all()
    assert left == [(later.id, None), (later.id, None)]
    assert outbox.oldest_unsent_age_s(session, now + dt.timedelta(seconds=3)) > 0
    # Each row gets one position, once; with nothing positioned left, nothing to deliver.
    assert outbox.assign_positions(session)
    assert len(outbox.take_positioned(session)) == 2
    assert not outbox.assign_positions(session)


def test_a_second_publisher_does_not_wait_for_the_lock(committed_sessions, now):
    """A publisher waiting for the lock would hold a worker slot; it leaves at once."""
    with committed_sessions() as first, first.begin():
        assert outbox.try_lock(first)
        with committed_sessions() as second, second.begin():
            assert not outbox.try_lock(second)
    with committed_sessions() as third, third.begin():
        assert outbox.try_lock(third)  # Released with the holder's transaction.


def _driver_pushes(session, booking_id: int, driver_id: int) -> list[tuple[str, str]]:
    """The pushes queued for the driver's room about the booking, oldest first."""
    rows = session.scalars(
        select(OutboxEvent)
        .where(OutboxEvent.booking_id == booking_id, OutboxEvent.room == f"driver_{driver_id}")
        .order_by(OutboxEvent.id)
    )
    return [(r.event, r.payload["status"]) for r in rows]


def _accepted(session, now):
    rider = make.rider(session)
    driver = make.driver(session, now=now)
    booking = make.booking(session, rider, now=now)
    dispatch_booking(session, booking.id, MatchPolicy(), now)
    driver_action(session, booking.id, driver.user_id, "accept", now=now)
    return rider, driver, booking


@pytest.mark.parametrize(
    ("who", "reason"), [("rider", "plans changed"), ("admin", "duplicate booking")]
)
def test_the_driver_hears_when_a_ride_they_hold_is_cancelled(session, now, who, reason):
    rider, driver, booking = _accepted(session, now)
    actor = Actor(rider.id, Role.RIDER) if who == "rider" else Actor(None, Role.ADMIN)
    cancel_booking(session, booking.id, actor, now=now, reason=reason)
    # The offer, then the cancel: accepting is the driver's own doing and is not pushed back.
    assert _driver_pushes(session, booking.id, driver.user_id) == [
        ("new_assignment", "assigned"),
        ("booking_updated", "cancelled"),
    ]
    cancelled = session.scalars(
        select(OutboxEvent).where(
            OutboxEvent.room == f"driver_{driver.user_id}", OutboxEvent.event == "booking_updated"
        )
    ).one()
    assert cancelled.payload["cancelled_by"] == who
    assert cancelled.payload["cancel_reason"] == reason
    assert cancelled.payload["driver_id"] == driver.user_id


def test_the_driver_hears_of_a_cancelled_offer_too(session, now):
    rider = make.rider(session)
    driver = make.driver(session, now=now)
    booking = make.booking(session, rider, now=now)
    dispatch_booking(session, booking.id, MatchPolicy(), now)
    cancel_booking(session, booking.id, Actor(rider.id, Role.RIDER), now=now)
    assert _driver_pushes(session, booking.id, driver.user_id)[-1] == (
        "booking_updated",
        "cancelled",
    )


def test_a_driver_is_not_pushed_the_changes_they_make(session, now):
    _rider, driver, booking = _accepted(session, now)
    for action in ("arrive", "start", "complete"):
        driver_action(session, booking.id, driver.user_id, action, now=now)
    assert _driver_pushes(session, booking.id, driver.user_id) == [("new_assignment", "assigned")]


def test_a_driver_is_not_pushed_the_ride_they_gave_back(session, now):
    _rider, driver, booking = _accepted(session, now)
    driver_action(session, booking.id, driver.user_id, "cancel", now=now, reason="flat tyre")
    assert _driver_pushes(session, booking.id, driver.user_id) == [("new_assignment", "assigned")]


def test_a_cancel_before_any_driver_goes_to_admins_and_the_rider_only(session, now):
    rider = make.rider(session)
    booking = make.booking(session, rider, now=now)
    cancel_booking(session, booking.id, Actor(rider.id, Role.RIDER), now=now)
    rows = session.scalars(
        select(OutboxEvent).where(
            OutboxEvent.booking_id == booking.id,
            OutboxEvent.payload["status"].astext == "cancelled",
        )
    ).all()
    assert sorted(r.room for r in rows) == ["admin_dashboard", f"rider_{rider.id}"]
