"""GET /v1/me/bookings, the admin search's filters, and POST /v1/bookings/<id>/rating, over
HTTP: pages stable while rides arrive, bad input named, the wrong party refused."""

from __future__ import annotations

import base64
import datetime as dt

import jsonschema
import pytest
from sqlalchemy import text

from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy, Outcome
from dispatch.models import User
from tests import factories as make

GOOD = {"pickup": {"lat": 38.72, "lng": -9.14}, "dropoff": {"lat": 38.74, "lng": -9.15}}


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.get_json()
    return response.get_json()["error"]


def _pages(client, path: str, between=None) -> list[int]:
    seen, cursor = [], None
    while True:
        sep = "&" if "?" in path else "?"
        response = client.request("GET", path + (f"{sep}cursor={cursor}" if cursor else ""))
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        seen += [b["id"] for b in page["bookings"]]
        if between is not None:
            between()
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


@pytest.fixture
def party(api):
    """A rider and an available driver, as API clients, with their user ids."""
    rider = api.user("rider", "rider")
    driver = api.user("driver", "driver")
    driver_api = api.as_(driver["token"])
    driver_api.request("PUT", "/v1/drivers/me/location", json=GOOD["pickup"])
    driver_api.request("PUT", "/v1/drivers/me/status", json={"status": "available"})
    return api.as_(rider["token"]), driver_api, rider["id"], driver["id"]


def _ride(committed_sessions, rider, driver, upto: str = "complete") -> int:
    """A booking made by ``rider`` and taken by ``driver`` as far as ``upto``, over HTTP."""
    booking_id = rider.request("POST", "/v1/bookings", json=GOOD).get_json()["id"]
    with committed_sessions.begin() as s:
        outcome = dispatch_booking(s, booking_id, MatchPolicy(), dt.datetime.now(dt.UTC))
        assert outcome.outcome == Outcome.ASSIGNED
    for action in ("accept", "start", "complete"):
        assert driver.request("POST", f"/v1/bookings/{booking_id}/{action}").status_code == 200
        if action == upto:
            break
    return booking_id


def test_riders_page_their_own_rides_while_new_ones_arrive(api, party):
    rider, _driver, _rider_id, _driver_id = party
    other = api.as_(api.user("rider", "other")["token"])
    other.request("POST", "/v1/bookings", json=GOOD)
    first = [rider.request("POST", "/v1/bookings", json=GOOD).get_json()["id"] for _ in range(5)]
    arrived: list[int] = []

    def book() -> None:
        arrived.append(rider.request("POST", "/v1/bookings", json=GOOD).get_json()["id"])

    seen = _pages(rider, "/v1/me/bookings?limit=2", between=book)
    assert seen == sorted(first, reverse=True)
    assert len(arrived) == 3
    everything = rider.request("GET", "/v1/me/bookings").get_json()
    assert [b["id"] for b in everything["bookings"]] == sorted(first + arrived, reverse=True)
    assert everything["next_cursor"] is None


def test_drivers_see_the_rides_they_took_and_riders_see_the_drivers_rating(
    api, party, committed_sessions
):
    rider, driver, _rider_id, driver_id = party
    done = _ride(committed_sessions, rider, driver)
    assert (
        rider.request("POST", f"/v1/bookings/{done}/rating", json={"stars": 4}).status_code == 201
    )
    current = _ride(committed_sessions, rider, driver, upto="accept")
    rider.request("POST", "/v1/bookings", json=GOOD)  # Pending: no driver, not the driver's.

    mine = driver.request("GET", "/v1/me/bookings").get_json()["bookings"]
    assert [b["id"] for b in mine] == [current, done]
    assert "driver_rating" not in mine[0]
    assert mine[1]["my_rating"] is None  # The rider rated; the driver has not.
    completed = driver.request("GET", "/v1/me/bookings?status=completed").get_json()["bookings"]
    assert [b["id"] for b in completed] == [done]

    history = rider.request("GET", "/v1/me/bookings").get_json()["bookings"]
    assert history[0]["driver_rating"] is None and history[0]["status"] == "pending"
    assert history[1]["id"] == current
    assert history[1]["driver_rating"] == {"average": 4.0, "count": 1}
    assert history[1]["my_rating"] is None and history[2]["my_rating"]["stars"] == 4
    viewed = rider.request("GET", f"/v1/bookings/{current}").get_json()
    assert viewed["driver_id"] == driver_id
    assert viewed["driver_rating"] == {"average": 4.0, "count": 1}


@pytest.mark.parametrize(
    "query,field",
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("status=lost", "status"),
        ("cursor=%25%25", "cursor"),
        ("cursor=" + "A" * 65, "cursor"),
        ("cursor=Yjo3", "cursor"),  # An admin listing's old cursor ("b:7") is not a history's.
        ("cursor=azox", "cursor"),  # "k:1", cut short.
        ("rider_id=3", "rider_id"),
    ],
)
def test_bad_history_queries_are_named(party, query, field):
    rider = party[0]
    assert _error(rider.request("GET", f"/v1/me/bookings?{query}"), 422)["field"] == field


def test_the_default_history_page_is_twenty(party, committed_sessions):
    rider, _driver, rider_id, _driver_id = party
    # Past the booking rate limit of the API: made through the domain.
    with committed_sessions.begin() as s:
        for _ in range(21):
            make.booking(s, s.get(User, rider_id), now=dt.datetime.now(dt.UTC))
    page = rider.request("GET", "/v1/me/bookings").get_json()
    assert len(page["bookings"]) == 20 and page["next_cursor"] is not None


def test_admins_search_by_rider_driver_region_and_dates(api, party, committed_sessions):
    rider, driver, rider_id, driver_id = party
    other = api.as_(api.user("rider", "other")["token"])
    taken = _ride(committed_sessions, rider, driver)
    mine = [rider.request("POST", "/v1/bookings", json=GOOD).get_json()["id"] for _ in range(3)]
    theirs = other.request("POST", "/v1/bookings", json=GOOD).get_json()["id"]
    today = dt.datetime.now(dt.UTC).date()

    def ids(query: str) -> list[int]:
        return _pages(api, f"/v1/bookings?limit=2&{query}")

    assert ids(f"rider_id={rider_id}") == sorted([taken, *mine], reverse=True)
    assert ids(f"driver_id={driver_id}") == [taken]
    assert ids(f"driver_id={driver_id}&status=pending") == []
    assert ids("region=default") == sorted([taken, *mine, theirs], reverse=True)
    assert ids("region=elsewhere") == []
    assert ids(f"date_from={today}&date_to={today}") == sorted([taken, *mine, theirs], reverse=True)
    tomorrow = today + dt.timedelta(days=1)
    assert ids(f"date_from={tomorrow}") == []
    assert ids(f"date_to={today - dt.timedelta(days=1)}") == []


def test_an_admin_cursor_handed_out_before_still_pages(api, party):
    rider = party[0]
    made = [rider.request("POST", "/v1/bookings", json=GOOD).get_json()["id"] for _ in range(3)]

    old = base64.urlsafe_b64encode(f"b:{made[-1]}".encode()).decode().rstrip("=")
    page = api.request("GET", f"/v1/bookings?cursor={old}").get_json()
    assert [b["id"] for b in page["bookings"]] == [made[1], made[0]]


@pytest.mark.parametrize(
    "query,field",
    [
        ("rider_id=0", "rider_id"),
        ("driver_id=x", "driver_id"),
        ("region=" + "r" * 33, "region"),
        ("date_from=2026-13-01", "date_from"),
        ("date_to=tomorrow", "date_to"),
        ("date_from=2026-05-02&date_to=2026-05-01", "date_to"),
        ("cursor=azox", "cursor"),
    ],
)
def test_bad_admin_search_queries_are_named(api, query, field):
    assert _error(api.request("GET", f"/v1/bookings?{query}"), 422)["field"] == field


def test_each_party_rates_the_other_once(api, party, committed_sessions):
    rider, driver, rider_id, driver_id = party
    booking_id = _ride(committed_sessions, rider, driver)
    path = f"/v1/bookings/{booking_id}/rating"
    response = rider.request("POST", path, json={"stars": 5, "comment": " Cafe\u0301, thanks! "})
    assert response.status_code == 201
    body = response.get_json()
    assert body["stars"] == 5 and body["ratee_id"] == driver_id and body["rater_role"] == "rider"
    assert body["comment"] == "Caf\u00e9, thanks!"  # NFC, stripped.
    again = rider.request("POST", path, json={"stars": 1})
    assert _error(again, 409)["code"] == "already_rated"
    by_driver = driver.request("POST", path, json={"stars": 3, "comment": ""})
    assert by_driver.status_code == 201
    assert by_driver.get_json()["ratee_id"] == rider_id
    assert by_driver.get_json()["comment"] is None
    assert _error(driver.request("POST", path, json={"stars": 3}), 409)["code"] == "already_rated"


def test_the_wrong_party_or_an_unfinished_ride_is_refused(api, party, committed_sessions):
    rider, driver, _rider_id, _driver_id = party
    booking_id = _ride(committed_sessions, rider, driver, upto="start")
    path = f"/v1/bookings/{booking_id}/rating"
    assert _error(rider.request("POST", path, json={"stars": 5}), 409)["code"] == (
        "ride_not_completed"
    )
    stranger = api.as_(api.user("rider", "stranger")["token"])
    other_driver = api.as_(api.user("driver", "other driver")["token"])
    for outsider in (stranger, other_driver):
        assert _error(outsider.request("POST", path, json={"stars": 5}), 404)["code"] == (
            "not_found"
        )
    assert _error(api.request("POST", path, json={"stars": 5}), 403)["code"] == "forbidden"
    assert _error(rider.request("POST", "/v1/bookings/99999/rating", json={"stars": 5}), 404)


def test_a_rating_past_the_window_is_refused(api, party, committed_sessions):
    rider, driver, _rider_id, _driver_id = party
    booking_id = _ride(committed_sessions, rider, driver)
    with committed_sessions.begin() as s:
        s.execute(
            text(
                "UPDATE booking_events SET created_at = now() - interval '7 days 1 minute' "
                "WHERE booking_id = :id AND to_status = 'completed'"
            ),
            {"id": booking_id},
        )
    refused = rider.request("POST", f"/v1/bookings/{booking_id}/rating", json={"stars": 5})
    assert _error(refused, 409)["code"] == "rating_window_closed"


@pytest.mark.parametrize(
    "body,field",
    [
        ({}, "stars"),
        ({"stars": 0}, "stars"),
        ({"stars": 6}, "stars"),
        ({"stars": 4.5}, "stars"),
        ({"stars": "5"}, "stars"),
        ({"stars": True}, "stars"),
        ({"stars": 5, "comment": "x" * 501}, "comment"),
        ({"stars": 5, "comment": "a\u202eb"}, "comment"),
        ({"stars": 5, "comment": "a\u0000b"}, "comment"),
        ({"stars": 5, "comment": 7}, "comment"),
        ({"stars": 5, "tip": 1}, "tip"),
    ],
)
def test_bad_ratings_are_named_and_write_nothing(api, party, committed_sessions, body, field):
    rider, driver, _rider_id, _driver_id = party
    booking_id = _ride(committed_sessions, rider, driver)
    response = rider.request("POST", f"/v1/bookings/{booking_id}/rating", json=body)
    assert _error(response, 422)["field"] == field
    with committed_sessions() as s:
        assert s.scalar(text("SELECT count(*) FROM ratings")) == 0
        assert s.scalar(text("SELECT count(*) FROM rating_summaries")) == 0


def test_a_comment_is_bounded_after_normalisation(party, committed_sessions):
    rider, driver, _rider_id, _driver_id = party
    booking_id = _ride(committed_sessions, rider, driver)
    decomposed = "e\u0301" * 500  # 1000 code points as sent, 500 in NFC: at the bound.
    response = rider.request(
        "POST", f"/v1/bookings/{booking_id}/rating", json={"stars": 4, "comment": decomposed}
    )
    assert response.status_code == 201 and response.get_json()["comment"] == "\u00e9" * 500


def test_a_comment_keeps_its_line_breaks(party, committed_sessions):
    rider, driver, _rider_id, _driver_id = party
    booking_id = _ride(committed_sessions, rider, driver)
    response = rider.request(
        "POST", f"/v1/bookings/{booking_id}/rating", json={"stars": 2, "comment": "late\r\nrude"}
    )
    assert response.status_code == 201 and response.get_json()["comment"] == "late\nrude"


def test_admins_list_each_driver_with_their_rating_in_one_query(api, party, committed_sessions):
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    rider, driver, _rider_id, driver_id = party
    unrated_id = api.user("driver", "new")["id"]
    for stars in (4, 5):
        done = _ride(committed_sessions, rider, driver)
        rating = rider.request("POST", f"/v1/bookings/{done}/rating", json={"stars": stars})
        assert rating.status_code == 201

    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        response = api.request("GET", "/v1/admin/drivers")
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert response.status_code == 200
    ratings = {d["id"]: d["rating"] for d in response.get_json()["drivers"]}
    assert ratings == {driver_id: {"average": 4.5, "count": 2}, unrated_id: None}
    assert sum("rating_summaries" in s for s in statements) == 1
    # The answer keeps to what the OpenAPI document says of it.
    document = api.request("GET", "/openapi.json").get_json()
    described = document["paths"]["/v1/admin/drivers"]["get"]["responses"]["200"]
    schema = described["content"]["application/json"]["schema"]
    jsonschema.validate(response.get_json(), schema | {"components": document["components"]})
    assert "rating" in schema["properties"]["drivers"]["items"]["required"]


def test_a_rider_reads_who_they_are_and_how_drivers_rated_them(party, committed_sessions):
    rider, driver, rider_id, _driver_id = party
    me = rider.request("GET", "/v1/riders/me").get_json()
    assert (me["id"], me["role"], me["rating"]) == (rider_id, "rider", None)
    for stars in (4, 5):
        booking_id = _ride(committed_sessions, rider, driver)
        rated = driver.request("POST", f"/v1/bookings/{booking_id}/rating", json={"stars": stars})
        assert rated.status_code == 201
    assert rider.request("GET", "/v1/riders/me").get_json()["rating"] == {
        "average": 4.5,
        "count": 2,
    }
    assert _error(driver.request("GET", "/v1/riders/me"), 403)["code"] == "forbidden"
