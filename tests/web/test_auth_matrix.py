"""Every endpoint × every caller: no token is 401, the wrong role 403, the right one gets in.

The table must name every route the app serves, so a new endpoint cannot slip in
without deciding who may call it.
"""

import pytest

GOOD = {"pickup": {"lat": 38.72, "lng": -9.14}, "dropoff": {"lat": 38.74, "lng": -9.15}}
PUBLIC = "public"
# (method, route pattern, concrete path, body, roles allowed past authentication)
MATRIX = [
    ("POST", "/v1/users", "/v1/users", {"name": "x", "role": "rider"}, {"admin"}),
    ("POST", "/v1/bookings", "/v1/bookings", GOOD, {"rider"}),
    ("POST", "/v1/quotes", "/v1/quotes", GOOD, {"rider"}),
    ("GET", "/v1/bookings", "/v1/bookings", None, {"admin"}),
    ("GET", "/v1/bookings/<id:booking_id>", "/v1/bookings/{b}", None, {"rider", "driver", "admin"}),
    (
        "POST",
        "/v1/bookings/<id:booking_id>/cancel",
        "/v1/bookings/{b}/cancel",
        None,
        {"rider", "driver", "admin"},
    ),
    *[
        (
            "POST",
            "/v1/bookings/<id:booking_id>/<any(accept, decline, arrive, start, complete):action>",
            f"/v1/bookings/{{b}}/{action}",
            None,
            {"driver"},
        )
        for action in ("accept", "decline", "arrive", "start", "complete")
    ],
    ("POST", "/v1/bookings/<id:booking_id>/no-show", "/v1/bookings/{b}/no-show", None, {"driver"}),
    (
        "POST",
        "/v1/bookings/<id:booking_id>/force-complete",
        "/v1/bookings/{b}/force-complete",
        {"reason": "the driver's phone died"},
        {"admin"},
    ),
    (
        "GET",
        "/v1/bookings/<id:booking_id>/dispatch-log",
        "/v1/bookings/{b}/dispatch-log",
        None,
        {"admin"},
    ),
    (
        "POST",
        "/v1/bookings/<id:booking_id>/rating",
        "/v1/bookings/{b}/rating",
        {"stars": 5},
        {"rider", "driver"},
    ),
    ("GET", "/v1/me/bookings", "/v1/me/bookings", None, {"rider", "driver"}),
    ("GET", "/v1/drivers/me", "/v1/drivers/me", None, {"driver"}),
    ("GET", "/v1/riders/me", "/v1/riders/me", None, {"rider"}),
    ("PUT", "/v1/drivers/me/location", "/v1/drivers/me/location", {"lat": 1, "lng": 1}, {"driver"}),
    ("PUT", "/v1/drivers/me/status", "/v1/drivers/me/status", {"status": "offline"}, {"driver"}),
    ("GET", "/v1/stats", "/v1/stats", None, {"admin"}),
    ("POST", "/v1/tokens", "/v1/tokens", None, {"rider", "driver", "admin"}),
    ("DELETE", "/v1/tokens/current", "/v1/tokens/current", None, {"rider", "driver", "admin"}),
    ("POST", "/v1/users/<id:user_id>/tokens", "/v1/users/{u}/tokens", None, {"admin"}),
    ("DELETE", "/v1/users/<id:user_id>/tokens", "/v1/users/{u}/tokens", None, {"admin"}),
    ("GET", "/v1/admin/drivers", "/v1/admin/drivers", None, {"admin"}),
    ("GET", "/v1/admin/bookings/open", "/v1/admin/bookings/open", None, {"admin"}),
    ("GET", "/v1/admin/overview", "/v1/admin/overview", None, {"admin"}),
    # The detailed health and the metrics also take the metrics token (tests/security).
    ("GET", "/health", "/health", None, {"admin"}),
    ("GET", "/health/live", "/health/live", None, PUBLIC),
    ("GET", "/metrics", "/metrics", None, {"admin"}),
    ("GET", "/openapi.json", "/openapi.json", None, PUBLIC),
    # The console's pages and files hold no data: the token is pasted in and sent to /v1.
    ("GET", "/admin", "/admin", None, PUBLIC),
    ("GET", "/driver", "/driver", None, PUBLIC),
    ("GET", "/rider", "/rider", None, PUBLIC),
    ("GET", "/console/config.json", "/console/config.json", None, PUBLIC),
    (
        "GET",
        "/console/static/<path:filename>",
        "/console/static/vendor/socket.io.min.js",
        None,
        PUBLIC,
    ),
]
CALLERS = ("nobody", "rider", "driver", "admin")


def test_the_matrix_names_every_route(app):
    served = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
        if rule.endpoint != "static"
    }
    assert served == {(method, pattern) for method, pattern, *_ in MATRIX}


@pytest.fixture
def callers(api):
    # A signed admin token: the bootstrap one is not refreshed (POST /v1/tokens is 403).
    users = {role: api.user(role, role) for role in ("rider", "driver", "admin")}
    tokens = {role: user["token"] for role, user in users.items()}
    booking = api.as_(tokens["rider"]).request("POST", "/v1/bookings", json=GOOD).get_json()
    # The user whose tokens admins issue and revoke: someone not in the matrix's callers.
    bystander = api.user("rider", "bystander")
    return {"nobody": None, **tokens}, booking["id"], bystander["id"]


@pytest.mark.parametrize(
    "method,pattern,path,body,allowed", MATRIX, ids=[f"{m} {p}" for m, _, p, *_ in MATRIX]
)
def test_who_may_call_what(api, callers, method, pattern, path, body, allowed):
    tokens, booking_id, user_id = callers
    for caller in CALLERS:
        response = api.as_(tokens[caller]).request(
            method, path.format(b=booking_id, u=user_id), json=body
        )
        status = response.status_code
        if allowed == PUBLIC:
            assert status < 400, (caller, status)
        elif caller == "nobody":
            assert status == 401, (caller, status)
        elif caller in allowed:
            assert status not in (401, 403), (caller, status, response.get_data(as_text=True))
        else:
            assert status == 403, (caller, status)
        assert response.status_code != 500
        response.close()  # A static file's answer holds the file open until closed.
