"""Booking, quote and location endpoints are rate-limited per token and per address:
429 + Retry-After."""

from dataclasses import replace

import pytest

from web import create_app

GOOD = {"pickup": {"lat": 38.72, "lng": -9.14}, "dropoff": {"lat": 38.74, "lng": -9.15}}


@pytest.fixture
def limited(settings, api):
    app = create_app(
        replace(
            settings,
            batch_window_s=0,
            booking_limit_per_token="3/minute",
            booking_limit_per_address="5/minute",
            location_limit_per_token="2/minute",
            quote_limit_per_token="2/minute",
        )
    )
    yield app.test_client()
    app.extensions["smartroute"].engine.dispose()


def _post(client, token):
    return client.post("/v1/bookings", json=GOOD, headers={"Authorization": f"Bearer {token}"})


def test_a_token_over_its_booking_limit_gets_429_with_retry_after(api, limited):
    token = api.user("rider")["token"]
    assert [_post(limited, token).status_code for _ in range(3)] == [202, 202, 202]
    refused = _post(limited, token)
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    assert error["code"] == "rate_limited" and "token" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_many_tokens_from_one_address_hit_the_address_limit(api, limited):
    tokens = [api.user("rider", f"r{i}")["token"] for i in range(3)]
    codes = [_post(limited, tokens[i % 3]).status_code for i in range(6)]
    assert codes == [202] * 5 + [429]


def test_location_pings_are_limited_per_driver(api, limited):
    token = api.user("driver")["token"]
    auth = {"Authorization": f"Bearer {token}"}
    codes = [
        limited.put(
            "/v1/drivers/me/location", json={"lat": 38.7, "lng": -9.1}, headers=auth
        ).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]


def test_quotes_are_limited_per_rider(api, limited):
    auth = {"Authorization": f"Bearer {api.user('rider')['token']}"}
    codes = [limited.post("/v1/quotes", json=GOOD, headers=auth).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
