"""The ride's later steps over HTTP and the relay: arrive, no-show, cancel by each party,
force-complete; bad input and the wrong party answered 4xx naming why, never a 500."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
import redis

from dispatch import tokens
from dispatch.bookings.transitions import driver_cancellations
from dispatch.fares import tariff_for
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy, Outcome
from dispatch.models import Booking, User
from dispatch.tokens import hash_token
from smartroute.infra.celery_app import create_celery
from smartroute.infra.identity import Identity
from tests import factories as make
from web.relay_actions import DriverActions

TRIP = {"pickup": {"lat": 38.7223, "lng": -9.1393}, "dropoff": {"lat": 38.75, "lng": -9.14}}


@pytest.fixture
def ride(api, committed_sessions, settings, now):
    """A booking made through the API and offered to a driver: (rider, driver, admin, id),
    each an Api with its own token."""
    rider = api.as_(api.user("rider", "r")["token"])
    driver_user = api.user("driver", "d")
    driver = api.as_(driver_user["token"])
    assert driver.request("PUT", "/v1/drivers/me/location", json=TRIP["pickup"]).status_code == 200
    status = driver.request("PUT", "/v1/drivers/me/status", json={"status": "available"})
    assert status.status_code == 200
    booking_id = rider.request("POST", "/v1/bookings", json=TRIP).get_json()["id"]
    with committed_sessions.begin() as s:
        assert dispatch_booking(s, booking_id, MatchPolicy(), now).outcome == Outcome.ASSIGNED
    admin = api.as_(api.user("admin", "a")["token"])
    return rider, driver, admin, booking_id, driver_user["id"]


def _wait_over(committed_sessions, booking_id: int, wait_s: int) -> None:
    """Move the arrival and the requested pickup back past the wait at the pickup, as if the
    driver had waited it out (the no-show is judged by the database's clock)."""
    with committed_sessions.begin() as s:
        booking = s.get(Booking, booking_id)
        back = dt.timedelta(seconds=wait_s + 1)
        booking.arrived_at -= back
        pickup = dt.datetime.combine(booking.date, booking.time) - back
        booking.date, booking.time = pickup.date(), pickup.time()


def _post(caller, path, body=None):
    response = (
        caller.request("POST", path, json=body)
        if body is not None
        else caller.request("POST", path)
    )
    return response.status_code, response.get_json()


def test_a_driver_arrives_and_reports_a_no_show_only_after_the_wait(
    ride, committed_sessions, settings
):
    _rider, driver, _admin, booking_id, _ = ride
    assert _post(driver, f"/v1/bookings/{booking_id}/accept")[0] == 200
    status, body = _post(driver, f"/v1/bookings/{booking_id}/arrive")
    assert (status, body["status"]) == (200, "arrived")
    arrived_at = dt.datetime.fromisoformat(body["arrived_at"])
    status, body = _post(driver, f"/v1/bookings/{booking_id}/no-show")
    assert (status, body["error"]["code"]) == (409, "no_show_too_early")
    allowed_at = dt.datetime.fromisoformat(body["error"]["allowed_at"])
    assert allowed_at == arrived_at + dt.timedelta(seconds=settings.no_show_wait_s)
    _wait_over(committed_sessions, booking_id, settings.no_show_wait_s)
    status, body = _post(driver, f"/v1/bookings/{booking_id}/no-show")
    # Booked over the API, the ride was priced: the no-show carries the tariff's fee.
    no_show_fee = tariff_for("default", dict(settings.tariffs)).no_show_fee
    assert (status, body["status"], body["cancellation_fee"]) == (200, "no_show", no_show_fee)


def test_cancels_by_each_party_and_the_answer_says_the_fee(ride, committed_sessions):
    rider, driver, admin, booking_id, driver_id = ride
    assert _post(driver, f"/v1/bookings/{booking_id}/accept")[0] == 200
    # A driver must say why; the answer names the field.
    status, body = _post(driver, f"/v1/bookings/{booking_id}/cancel")
    assert (status, body["error"]["code"], body["error"]["field"]) == (
        422,
        "missing_field",
        "reason",
    )
    status, body = _post(driver, f"/v1/bookings/{booking_id}/cancel", {"reason": "flat tyre"})
    assert (status, body["status"], body["driver_id"]) == (200, "pending", None)
    with committed_sessions() as s:
        assert driver_cancellations(s, driver_id) == 1
    # The rider may cancel without a body at all; the answer says what it cost.
    status, body = _post(rider, f"/v1/bookings/{booking_id}/cancel")
    assert (status, body["status"], body["cancelled_by"]) == (200, "cancelled", "rider")
    assert "cancellation_fee" in body and body["cancellation_fee"] is None
    # Final: an admin cannot cancel it again.
    status, body = _post(admin, f"/v1/bookings/{booking_id}/cancel", {"reason": "x"})
    assert (status, body["error"]["code"]) == (409, "invalid_transition")


def test_an_admin_cancels_or_force_completes_a_ride_under_way_with_a_reason(ride):
    rider, driver, admin, booking_id, _ = ride
    for action in ("accept", "start"):
        assert _post(driver, f"/v1/bookings/{booking_id}/{action}")[0] == 200
    status, body = _post(rider, f"/v1/bookings/{booking_id}/cancel", {"reason": "too slow"})
    assert (status, body["error"]["code"]) == (409, "invalid_transition")
    status, body = _post(admin, f"/v1/bookings/{booking_id}/cancel")
    assert (status, body["error"]["field"]) == (422, "reason")
    status, body = _post(admin, f"/v1/bookings/{booking_id}/force-complete", {})
    assert (status, body["error"]["code"], body["error"]["field"]) == (
        422,
        "missing_field",
        "reason",
    )
    status, body = _post(rider, f"/v1/bookings/{booking_id}/force-complete", {"reason": "x"})
    assert status == 403
    status, body = _post(
        admin, f"/v1/bookings/{booking_id}/force-complete", {"reason": "driver's phone died"}
    )
    assert (status, body["status"]) == (200, "completed")
    status, body = _post(admin, f"/v1/bookings/{booking_id}/force-complete", {"reason": "again"})
    assert (status, body["error"]["code"]) == (409, "invalid_transition")


@pytest.mark.parametrize(
    "body,code,field",
    [
        ({"reason": ""}, "invalid_field", "reason"),
        ({"reason": "   "}, "invalid_field", "reason"),
        ({"reason": "x" * 501}, "invalid_field", "reason"),
        ({"reason": "bad\u202ename"}, "invalid_field", "reason"),
        ({"reason": 5}, "invalid_field", "reason"),
        ({"why": "x"}, "unknown_field", "why"),
    ],
)
def test_a_bad_reason_is_a_422_naming_it_and_changes_nothing(ride, body, code, field):
    rider, _driver, admin, booking_id, _ = ride
    for caller in (rider, admin):
        status, answer = _post(caller, f"/v1/bookings/{booking_id}/cancel", body)
        assert (status, answer["error"]["code"], answer["error"]["field"]) == (422, code, field)
    assert rider.request("GET", f"/v1/bookings/{booking_id}").get_json()["status"] == "assigned"


def test_a_malformed_cancel_body_is_a_400(ride):
    rider, _driver, _admin, booking_id, _ = ride
    response = rider.request(
        "POST",
        f"/v1/bookings/{booking_id}/cancel",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert (response.status_code, response.get_json()["error"]["code"]) == (400, "malformed_json")


def test_a_stranger_driver_cannot_arrive_no_show_or_cancel(ride, api):
    _rider, driver, _admin, booking_id, _ = ride
    assert _post(driver, f"/v1/bookings/{booking_id}/accept")[0] == 200
    stranger = api.as_(api.user("driver", "s")["token"])
    for path, body in (("arrive", None), ("no-show", None), ("cancel", {"reason": "x"})):
        status, answer = _post(stranger, f"/v1/bookings/{booking_id}/{path}", body)
        assert (status, answer["error"]["code"]) == (409, "not_your_booking"), path


@pytest.fixture
def relay(settings, committed_sessions, now):
    """A booking accepted by its driver, committed, and the relay's actions for that driver."""
    with committed_sessions.begin() as s:
        booking = make.booking(s, make.rider(s), now=now)
        driver = make.driver(s, now=now)
        assert dispatch_booking(s, booking.id, MatchPolicy(), now).outcome == Outcome.ASSIGNED
        token, row = tokens.issue(s, s.get(User, driver.user_id), settings.secret_key, 3600)
        holder = Identity(driver.user_id, "driver", row.id, hash_token(token), row.expires_at)
    unbatched = replace(settings, batch_window_s=0)
    actions = DriverActions(
        unbatched,
        committed_sessions,
        create_celery(unbatched),
        redis.Redis.from_url(settings.redis_url),
    )
    answer, _ = actions.handle(holder, {"booking_id": booking.id, "action": "accept"})
    assert answer["status"] == 200
    return actions, holder, booking.id


def test_the_relay_takes_arrive_no_show_and_cancel(relay, committed_sessions):
    actions, holder, booking_id = relay
    answer, _ = actions.handle(holder, {"booking_id": booking_id, "action": "arrive"})
    assert (answer["status"], answer["booking"]["status"]) == (200, "arrived")
    answer, _ = actions.handle(holder, {"booking_id": booking_id, "action": "no_show"})
    assert (answer["status"], answer["error"]["code"]) == (409, "no_show_too_early")
    assert "allowed_at" in answer["error"]
    answer, _ = actions.handle(holder, {"booking_id": booking_id, "action": "cancel"})
    assert (answer["status"], answer["error"]["field"]) == (422, "reason")
    answer, _ = actions.handle(
        holder, {"booking_id": booking_id, "action": "cancel", "reason": "rider unreachable"}
    )
    assert (answer["status"], answer["booking"]["status"]) == (200, "pending")
    with committed_sessions() as s:
        assert s.get(Booking, booking_id).driver_id is None


def test_the_relay_reports_a_no_show_once_the_wait_is_over(relay, committed_sessions, settings):
    actions, holder, booking_id = relay
    assert (
        actions.handle(holder, {"booking_id": booking_id, "action": "arrive"})[0]["status"] == 200
    )
    _wait_over(committed_sessions, booking_id, settings.no_show_wait_s)
    answer, _ = actions.handle(holder, {"booking_id": booking_id, "action": "no_show"})
    assert (answer["status"], answer["booking"]["status"]) == (200, "no_show")
