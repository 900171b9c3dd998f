"""Property-based: any interleaving of booking, matching, driver actions (arrival, no-shows
and drivers' cancels among them), riders' and admins' cancels, force-completes, lapses,
expiry, stuck-ride recovery and drivers going offline keeps the booking state machine's
invariants.

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
from dispatch.bookings.transitions import RidePolicy, cancel_booking, driver_action, force_complete
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
RIDE = RidePolicy(no_show_wait_s=30, rematch_deadline_s=60)
START_TIMEOUT_S = 60
ACTIVE = "('assigned', 'accepted', 'arrived', 'in_progress')"
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

    def _driver_action(self, booking, driver, action):
        driver_action(
            self.session,
            booking,
            driver,
            action,
            now=self.now,
            reason="changed my mind" if action == "cancel" else None,
            policy=RIDE,
            clock=self.now,
        )

    @rule(
        booking=bookings,
        driver=drivers,
        action=st.sampled_from(
            ["accept", "decline", "arrive", "start", "complete", "no_show", "cancel"]
        ),
    )
    def driver_acts(self, booking, driver, action):
        self._step(lambda: self._driver_action(booking, driver, action))

    @rule(
        booking=bookings,
        ride=st.sampled_from(
            [
                ("accept", "start", "complete"),
                ("accept", "arrive", "start", "complete"),
                ("accept", "arrive", "no_show"),
                ("accept", "arrive", "cancel"),
                ("accept", "cancel"),
            ]
        ),
    )
    def its_driver_acts(self, booking, ride):
        holder = self.session.get(Booking, booking).driver_id
        if holder is not None:
            for action in ride:
                self._step(lambda a=action: self._driver_action(booking, holder, a))

    @rule(
        target=bookings,
        ride=st.sampled_from(
            [
                ("accept",),
                ("accept", "arrive"),
                ("accept", "start"),
                ("accept", "arrive", "start"),
                ("accept", "arrive", "wait", "no_show"),
                ("accept", "arrive", "no_show"),
                ("accept", "arrive", "cancel"),
                ("accept", "cancel"),
            ]
        ),
    )
    def a_ride_gets_under_way(self, ride):
        """A booking with a driver beside it, matched at once and taken along ``ride`` (a
        "wait" lets the no-show wait pass), so the later statuses are reached often."""
        booking = make.booking(self.session, self.rider, make.LISBON, now=self.now, deadline_s=60)
        driver = make.driver(self.session, make.LISBON, now=self.now).user_id
        self._step(lambda: dispatch_booking(self.session, booking.id, POLICY, self.now))
        for action in ride:
            if action == "wait":
                self.now += dt.timedelta(seconds=RIDE.no_show_wait_s)
            else:
                self._step(lambda a=action: self._driver_action(booking.id, driver, a))
        return booking.id

    @rule(booking=bookings, reason=st.sampled_from([None, "plans changed"]))
    def rider_cancels(self, booking, reason):
        self._step(
            lambda: cancel_booking(
                self.session, booking, Actor(self.rider.id, Role.RIDER), now=self.now, reason=reason
            )
        )

    @rule(booking=bookings, complete=st.booleans())
    def admin_closes(self, booking, complete):
        admin = Actor(None, Role.ADMIN)
        if complete:
            self._step(
                lambda: force_complete(self.session, booking, admin, now=self.now, reason="stuck")
            )
        else:
            self._step(
                lambda: cancel_booking(self.session, booking, admin, now=self.now, reason="fraud")
            )

    @rule(
        seconds=st.integers(min_value=1, max_value=90),
        stuck=st.sampled_from(["rematch", "cancel"]),
    )
    def time_passes_and_beat_sweeps(self, seconds, stuck):
        self.now += dt.timedelta(seconds=seconds)
        self._step(lambda: sweeps.lapse_offers(self.session, now=self.now))
        self._step(lambda: sweeps.expire_overdue(self.session, now=self.now))
        self._step(
            lambda: sweeps.recover_stuck_rides(
                self.session,
                start_timeout_s=START_TIMEOUT_S,
                action_for=lambda _region: stuck,
                deadline_s=RIDE.rematch_deadline_s,
                now=self.now,
            )
        )
        self._step(lambda: sweeps.flag_overrunning_rides(self.session, max_ride_s=90, now=self.now))

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
                f"SELECT driver_id FROM cab_bookings WHERE status IN {ACTIVE} "
                "GROUP BY driver_id HAVING count(*) > 1"
            )
            == []
        )

    @invariant()
    def a_driver_is_busy_exactly_while_holding_a_booking(self):
        assert (
            self._rows(
                "SELECT d.user_id FROM drivers d WHERE (d.status = 'busy') <> EXISTS ("
                "SELECT 1 FROM cab_bookings b WHERE b.driver_id = d.user_id "
                f"AND b.status IN {ACTIVE})"
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
    def a_cancelled_booking_says_who_and_a_ride_says_when(self):
        assert (
            self._rows(
                "SELECT id FROM cab_bookings WHERE (status = 'cancelled') <> "
                "(cancelled_by IS NOT NULL) "
                "OR (status IN ('arrived', 'no_show') AND arrived_at IS NULL) "
                "OR (status IN ('accepted', 'arrived', 'in_progress') AND accepted_at IS NULL) "
                "OR (status = 'in_progress' AND started_at IS NULL) "
                "OR (status IN ('pending', 'assigned') AND (accepted_at IS NOT NULL "
                "OR arrived_at IS NOT NULL))"
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
