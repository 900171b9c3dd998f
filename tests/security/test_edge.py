"""The HTTP edge: limits that hold before authentication and behind a proxy, per-token limits
on refresh and driver actions, connections after a 413, who may read /health and /metrics,
and what a name may contain."""

from __future__ import annotations

import http.client
import json
import secrets

import pytest
import redis
from sqlalchemy import event

from dispatch.users import ensure_bootstrap_admin
from tests.security.conftest import SERVER_MAX_BODY_BYTES
from web.runtime import Runtime


def _runtime(client) -> Runtime:
    return client.application.extensions["smartroute"]


def _assert_rate_limited(response) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1


# Limits before authentication.


def test_random_tokens_from_one_address_are_refused_before_any_database_query(api, app_with):
    client = app_with(auth_failure_limit_per_address="60/minute")
    queries = []
    event.listen(
        _runtime(client).engine,
        "before_cursor_execute",
        lambda *args, **kwargs: queries.append(args[2]),
    )

    def guess():
        # An opaque token, as the bootstrap admin's is: only the database can say no to it.
        return client.get(
            "/v1/drivers/me", headers={"Authorization": f"Bearer {secrets.token_urlsafe(24)}"}
        )

    first = [guess().status_code for _ in range(60)]
    assert first == [401] * 60 and queries, "each of these was looked up"
    queries.clear()
    rest = [guess() for _ in range(140)]
    for response in rest:
        _assert_rate_limited(response)
    assert queries == []


def test_behind_one_trusted_proxy_each_client_has_its_own_address_limit(api, app_with):
    client = app_with(trusted_proxy_hops=1, request_limit_per_address="3/minute")
    token = api.user("driver")["token"]

    def call(client_address: str):
        return client.get(
            "/v1/drivers/me",
            environ_base={"REMOTE_ADDR": "10.0.0.1"},
            headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": client_address},
        )

    assert [call("203.0.113.5").status_code for _ in range(3)] == [200] * 3
    _assert_rate_limited(call("203.0.113.5"))
    # Another client behind the same proxy still gets in.
    assert call("203.0.113.6").status_code == 200


def test_without_trusted_hops_a_forged_forwarded_for_changes_nothing(api, app_with):
    client = app_with(request_limit_per_address="3/minute")
    token = api.user("driver")["token"]

    def call(i: int):
        return client.get(
            "/v1/drivers/me",
            headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": f"198.51.100.{i}"},
        )

    assert [call(i).status_code for i in range(3)] == [200] * 3
    _assert_rate_limited(call(3))


# Per-token limits.


def test_refreshing_a_token_is_limited_per_token(api, app_with):
    client = app_with(refresh_limit_per_token="2/hour")
    token = api.user("rider")["token"]
    # A refresh revokes the token it was made with: each goes on with its successor.
    for _ in range(2):
        answer = client.post("/v1/tokens", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 201
        token = answer.get_json()["token"]
    _assert_rate_limited(client.post("/v1/tokens", headers={"Authorization": f"Bearer {token}"}))


def test_driver_actions_over_http_are_limited_per_token(api, app_with):
    client = app_with(driver_action_limit_per_token="2/minute")
    auth = {"Authorization": f"Bearer {api.user('driver')['token']}"}
    # No such booking: the limit counts the attempts all the same.
    codes = [client.post("/v1/bookings/999999/accept", headers=auth).status_code for _ in range(2)]
    assert codes == [404, 404]
    _assert_rate_limited(client.post("/v1/bookings/999999/decline", headers=auth))


# Connections after a 413, on a real gunicorn.


def _bootstrap_admin(committed_sessions, settings) -> None:
    with committed_sessions.begin() as s:
        ensure_bootstrap_admin(s, settings.admin_token)


def _rider_token(port: int, admin_token: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST",
        "/v1/users",
        body=json.dumps({"name": "r", "role": "rider"}),
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    assert response.status == 201, response.read()
    token = json.loads(response.read())["token"]
    conn.close()
    return token


def _refused_then_next_request(conn: http.client.HTTPConnection) -> None:
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 413, body
    assert body["error"]["code"] == "request_entity_too_large"
    # The client is told the connection ends here, so it does not send its next request
    # into a connection the server is about to close.
    assert response.getheader("Connection") == "close"
    assert response.will_close
    # http.client opens a new connection for the next request, as it was told to.
    conn.request("GET", "/health/live")
    again = conn.getresponse()
    assert again.status == 200 and json.loads(again.read()) == {"status": "ok"}


def test_a_declared_oversized_body_is_refused_before_it_is_sent_and_the_connection_closed(
    api_server, committed_sessions, settings
):
    _bootstrap_admin(committed_sessions, settings)
    token = _rider_token(api_server, settings.admin_token)
    conn = http.client.HTTPConnection("127.0.0.1", api_server, timeout=10)
    try:
        conn.putrequest("POST", "/v1/bookings")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(10 * 2**20))
        conn.endheaders()
        # A sliver of the declared 10 MiB: the answer must not wait for the rest.
        conn.send(b"x" * 16 * 1024)
        _refused_then_next_request(conn)
    finally:
        conn.close()


def test_a_chunked_body_over_the_limit_is_refused_and_the_connection_closed(
    api_server, committed_sessions, settings
):
    _bootstrap_admin(committed_sessions, settings)
    token = _rider_token(api_server, settings.admin_token)
    conn = http.client.HTTPConnection("127.0.0.1", api_server, timeout=10)
    try:
        conn.putrequest("POST", "/v1/bookings")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"x" * SERVER_MAX_BODY_BYTES
        # Four times the limit, and no last chunk: a client still streaming.
        for _ in range(4):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        _refused_then_next_request(conn)
    finally:
        conn.close()


# Who may read /health and /metrics.


@pytest.mark.parametrize("path", ["/health", "/metrics"])
def test_health_and_metrics_need_the_metrics_token_or_an_admin_token(api, path, settings):
    anonymous = api.as_(None).request("GET", path)
    assert anonymous.status_code == 401
    assert anonymous.get_json()["error"]["code"] == "unauthorized"
    wrong = "x" * len(settings.metrics_token)
    assert api.as_(wrong).request("GET", path).status_code == 401
    assert api.as_(api.user("rider")["token"]).request("GET", path).status_code == 403
    assert api.as_(settings.metrics_token).request("GET", path).status_code == 200
    assert api.as_(settings.admin_token).request("GET", path).status_code == 200
    # Liveness stays public and cheap.
    assert api.as_(None).request("GET", "/health/live").status_code == 200


@pytest.mark.parametrize("path", ["/health", "/metrics"])
def test_health_and_metrics_open_no_new_redis_connection_per_call(
    app_with, settings, monkeypatch, path
):
    import web.health

    # Every call looks afresh, so each would open its connections if it opened any.
    monkeypatch.setattr(web.health, "CHECK_TTL_S", 0.0, raising=False)
    client = app_with()
    auth = {"Authorization": f"Bearer {settings.metrics_token}"}
    assert client.get(path, headers=auth).status_code == 200  # Pools fill on first use.
    server = redis.Redis.from_url(settings.redis_url)

    def opened() -> int:
        return server.info("stats")["total_connections_received"]

    before = opened()
    for _ in range(5):
        assert client.get(path, headers=auth).status_code == 200
    # Our own INFO call is the only new connection.
    assert opened() - before <= 1


# Names.


@pytest.mark.parametrize("name", ["evil\u202egnp.exe", "ad\u200bmin", "bell\u0007", "\ue000x"])
def test_names_with_format_control_or_private_use_characters_are_refused(api, name):
    response = api.request("POST", "/v1/users", json={"name": name, "role": "rider"})
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == "name"


def test_names_are_stored_nfc_and_their_length_counted_after(api):
    created = api.user("rider", "Jose\u0301")
    assert created["name"] == "Jos\u00e9"
    # 100 letters once composed, 200 code points as sent.
    long = api.user("rider", "e\u0301" * 100)
    assert long["name"] == "\u00e9" * 100
    too_long = api.request("POST", "/v1/users", json={"name": "e\u0301" * 101, "role": "rider"})
    assert too_long.status_code == 422
