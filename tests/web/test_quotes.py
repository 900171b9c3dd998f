"""``POST /v1/quotes``, bookings on a quote, the fare in the booking body, surge in the
stats and the metrics: in-process against real PostgreSQL and Redis."""

import datetime as dt

import pytest
from sqlalchemy import text, update

from dispatch import surge
from dispatch.eta import GreatCircleEta
from dispatch.matching.batch import dispatch_region
from dispatch.matching.policy import MatchPolicy
from dispatch.models import Quote

TRIP = {"pickup": {"lat": 38.72, "lng": -9.14}, "dropoff": {"lat": 38.74, "lng": -9.15}}


@pytest.fixture
def rider(api):
    return api.as_(api.user("rider")["token"])


def _quote(rider) -> dict:
    response = rider.request("POST", "/v1/quotes", json=TRIP)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.get_json()
    return response.get_json()["error"]


def test_a_quote_names_its_price_eta_and_expiry(api, rider):
    driver = api.as_(api.user("driver")["token"])
    driver.request("PUT", "/v1/drivers/me/location", json={"lat": 38.73, "lng": -9.14})
    driver.request("PUT", "/v1/drivers/me/status", json={"status": "available"})
    quote = _quote(rider)
    fare = quote["fare"]
    assert set(fare) >= {"amount", "currency", "base", "distance", "time", "surge_multiplier"}
    assert fare["currency"] == "EUR" and fare["surge_multiplier"] == 1.0
    assert fare["amount"] == fare["base"] + fare["distance"] + fare["time"]
    assert all(isinstance(fare[k], int) for k in ("amount", "base", "distance", "time"))
    assert isinstance(quote["pickup_eta_s"], int) and quote["pickup_eta_s"] > 0
    expires_at = dt.datetime.fromisoformat(quote["expires_at"])
    assert (
        dt.timedelta(seconds=250)
        < expires_at - dt.datetime.now(dt.UTC)
        <= dt.timedelta(seconds=300)
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pickup": TRIP["pickup"]}, "dropoff"),
        ({**TRIP, "pickup": {"lat": 91, "lng": 0}}, "pickup.lat"),
        ({**TRIP, "pickup_at": "2020-01-01T00:00:00Z"}, "pickup_at"),
        ({**TRIP, "price": 1}, "price"),
    ],
)
def test_bad_quotes_name_the_field(rider, body, field):
    assert _error(rider.request("POST", "/v1/quotes", json=body), 422)["field"] == field


def test_only_riders_ask_for_quotes(api):
    driver = api.as_(api.user("driver")["token"])
    assert _error(driver.request("POST", "/v1/quotes", json=TRIP), 403)["code"] == "forbidden"
    assert _error(api.as_(None).request("POST", "/v1/quotes", json=TRIP), 401)


def test_a_booking_on_a_quote_carries_its_price_and_a_quote_prices_one_booking(rider):
    quote = _quote(rider)
    response = rider.request("POST", "/v1/bookings", json={**TRIP, "quote_id": quote["quote_id"]})
    assert response.status_code == 202, response.get_json()
    booking = response.get_json()
    assert booking["quote_id"] == quote["quote_id"]
    assert booking["fare"]["amount"] == quote["fare"]["amount"]
    assert booking["fare"]["final"] is False
    again = rider.request("POST", "/v1/bookings", json={**TRIP, "quote_id": quote["quote_id"]})
    error = _error(again, 409)
    assert (error["code"], error["field"]) == ("quote_used", "quote_id")


def test_a_booking_without_a_quote_is_priced_too(rider):
    booking = rider.request("POST", "/v1/bookings", json=TRIP).get_json()
    assert booking["quote_id"] is not None and booking["fare"]["currency"] == "EUR"


def test_an_expired_quote_is_a_409(rider, committed_sessions):
    quote = _quote(rider)
    with committed_sessions.begin() as s:
        s.execute(
            update(Quote)
            .where(Quote.id == quote["quote_id"])
            .values(
                created_at=text("now() - interval '10 minutes'"),
                expires_at=text("now() - interval '1 second'"),
            )
        )
    response = rider.request("POST", "/v1/bookings", json={**TRIP, "quote_id": quote["quote_id"]})
    error = _error(response, 409)
    assert (error["code"], error["field"]) == ("quote_expired", "quote_id")


def test_someone_elses_unknown_or_malformed_quote_is_named(api, rider):
    quote = _quote(rider)
    other = api.as_(api.user("rider", "other")["token"])
    for quote_id in (quote["quote_id"], 999_999):
        error = _error(
            other.request("POST", "/v1/bookings", json={**TRIP, "quote_id": quote_id}), 422
        )
        assert (error["code"], error["field"]) == ("quote_not_found", "quote_id")
    for bad in ("1", 0, -1, 2**63):
        error = _error(rider.request("POST", "/v1/bookings", json={**TRIP, "quote_id": bad}), 422)
        assert error["field"] == "quote_id"


def test_a_quote_is_for_its_own_trip(rider):
    quote = _quote(rider)
    elsewhere = {**TRIP, "dropoff": {"lat": 38.80, "lng": -9.15}, "quote_id": quote["quote_id"]}
    error = _error(rider.request("POST", "/v1/bookings", json=elsewhere), 422)
    assert (error["code"], error["field"], error["place"]) == (
        "quote_mismatch",
        "quote_id",
        "dropoff",
    )


def test_a_completed_ride_shows_its_final_fare(api, rider, committed_sessions):
    driver = api.as_(api.user("driver")["token"])
    driver.request("PUT", "/v1/drivers/me/location", json=TRIP["pickup"])
    driver.request("PUT", "/v1/drivers/me/status", json={"status": "available"})
    quote = _quote(rider)
    booking_id = rider.request(
        "POST", "/v1/bookings", json={**TRIP, "quote_id": quote["quote_id"]}
    ).get_json()["id"]
    with committed_sessions.begin() as s:
        dispatch_region(s, "default", MatchPolicy(), GreatCircleEta(), now=dt.datetime.now(dt.UTC))
    for action in ("accept", "start", "complete"):
        response = driver.request("POST", f"/v1/bookings/{booking_id}/{action}")
        assert response.status_code == 200, response.get_json()
    done = response.get_json()
    # A trip of a moment: the measured fare is below the quote, so the quote is the price.
    assert done["fare"]["final"] is True
    assert done["fare"]["amount"] == quote["fare"]["amount"]
    assert done["fare"]["measured_amount"] <= quote["fare"]["amount"]
    assert rider.request("GET", f"/v1/bookings/{booking_id}").get_json()["fare"] == done["fare"]


def test_surge_shows_in_the_stats_the_overview_and_the_metrics(
    api, rider, committed_sessions, settings
):
    for _ in range(3):
        rider.request("POST", "/v1/bookings", json=TRIP)
    with committed_sessions.begin() as s:
        levels = surge.recompute(s, (), MatchPolicy(), surge.SurgePolicy(smoothing_pct=100))
    assert levels["default"].multiplier_pct == 300  # three waiting, nobody to drive
    stats = api.request("GET", "/v1/stats").get_json()
    assert stats["surge"]["default"] == {
        "multiplier": 3.0,
        "demand": 3,
        "supply": 0,
        "updated_at": stats["surge"]["default"]["updated_at"],
    }
    assert stats["today"]["by_region"]["default"]["total"] == 3
    assert (
        api.request("GET", "/v1/admin/overview").get_json()["surge"]["default"]["multiplier"] == 3.0
    )
    assert _quote(rider)["fare"]["surge_multiplier"] == 3.0
    metrics = api.as_(settings.metrics_token).request("GET", "/metrics").get_data(as_text=True)
    assert 'smartroute_surge_multiplier{region="default"} 3.0' in metrics


def test_the_openapi_document_describes_quotes_and_fares(api):
    document = api.request("GET", "/openapi.json").get_json()
    assert "/v1/quotes" in document["paths"]
    booking_body = document["paths"]["/v1/bookings"]["post"]["requestBody"]
    assert "quote_id" in booking_body["content"]["application/json"]["schema"]["properties"]
    assert "Fare" in document["components"]["schemas"]
