"""Drivers acting on their bookings over the relay, through a real relay process, with real
Socket.IO clients, against the same API, workers and database as everything else."""

from __future__ import annotations

import queue

import pytest
import requests
import socketio
from sqlalchemy import text

from tests.integration.conftest import WAIT_S, disconnects, new_user, online_driver
from tests.integration.test_push import CENTRE, TRIP
from tests.support import wait_for

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def act(feed, booking_id, action) -> dict:
    """One ``driver_action``, and the relay's acknowledgement."""
    return feed.client.call(
        "driver_action", {"booking_id": booking_id, "action": action}, timeout=WAIT_S
    )


def offered(admin, listeners, rider) -> tuple:
    driver = online_driver(admin, CENTRE[0] + 0.003, CENTRE[1])
    feed = listeners(driver.token)
    booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    _, offer = feed.next("new_assignment")
    assert (offer["id"], offer["driver_id"]) == (booking_id, driver.id)
    return driver, feed, booking_id


def test_a_driver_accepts_drives_and_completes_over_its_connection(admin, listeners):
    rider = new_user(admin, "rider")
    admin_feed = listeners(admin.http.headers["Authorization"].removeprefix("Bearer "))
    driver, feed, booking_id = offered(admin, listeners, rider)

    answers = [act(feed, booking_id, action) for action in ("accept", "start", "complete")]

    assert [a["status"] for a in answers] == [200, 200, 200]
    assert [a["booking"]["status"] for a in answers] == ["accepted", "in_progress", "completed"]
    assert [a["booking"]["version"] for a in answers] == [3, 4, 5]
    # Written to the database, announced like any other change, and the driver is free again.
    assert admin.call("GET", f"/v1/bookings/{booking_id}")["status"] == "completed"
    seen = [admin_feed.next("booking_updated")[1]["status"] for _ in range(5)]
    assert seen == ["pending", "assigned", "accepted", "in_progress", "completed"]
    assert driver.call("GET", "/v1/drivers/me")["status"] == "available"


def test_a_refused_action_answers_as_the_api_would_and_changes_nothing(admin, listeners):
    rider = new_user(admin, "rider")
    _driver, _feed, booking_id = offered(admin, listeners, rider)
    stranger = online_driver(admin, CENTRE[0] - 0.2, CENTRE[1])
    stranger_feed = listeners(stranger.token)

    for action in ("accept", "start", "decline"):
        over_http = stranger.http.post(
            f"{stranger.base_url}/v1/bookings/{booking_id}/{action}", timeout=WAIT_S
        )
        over_relay = act(stranger_feed, booking_id, action)
        assert over_relay["status"] == over_http.status_code >= 400
        assert over_relay["error"] == over_http.json()["error"]
    unknown = act(stranger_feed, booking_id + 10_000, "accept")
    assert (unknown["status"], unknown["error"]["code"]) == (404, "not_found")
    assert admin.call("GET", f"/v1/bookings/{booking_id}")["status"] == "assigned"


@pytest.mark.parametrize(
    ("message", "status", "field"),
    [
        ({"booking_id": "12", "action": "accept"}, 422, "booking_id"),
        ({"booking_id": 0, "action": "accept"}, 422, "booking_id"),
        ({"booking_id": 12, "action": "fly"}, 422, "action"),
        ({"booking_id": 12}, 422, "action"),
        ({"booking_id": 12, "action": "accept", "tip": 5}, 422, "tip"),
        ("accept 12", 400, None),
        (None, 400, None),
    ],
)
def test_a_malformed_action_names_what_is_wrong(admin, listeners, message, status, field):
    driver = online_driver(admin, *CENTRE)
    feed = listeners(driver.token)
    answer = feed.client.call("driver_action", message, timeout=WAIT_S)
    assert answer["status"] == status
    assert answer["error"].get("field") == field
    assert feed.client.connected


def test_only_drivers_act_and_a_decline_goes_to_the_next_driver(admin, listeners):
    rider = new_user(admin, "rider")
    first, first_feed, booking_id = offered(admin, listeners, rider)
    rider_feed = listeners(rider.token)
    refused = act(rider_feed, booking_id, "accept")
    assert (refused["status"], refused["error"]["code"]) == (403, "forbidden")

    second = online_driver(admin, CENTRE[0] + 0.006, CENTRE[1])
    second_feed = listeners(second.token)
    declined = act(first_feed, booking_id, "decline")
    assert (declined["status"], declined["booking"]["status"]) == (200, "pending")
    _, offer = second_feed.next("new_assignment")
    assert (offer["id"], offer["driver_id"]) == (booking_id, second.id)
    assert act(second_feed, booking_id, "accept")["booking"]["driver_id"] == second.id
    assert first.call("GET", "/v1/drivers/me")["status"] == "available"


def test_a_revoked_token_acts_no_more(admin, listeners):
    rider = new_user(admin, "rider")
    driver, feed, booking_id = offered(admin, listeners, rider)
    admin.call("DELETE", f"/v1/users/{driver.id}/tokens")

    # Whichever comes first: the action's own check answers 401 and then hangs up, or the
    # relay's periodic revalidation hangs up (before the action, or while it runs).
    try:
        feed.client.emit(
            "driver_action",
            {"booking_id": booking_id, "action": "accept"},
            callback=lambda answer: feed.events.put(("answer", answer)),
        )
    except socketio.exceptions.BadNamespaceError:
        pass  # Already hung up.
    else:
        name, answer = feed.next()
        while name not in ("answer", "disconnect"):
            name, answer = feed.next()
        if name == "answer":
            assert (answer["status"], answer["error"]["code"]) == (401, "unauthorized")
    assert disconnects(feed)
    assert admin.call("GET", f"/v1/bookings/{booking_id}")["status"] == "assigned"


def test_an_action_waiting_on_a_row_lock_holds_up_no_one_else(admin, listeners, engine, stack):
    """The relay is one eventlet process: a query must yield while it waits (psycogreen), or
    one driver's action stuck behind a lock would freeze every connection."""
    rider = new_user(admin, "rider")
    _driver, feed, booking_id = offered(admin, listeners, rider)
    other = online_driver(admin, CENTRE[0] - 0.2, CENTRE[1])
    other_feed = listeners(other.token)
    answers: queue.Queue = queue.Queue()

    with engine.connect() as lock:
        lock.execute(
            text("SELECT 1 FROM cab_bookings WHERE id = :id FOR UPDATE"), {"id": booking_id}
        )
        feed.client.emit(
            "driver_action", {"booking_id": booking_id, "action": "accept"}, callback=answers.put
        )
        wait_for(lambda: _relay_waits_on_a_lock(engine), WAIT_S, "the accept to wait on the lock")

        # Meanwhile another driver's action goes to the database and back, and HTTP answers.
        assert act(other_feed, booking_id + 10_000, "accept")["status"] == 404
        assert requests.get(f"{stack.relay_url}/health", timeout=WAIT_S).status_code == 200
        assert answers.empty()
        lock.rollback()

    answer = answers.get(timeout=WAIT_S)
    assert (answer["status"], answer["booking"]["status"]) == (200, "accepted")
    # The patch came before any other import (smartroute.cli.relay): eventlet found nothing
    # already made that it could not green.
    assert "monkey_patch" not in (stack.logs / "relay.log").read_text()


def _relay_waits_on_a_lock(engine) -> bool:
    # Its own connection: pg_stat_activity holds still within a transaction.
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                    "'smartroute-relay' "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar()
        )
