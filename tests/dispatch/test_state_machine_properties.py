"""Property-based: any interleaving of booking, matching, driver actions, cancels, lapses,
expiry and drivers going offline keeps the booking state machine's invariants.

Hypothesis drives the domain services against real PostgreSQL; every step runs in a
savepoint, as a request or task runs in its own transaction, and each example is rolled
back at the end.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from sqlalchemy.orm import Session

from dispatch import sweeps
from dispatch.actors import Actor
from dispatch.bookings.transitions import cancel_booking, driver_action
from dispatch.drivers import set_availability
from dispatch.errors import DispatchError
from dispatch.eta import GreatCircleEta
from dispatch.matching.batch import dispatch_region
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy
from dispatch.models import Booking
from dispatch.states import FINAL_STATUSES, DriverStatus, Role
from tests import factories as make

POLICY = MatchPolicy(radius_km=5, offer_window_s=25, retry_interval_s=5)
START = dt.datetime(2030, 1, 1, 8, 0, tzinfo=dt.UTC)
offsets = st.floats(min_value=-3, max_value=3, allow_nan=False)


class BookingLifecycle(RuleBasedStateMachine):
    engine = None  # Set by the test: the session-scoped engine.

    bookings = Bundle("bookings")
    drivers = Bundle("drivers")

    def __init__(self) -> None:
        super().__init__()
        self.connection = self.engine.connect()
        self.outer = self.connection.begin()
        self.session = Session(bind=self.connection, join_transaction_mode="create_savepoint")
        self.now = START
        self.rider = make.rider(self.session)
        self.finished: dict[int, str] = {}

    def teardown(self) -> None:
        self.session.close()
        self.outer.rollback()
        self.connection.close()

    def _step(self, action) -> None:
        """Run one request's or task's worth of work; a refused action changes nothing."""
        self.now += dt.timedelta(seconds=1)
        try:
            with self.session.begin_nested():
                action()
        except DispatchError:
            pass

    @rule(target=bookings, north=offsets, east=offsets)
    def book(self, north, east):
        booking = make.booking(
            self.session,
            self.rider,
            make.offset(make.LISBON, north, east),
            now=self.now,
            deadline_s=60,
        )
        return booking.id

    @rule(target=drivers, north=offsets, east=offsets)
    def driver_comes_online(self, north, east):
        return make.driver(
            self.session, make.offset(make.LISBON, north, east), now=self.now
        ).user_id

    @rule(booking=bookings)
    def match_one(self, booking):
        self._step(lambda: dispatch_booking(self.session, booking, POLICY, self.now))

    @rule()
    def match_batch(self):
        self._step(
            lambda: dispatch_region(self.session, "default", POLICY, GreatCircleEta(), now=self.now)
        )

    @rule(
        booking=bookings,
        driver=drivers,
        action=st.sampled_from(["accept", "decline", "start", "complete"]),
    )
    def driver_acts(self, booking, driver, action):
        self._step(lambda: driver_action(self.session, booking, driver, action, now=self.now))

    @rule(booking=bookings)
    def its_driver_acts(self, booking):
        holder = self.session.get(Booking, booking).driver_id
        if holder is not None:
            for action in ("accept", "start", "complete"):
                self._step(
                    lambda a=action: driver_action(self.session, booking, holder, a, now=self.now)
                )

    @rule(booking=bookings)
    def rider_cancels(self, booking):
        self._step(
            lambda: cancel_booking(
                self.session, booking, Actor(self.rider.id, Role.RIDER), now=self.now
            )
        )

    @rule(seconds=st.integers(min_value=1, max_value=90))
    def time_passes_and_beat_sweeps(self, seconds):
        self.now += dt.timedelta(seconds=seconds)
        self._step(lambda: sweeps.lapse_offers(self.session, now=self.now))
        self._step(lambda: sweeps.expire_overdue(self.session, now=self.now))

    @rule(driver=drivers, online=st.booleans())
    def driver_switches(self, driver, online):
        status = DriverStatus.AVAILABLE if online else DriverStatus.OFFLINE
        self._step(lambda: set_availability(self.session, driver, status, now=self.now))

    def _rows(self, sql: str) -> list:
        return self.session.execute(text(sql)).all()

    @invariant()
    def no_driver_holds_two_active_bookings(self):
        assert (
            self._rows(
                "SELECT driver_id FROM cab_bookings WHERE status IN "
                "('assigned', 'accepted', 'in_progress') GROUP BY driver_id HAVING count(*) > 1"
            )
            == []
        )

    @invariant()
    def a_driver_is_busy_exactly_while_holding_a_booking(self):
        assert (
            self._rows(
                "SELECT d.user_id FROM drivers d WHERE (d.status = 'busy') <> EXISTS ("
                "SELECT 1 FROM cab_bookings b WHERE b.driver_id = d.user_id "
                "AND b.status IN ('assigned', 'accepted', 'in_progress'))"
            )
            == []
        )

    @invariant()
    def every_change_is_in_the_audit_trail_once(self):
        assert (
            self._rows(
                "SELECT b.id FROM cab_bookings b WHERE b.version <> "
                "(SELECT count(*) FROM booking_events e WHERE e.booking_id = b.id)"
            )
            == []
        )

    @invariant()
    def nobody_is_offered_a_booking_they_turned_down(self):
        assert (
            self._rows(
                "SELECT b.id FROM cab_bookings b JOIN booking_declines d ON d.booking_id = b.id "
                "AND d.driver_id = b.driver_id WHERE b.status = 'assigned'"
            )
            == []
        )

    @invariant()
    def final_statuses_are_final(self):
        for booking_id, status in self._rows("SELECT id, status FROM cab_bookings"):
            if booking_id in self.finished:
                assert status == self.finished[booking_id]
            elif status in FINAL_STATUSES:
                self.finished[booking_id] = status


@pytest.mark.slow
def test_booking_lifecycle_invariants_hold_under_any_interleaving(engine):
    BookingLifecycle.engine = engine
    run_state_machine_as_test(
        BookingLifecycle,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
