"""Refreshing rotates: the presented token is revoked as its successor is issued, and a
token family cannot be refreshed past its maximum lifetime."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from dispatch.models import AccessToken


def _refresh(api, token: str):
    return api.as_(token).request("POST", "/v1/tokens")


def _status(api, token: str) -> int:
    return api.as_(token).request("GET", "/v1/drivers/me").status_code


def test_refreshing_revokes_the_presented_token(api):
    driver = api.user("driver", "d")
    response = _refresh(api, driver["token"])
    assert response.status_code == 201
    fresh = response.get_json()["token"]
    assert _status(api, fresh) == 200
    assert _status(api, driver["token"]) == 401
    # Whoever refreshes a stolen token second gets nothing, and the winner's token stands.
    assert _refresh(api, driver["token"]).status_code == 401
    assert _status(api, fresh) == 200


def test_a_family_cannot_be_refreshed_past_its_maximum_lifetime(api, settings, committed_sessions):
    driver = api.user("driver", "d")
    lifetime = dt.timedelta(seconds=settings.token_max_lifetime_s)
    # First signed in a little under the maximum lifetime ago.
    started = dt.datetime.now(dt.UTC).replace(microsecond=0) - lifetime + dt.timedelta(hours=1)
    with committed_sessions.begin() as s:
        s.execute(
            update(AccessToken)
            .where(AccessToken.id == driver["token_id"])
            .values(session_started_at=started, issued_at=started)
        )

    response = _refresh(api, driver["token"])
    assert response.status_code == 201
    fresh = response.get_json()
    # The successor belongs to the same family and ends with it, not a full TTL later.
    assert dt.datetime.fromisoformat(fresh["expires_at"]) <= started + lifetime
    with committed_sessions() as s:
        carried = s.scalar(
            select(AccessToken.session_started_at).where(AccessToken.id == fresh["token_id"])
        )
    assert carried == started

    # Once the family is past it, a refresh is refused, though the token itself is live.
    with committed_sessions.begin() as s:
        s.execute(
            update(AccessToken)
            .where(AccessToken.id == fresh["token_id"])
            .values(
                session_started_at=started - dt.timedelta(hours=2),
                issued_at=started - dt.timedelta(hours=2),
            )
        )
    refused = _refresh(api, fresh["token"])
    assert refused.status_code == 401
    assert refused.get_json()["error"]["field"] == "Authorization"
    assert _status(api, fresh["token"]) == 200


def test_the_bootstrap_admin_token_is_not_refreshed(api):
    response = api.request("POST", "/v1/tokens")
    assert response.status_code == 403
    assert api.request("GET", "/v1/stats").status_code == 200
