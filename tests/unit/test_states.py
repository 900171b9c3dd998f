from dispatch.states import ACTIVE_STATUSES, FINAL_STATUSES, TRANSITIONS, Status, next_status


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


def test_only_pending_assigned_and_accepted_can_be_cancelled():
    cancellable = {s for s in Status if next_status("cancel", s) is not None}
    assert cancellable == {Status.PENDING, Status.ASSIGNED, Status.ACCEPTED}


def test_a_ride_under_way_cannot_be_cancelled_or_declined():
    assert next_status("cancel", Status.IN_PROGRESS) is None
    assert next_status("decline", Status.ACCEPTED) is None


def test_decline_and_lapse_return_an_offer_to_pending():
    assert next_status("decline", "assigned") == Status.PENDING
    assert next_status("lapse", "assigned") == Status.PENDING


def test_active_statuses_are_those_a_driver_holds():
    holding = {
        next_status(a, s)
        for a, s in (("offer", "pending"), ("accept", "assigned"), ("start", "accepted"))
    }
    assert set(ACTIVE_STATUSES) == {s.value for s in holding}
