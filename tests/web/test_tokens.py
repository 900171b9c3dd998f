"""Tokens over HTTP: issued signed and expiring, refreshed, revoked, and refused after."""

import datetime as dt
from dataclasses import replace

import jwt
import pytest
from sqlalchemy import func, update

from dispatch import tokens
from dispatch.models import AccessToken
from dispatch.users import ensure_bootstrap_admin, get_user
from smartroute.infra import token_cache
from tests.support import wait_for
from tests.web.conftest import Api
from web import create_app

GOOD = {"pickup": {"lat": 38.72, "lng": -9.14}, "dropoff": {"lat": 38.74, "lng": -9.15}}


def _status(api, token: str, path: str = "/v1/drivers/me") -> int:
    return api.as_(token).request("GET", path).status_code


@pytest.fixture
def driver(api):
    return api.user("driver", "d")


def test_a_new_users_token_is_signed_and_expires(api, driver, settings):
    claims = jwt.decode(driver["token"], options={"verify_signature": False})
    assert claims["sub"] == str(driver["id"]) and claims["role"] == "driver"
    expires = dt.datetime.fromisoformat(driver["expires_at"])
    assert claims["exp"] == int(expires.timestamp())
    lifetime = expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=settings.token_ttl_s - 60) < lifetime
    assert lifetime <= dt.timedelta(seconds=settings.token_ttl_s)
    assert _status(api, driver["token"]) == 200


def test_an_expired_token_is_refused_even_though_its_row_is_live(
    api, driver, settings, committed_sessions
):
    with committed_sessions.begin() as s:
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        expired, _ = tokens.issue(
            s, get_user(s, driver["id"]), settings.secret_key, 60, now=long_ago
        )
    response = api.as_(expired).request("GET", "/v1/drivers/me")
    assert response.status_code == 401
    assert response.get_json()["error"]["field"] == "Authorization"


def test_a_forged_token_is_refused(api, driver, settings):
    claims = jwt.decode(driver["token"], options={"verify_signature": False})
    as_admin = jwt.encode(claims | {"role": "admin"}, "x" * 32, algorithm="HS256")
    assert _status(api, as_admin, "/v1/stats") == 401
    # Signed with the right key but naming a row that belongs to someone else.
    stolen_row = jwt.encode(claims | {"sub": "999999"}, settings.secret_key, algorithm="HS256")
    assert _status(api, stolen_row) == 401


def test_signing_out_revokes_that_token_only(api, driver, app):
    second = api.request("POST", f"/v1/users/{driver['id']}/tokens")
    assert second.status_code == 201
    fresh = second.get_json()["token"]
    assert fresh != driver["token"] and _status(api, fresh) == 200

    assert api.as_(driver["token"]).request("DELETE", "/v1/tokens/current").status_code == 204
    assert _status(api, driver["token"]) == 401
    assert _status(api, fresh) == 200
    cache = app.extensions["smartroute"].redis
    signed_out = tokens.hash_token(driver["token"])
    assert cache.get(token_cache.NOTE_PREFIX + signed_out) is None
    assert token_cache.revoked(cache, [signed_out])


def test_an_admin_revokes_every_token_of_a_user(api, driver, committed_sessions):
    rider = api.user("rider", "r")
    fresh = api.request("POST", f"/v1/users/{driver['id']}/tokens").get_json()["token"]

    response = api.request("DELETE", f"/v1/users/{driver['id']}/tokens")
    assert response.get_json() == {"user_id": driver["id"], "revoked": 2}
    assert _status(api, driver["token"]) == 401 and _status(api, fresh) == 401
    assert api.as_(rider["token"]).request("POST", "/v1/bookings", json=GOOD).status_code == 202
    with committed_sessions() as s:
        live = s.query(AccessToken).filter_by(user_id=driver["id"], revoked_at=None).count()
    assert live == 0

    reissued = api.request("POST", f"/v1/users/{driver['id']}/tokens")
    assert reissued.status_code == 201 and _status(api, reissued.get_json()["token"]) == 200


def test_tokens_of_a_user_who_does_not_exist(api):
    assert api.request("POST", "/v1/users/999999/tokens").status_code == 404
    assert api.request("DELETE", "/v1/users/999999/tokens").status_code == 404


def test_only_a_hash_of_a_token_is_stored(api, driver, committed_sessions):
    with committed_sessions() as s:
        stored = s.query(AccessToken.token_hash).filter_by(user_id=driver["id"]).scalar()
    assert stored == tokens.hash_token(driver["token"]) and driver["token"] not in stored


def test_the_database_is_asked_again_once_its_word_on_a_token_lapses(
    settings, clean_db, committed_sessions
):
    # Revoked behind the API's back (in SQL, so Redis hears nothing, as if it had been
    # unreachable): the API goes on trusting the database's earlier yes, for a second here.
    app = create_app(replace(settings, token_recheck_s=1))
    try:
        api = Api(app.test_client(), settings.admin_token)
        with committed_sessions.begin() as s:
            ensure_bootstrap_admin(s, settings.admin_token)
        driver = api.user("driver", "d")
        assert _status(api, driver["token"]) == 200
        with committed_sessions.begin() as s:
            s.execute(
                update(AccessToken)
                .where(AccessToken.user_id == driver["id"])
                .values(revoked_at=func.now())
            )
        assert _status(api, driver["token"]) == 200, "the database was asked at once"
        wait_for(
            lambda: _status(api, driver["token"]) == 401, 5, "the API to ask the database again"
        )
    finally:
        app.extensions["smartroute"].engine.dispose()
