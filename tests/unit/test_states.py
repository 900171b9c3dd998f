from dispatch.states import (
    ACTIVE_STATUSES,
    CAUSED_BY,
    DRIVER_ACTIONS,
    FINAL_STATUSES,
    RELAY_DRIVER_ACTIONS,
    TRANSITIONS,
    UNSTARTED_STATUSES,
    Role,
    Status,
    next_status,
)


def test_final_statuses_have_no_way_out():
    for action, (sources, _target) in TRANSITIONS.items():
        assert not (sources & FINAL_STATUSES), f"{action} leaves a final status"


def test_every_status_is_reachable_from_pending():
    reached, frontier = {Status.PENDING}, [Status.PENDING]
    while frontier:
        current = frontier.pop()
        for sources, target in TRANSITIONS.values():
            if current in sources and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(Status)


def test_only_bookings_before_pickup_can_be_cancelled():
    cancellable = {s for s in Status if next_status("cancel", s) is not None}
    assert cancellable == {Status.PENDING, Status.ASSIGNED, Status.ACCEPTED, Status.ARRIVED}


def test_a_ride_under_way_cannot_be_cancelled_or_declined():
    assert next_status("cancel", Status.IN_PROGRESS) is None
    assert next_status("decline", Status.ACCEPTED) is None
    assert next_status("driver_cancel", Status.IN_PROGRESS) is None


def test_an_admin_may_cancel_any_open_booking_and_force_complete_a_ride_under_way():
    forced = {s for s in Status if next_status("force_cancel", s) is not None}
    assert forced == {Status.PENDING, *map(Status, ACTIVE_STATUSES)}
    assert {s for s in Status if next_status("force_complete", s)} == {Status.IN_PROGRESS}
    assert CAUSED_BY["force_cancel"] == CAUSED_BY["force_complete"] == {Role.ADMIN}


def test_arrival_sits_between_acceptance_and_the_start():
    assert next_status("arrive", Status.ACCEPTED) == Status.ARRIVED
    assert next_status("arrive", Status.ASSIGNED) is None
    assert next_status("start", Status.ARRIVED) == Status.IN_PROGRESS
    # An app that never reports arrival still starts its ride.
    assert next_status("start", Status.ACCEPTED) == Status.IN_PROGRESS


def test_a_no_show_follows_arrival_only_and_is_final():
    assert {s for s in Status if next_status("no_show", s)} == {Status.ARRIVED}
    assert Status.NO_SHOW in FINAL_STATUSES


def test_a_driver_cancel_and_a_stuck_ride_go_back_to_matching_before_pickup_only():
    for action in ("driver_cancel", "rematch"):
        sources, target = TRANSITIONS[action]
        assert (set(sources), target) == (set(map(Status, UNSTARTED_STATUSES)), Status.PENDING)


def test_every_action_says_who_may_cause_it():
    assert set(CAUSED_BY) == set(TRANSITIONS)
    driver_actions = {a for a, who in CAUSED_BY.items() if Role.DRIVER in who}
    # Over the relay a driver's cancel is its "cancel"; the state machine's driver_cancel.
    assert driver_actions == set(DRIVER_ACTIONS) | {"no_show", "driver_cancel"}
    assert set(RELAY_DRIVER_ACTIONS) == set(DRIVER_ACTIONS) | {"no_show", "cancel"}
    assert all(None in CAUSED_BY[a] for a in ("offer", "lapse", "expire", "rematch"))


def test_decline_and_lapse_return_an_offer_to_pending():
    assert next_status("decline", "assigned") == Status.PENDING
    assert next_status("lapse", "assigned") == Status.PENDING


def test_active_statuses_are_those_a_driver_holds():
    holding = {
        next_status(a, s)
        for a, s in (
            ("offer", "pending"),
            ("accept", "assigned"),
            ("arrive", "accepted"),
            ("start", "arrived"),
        )
    }
    assert set(ACTIVE_STATUSES) == {s.value for s in holding}
