"""Bad input gets a 4xx with one JSON error shape naming the field, and writes nothing."""

import pytest
from sqlalchemy import func, select

from dispatch.models import Booking, IdempotencyKey

GOOD = {"pickup": {"lat": 38.72, "lng": -9.14}, "dropoff": {"lat": 38.74, "lng": -9.15}}


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    return response.get_json()["error"]


@pytest.fixture
def rider(api):
    return api.as_(api.user("rider")["token"])


def _no_bookings(committed_sessions):
    with committed_sessions() as s:
        assert s.scalar(select(func.count()).select_from(Booking)) == 0
        assert s.scalar(select(func.count()).select_from(IdempotencyKey)) == 0


@pytest.mark.parametrize(
    "body,status,field,code",
    [
        ({**GOOD, "pickup": {"lat": "38.7", "lng": -9.1}}, 422, "pickup.lat", "invalid_field"),
        ({**GOOD, "pickup": {"lat": -90.5, "lng": -9.1}}, 422, "pickup.lat", "invalid_field"),
        ({**GOOD, "dropoff": {"lat": 38.7}}, 422, "dropoff.lng", "missing_field"),
        ({"dropoff": GOOD["dropoff"]}, 422, "pickup", "missing_field"),
        ({**GOOD, "driver_id": 3}, 422, "driver_id", "unknown_field"),
        ({**GOOD, "pickup_at": "next tuesday"}, 422, "pickup_at", "invalid_field"),
        ([GOOD], 400, None, "invalid_body"),
        ("null", 400, None, "invalid_body"),
    ],
)
def test_invalid_bookings_name_the_field(rider, committed_sessions, body, status, field, code):
    kwargs = (
        {"data": body, "content_type": "application/json"}
        if isinstance(body, str)
        else {"json": body}
    )
    error = _error(rider.request("POST", "/v1/bookings", **kwargs), status)
    assert (error.get("field"), error["code"]) == (field, code)
    assert error["message"]
    _no_bookings(committed_sessions)


@pytest.mark.parametrize("raw", ['{"pickup": ', "", "not json", "\xff\xfe"])
def test_malformed_json_is_a_400(rider, committed_sessions, raw):
    error = _error(
        rider.request("POST", "/v1/bookings", data=raw, content_type="application/json"), 400
    )
    assert error["code"] == "malformed_json"
    _no_bookings(committed_sessions)


def test_an_oversized_body_is_a_413(rider, settings, committed_sessions):
    padding = "x" * (settings.max_body_bytes + 1)
    error = _error(
        rider.request("POST", "/v1/bookings", data=padding, content_type="application/json"), 413
    )
    assert error["code"] == "request_entity_too_large"
    _no_bookings(committed_sessions)


@pytest.mark.parametrize("key", ["", "has space", "k" * 256, "caf\u00e9"])
def test_a_bad_idempotency_key_is_named(rider, committed_sessions, key):
    error = _error(
        rider.request("POST", "/v1/bookings", json=GOOD, headers={"Idempotency-Key": key}), 400
    )
    assert error["field"] == "Idempotency-Key"
    _no_bookings(committed_sessions)


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer nope", "Basic abc", "Bearer " + "x" * 300]
)
def test_missing_or_bad_tokens_are_401(api, header):
    headers = {} if header is None else {"Authorization": header}
    response = api.as_(None).request("POST", "/v1/bookings", json=GOOD, headers=headers)
    error = _error(response, 401)
    assert error["field"] == "Authorization"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_wrong_role_is_403(api):
    driver = api.as_(api.user("driver")["token"])
    assert _error(driver.request("POST", "/v1/bookings", json=GOOD), 403)["code"] == "forbidden"
    assert _error(driver.request("GET", "/v1/bookings"), 403)["code"] == "forbidden"
    assert (
        _error(driver.request("POST", "/v1/users", json={"name": "x", "role": "admin"}), 403)[
            "code"
        ]
        == "forbidden"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/v1/bookings/abc",
        "/v1/bookings/0",
        "/v1/bookings/-1",
        "/v1/bookings/99999999999999999999999",
        "/v1/nowhere",
    ],
)
def test_bad_ids_and_unknown_paths_are_json_404s(api, path):
    assert _error(api.request("GET", path), 404)["code"] == "not_found"


def test_a_wrong_method_is_a_json_405_with_allow(api):
    response = api.request("DELETE", "/v1/bookings")
    assert _error(response, 405)["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    "query,field",
    [
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("status=lost", "status"),
        ("date=yesterday", "date"),
        ("cursor=%25%25", "cursor"),
        ("sort=id", "sort"),
    ],
)
def test_bad_query_parameters_are_named(api, query, field):
    assert _error(api.request("GET", f"/v1/bookings?{query}"), 422)["field"] == field


@pytest.mark.parametrize(
    "body,field",
    [
        ({"name": "", "role": "rider"}, "name"),
        ({"name": "x" * 101, "role": "rider"}, "name"),
        ({"name": "\u0000b", "role": "admin"}, "name"),
        ({"name": "a\nb", "role": "rider"}, "name"),
        ({"name": "x", "role": "root"}, "role"),
        ({"name": "x"}, "role"),
    ],
)
def test_bad_users_are_named(api, body, field):
    assert _error(api.request("POST", "/v1/users", json=body), 422)["field"] == field


def test_driver_endpoints_validate_too(api):
    driver = api.as_(api.user("driver")["token"])
    assert (
        _error(driver.request("PUT", "/v1/drivers/me/location", json={"lat": 100, "lng": 0}), 422)[
            "field"
        ]
        == "lat"
    )
    assert (
        _error(driver.request("PUT", "/v1/drivers/me/status", json={"status": "busy"}), 422)[
            "field"
        ]
        == "status"
    )
    # Going available before any location ping is a conflict, not a silent success.
    assert (
        _error(driver.request("PUT", "/v1/drivers/me/status", json={"status": "available"}), 409)[
            "code"
        ]
        == "location_required"
    )
