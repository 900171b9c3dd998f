import datetime as dt

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from dispatch.actors import Actor
from dispatch.bookings.creation import BookingRequest, create_booking
from dispatch.bookings.payloads import BookingSnapshot, booking_payload
from dispatch.bookings.queries import get_booking_for
from dispatch.bookings.transitions import cancel_booking, driver_action
from dispatch.errors import IdempotencyConflict, InvalidTransition, NotFound, NotOfferedToYou
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy, Outcome
from dispatch.models import Booking, BookingEvent, Decline, Driver
from dispatch.states import Role
from tests import factories as make


def _offered(session, now):
    rider = make.rider(session)
    driver = make.driver(session, now=now)
    booking = make.booking(session, rider, now=now)
    assert dispatch_booking(session, booking.id, MatchPolicy(), now).outcome == Outcome.ASSIGNED
    return rider, driver, booking


def test_a_new_booking_is_pending_with_its_deadline_and_audit_event(session, now):
    booking = make.booking(session, make.rider(session), now=now, deadline_s=120)
    assert booking.status == "pending" and booking.version == 1
    assert booking.expires_at == now + dt.timedelta(seconds=120)
    events = session.execute(select(BookingEvent).where(BookingEvent.booking_id == booking.id))
    assert [(e.from_status, e.to_status) for e in events.scalars()] == [(None, "pending")]


def test_a_scheduled_booking_keeps_its_pickup_time_and_expires_after_it(session, now):
    later = now + dt.timedelta(hours=3)
    booking = make.booking(session, make.rider(session), now=now, pickup_at=later, deadline_s=60)
    assert (booking.date, booking.time) == (later.date(), later.time())
    assert booking.expires_at == later + dt.timedelta(seconds=60)


def test_the_same_idempotency_key_returns_the_same_booking(session, now):
    rider = make.rider(session)
    first = make.booking(session, rider, now=now, key="k-1")
    again = make.booking(session, rider, now=now, key="k-1")
    assert again.id == first.id
    assert session.scalar(select(func.count()).select_from(Booking)) == 1


def test_the_same_key_with_another_body_is_refused(session, now):
    rider = make.rider(session)
    make.booking(session, rider, now=now, key="k-2")
    with pytest.raises(IdempotencyConflict):
        make.booking(session, rider, make.offset(make.LISBON, east_km=1), now=now, key="k-2")


def test_keys_are_per_rider(session, now):
    a = make.booking(session, make.rider(session, "a"), now=now, key="same")
    b = make.booking(session, make.rider(session, "b"), now=now, key="same")
    assert a.id != b.id


def test_accept_start_complete_frees_the_driver(session, now):
    _rider, driver, booking = _offered(session, now)
    for action, status in (
        ("accept", "accepted"),
        ("start", "in_progress"),
        ("complete", "completed"),
    ):
        assert driver_action(session, booking.id, driver.user_id, action, now=now).status == status
    assert session.get(Driver, driver.user_id).status == "available"
    versions = session.scalars(
        select(BookingEvent.version)
        .where(BookingEvent.booking_id == booking.id)
        .order_by(BookingEvent.version)
    ).all()
    assert versions == [1, 2, 3, 4, 5]


def test_decline_returns_to_pending_and_excludes_the_driver(session, now):
    _rider, driver, booking = _offered(session, now)
    driver_action(session, booking.id, driver.user_id, "decline", now=now)
    assert (booking.status, booking.driver_id) == ("pending", None)
    assert session.get(Driver, driver.user_id).status == "available"
    assert session.get(Decline, (booking.id, driver.user_id)).reason == "declined"
    # The only driver declined: nobody else to offer it to.
    assert dispatch_booking(session, booking.id, MatchPolicy(), now).outcome == Outcome.NO_DRIVER


def test_a_driver_cannot_act_on_someone_elses_offer(session, now):
    _rider, _driver, booking = _offered(session, now)
    other = make.driver(session, now=now, name="other")
    with pytest.raises(NotOfferedToYou):
        driver_action(session, booking.id, other.user_id, "accept", now=now)


def test_an_illegal_transition_reports_the_current_status(session, now):
    _rider, driver, booking = _offered(session, now)
    with pytest.raises(InvalidTransition) as info:
        driver_action(session, booking.id, driver.user_id, "complete", now=now)
    assert info.value.details["current_status"] == "assigned"


def test_accepting_after_the_window_closed_is_refused(session, now):
    _rider, driver, booking = _offered(session, now)
    # The window closes by the database's clock: move it into that clock's past.
    session.execute(
        text("UPDATE cab_bookings SET offer_expires_at = now() - interval '1 s' WHERE id = :b"),
        {"b": booking.id},
    )
    with pytest.raises(InvalidTransition, match="window"):
        driver_action(session, booking.id, driver.user_id, "accept", now=now)


def test_an_api_clock_running_fast_does_not_close_the_window_early(session, now):
    _rider, driver, booking = _offered(session, now)
    ahead = booking.offer_expires_at + dt.timedelta(hours=1)
    assert (
        driver_action(session, booking.id, driver.user_id, "accept", now=ahead).status == "accepted"
    )


def test_cancel_by_rider_frees_the_driver_and_is_final(session, now):
    rider, driver, booking = _offered(session, now)
    cancel_booking(session, booking.id, Actor(rider.id, Role.RIDER), now=now)
    assert booking.status == "cancelled"
    assert session.get(Driver, driver.user_id).status == "available"
    with pytest.raises(InvalidTransition):
        cancel_booking(session, booking.id, Actor(rider.id, Role.RIDER), now=now)


def test_other_riders_see_nothing(session, now):
    booking = make.booking(session, make.rider(session), now=now)
    stranger = make.rider(session, "stranger")
    with pytest.raises(NotFound):
        get_booking_for(session, booking.id, Actor(stranger.id, Role.RIDER))
    with pytest.raises(NotFound):
        cancel_booking(session, booking.id, Actor(stranger.id, Role.RIDER), now=now)
    assert get_booking_for(session, booking.id, Actor(99, Role.ADMIN)).id == booking.id


def test_the_database_refuses_a_second_active_booking_for_a_driver(session, now):
    rider, driver, _booking = _offered(session, now)
    second = make.booking(session, rider, now=now)
    double_booking = "UPDATE cab_bookings SET status = 'accepted', driver_id = :d WHERE id = :b"
    with (
        pytest.raises(IntegrityError, match="uq_cab_bookings_active_driver"),
        session.begin_nested(),
    ):
        session.execute(text(double_booking), {"d": driver.user_id, "b": second.id})


@pytest.mark.parametrize(
    "sql,constraint",
    [
        ("UPDATE cab_bookings SET pickup_lat = 91", "pickup_lat_range"),
        (
            "UPDATE cab_bookings SET status = 'lost', driver_id = (SELECT max(user_id) "
            "FROM drivers)",
            "ck_cab_bookings_status",
        ),
        ("UPDATE cab_bookings SET status = 'accepted'", "driver_when_matched"),
        ("UPDATE cab_bookings SET offer_expires_at = now()", "offer_timer"),
    ],
)
def test_check_constraints_hold(session, now, sql, constraint):
    make.driver(session, now=now, available=False)
    make.booking(session, make.rider(session), now=now)
    with pytest.raises(IntegrityError, match=constraint), session.begin_nested():
        session.execute(text(sql))


def test_a_new_booking_its_replay_and_a_driver_action_come_back_as_one_type(session, now):
    rider = make.rider(session)
    request = BookingRequest(make.LISBON, make.offset(make.LISBON, north_km=3))

    def create():
        return create_booking(
            session,
            rider.id,
            request,
            now=now,
            deadline_s=300,
            first_retry_s=5,
            idempotency_key="same-key",
        )

    (first, created), (again, created_again) = create(), create()
    assert created and not created_again
    assert type(first) is type(again) is BookingSnapshot
    assert (
        booking_payload(first)
        == booking_payload(again)
        == booking_payload(session.get(Booking, first.id))
    )

    driver = make.driver(session, now=now)
    dispatch_booking(session, first.id, MatchPolicy(), now)
    declined = driver_action(session, first.id, driver.user_id, "decline", now=now)
    assert type(declined) is BookingSnapshot
    assert booking_payload(declined) == booking_payload(
        session.get(Booking, first.id, populate_existing=True)
    )
    second, _ = create_booking(session, rider.id, request, now=now, deadline_s=300, first_retry_s=5)
    dispatch_booking(session, second.id, MatchPolicy(), now)
    accepted = driver_action(session, second.id, driver.user_id, "accept", now=now)
    assert type(accepted) is BookingSnapshot
    assert booking_payload(accepted) == booking_payload(
        session.get(Booking, second.id, populate_existing=True)
    )
