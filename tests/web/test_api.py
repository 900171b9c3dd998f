"""The API's happy paths, in-process against real Postgres and the real broker."""

import base64
import json
from dataclasses import replace

import redis

from smartroute.infra.enqueue import set_batch_window
from web import create_app

GOOD = {"pickup": {"lat": 38.72, "lng": -9.14}, "dropoff": {"lat": 38.74, "lng": -9.15}}


def test_a_booking_is_accepted_committed_and_enqueued(api, settings):
    rider = api.as_(api.user("rider")["token"])
    response = rider.request("POST", "/v1/bookings", json=GOOD)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "pending" and body["version"] == 1
    assert response.headers["Location"] == f"/v1/bookings/{body['id']}"
    assert rider.request("GET", response.headers["Location"]).get_json()["id"] == body["id"]
    # The message is on the region's dispatch queue, as JSON naming the booking.
    queued = redis.Redis.from_url(settings.redis_url).lrange("dispatch.default", 0, -1)
    assert len(queued) == 1
    message = json.loads(queued[0])
    assert message["headers"]["task"] == "workers.tasks.match_booking"
    assert json.loads(base64.b64decode(message["body"]))[0] == [body["id"]]


def test_a_retry_with_the_same_key_gets_the_same_booking_and_no_second_message(api, settings):
    rider = api.as_(api.user("rider")["token"])
    first = rider.request("POST", "/v1/bookings", json=GOOD, headers={"Idempotency-Key": "abc"})
    again = rider.request("POST", "/v1/bookings", json=GOOD, headers={"Idempotency-Key": "abc"})
    assert first.get_json()["id"] == again.get_json()["id"]
    assert redis.Redis.from_url(settings.redis_url).llen("dispatch.default") == 1
    other = rider.request(
        "POST",
        "/v1/bookings",
        json={**GOOD, "dropoff": GOOD["pickup"]},
        headers={"Idempotency-Key": "abc"},
    )
    assert other.status_code == 422
    assert other.get_json()["error"]["code"] == "idempotency_key_reused"


def test_admins_page_through_bookings_newest_first(api):
    rider = api.as_(api.user("rider")["token"])
    ids = [rider.request("POST", "/v1/bookings", json=GOOD).get_json()["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        page = api.request(
            "GET", "/v1/bookings?limit=2&status=pending" + (f"&cursor={cursor}" if cursor else "")
        ).get_json()
        seen += [b["id"] for b in page["bookings"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    assert api.request("GET", "/v1/bookings?status=completed").get_json()["bookings"] == []


def test_a_rider_cannot_see_another_riders_booking(api):
    owner = api.as_(api.user("rider", "owner")["token"])
    other = api.as_(api.user("rider", "other")["token"])
    booking_id = owner.request("POST", "/v1/bookings", json=GOOD).get_json()["id"]
    assert other.request("GET", f"/v1/bookings/{booking_id}").status_code == 404
    assert other.request("POST", f"/v1/bookings/{booking_id}/cancel").status_code == 404
    cancelled = owner.request("POST", f"/v1/bookings/{booking_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    again = owner.request("POST", f"/v1/bookings/{booking_id}/cancel")
    assert again.status_code == 409
    assert again.get_json()["error"]["current_status"] == "cancelled"


def test_a_driver_goes_available_and_sees_itself(api):
    driver = api.as_(api.user("driver")["token"])
    assert (
        driver.request(
            "PUT", "/v1/drivers/me/location", json={"lat": 38.7, "lng": -9.1}
        ).status_code
        == 200
    )
    me = driver.request("PUT", "/v1/drivers/me/status", json={"status": "available"}).get_json()
    assert me["status"] == "available" and me["current_booking"] is None
    assert me["location"] == {"lat": 38.7, "lng": -9.1}


def test_health_reports_each_dependency(api):
    body = api.request("GET", "/health").get_json()
    assert body["status"] == "ok"
    assert body["database"]["status"] == "ok" and body["redis"]["status"] == "ok"


def _queued_dispatches(settings) -> list[dict]:
    client = redis.Redis.from_url(settings.redis_url)
    return [json.loads(m) for m in client.lrange("dispatch.default", 0, -1)]


def test_with_a_batch_window_a_region_gets_one_batch_per_window(api, settings):
    batching = create_app(replace(settings, batch_window_s=30, batch_window_min_s=30))
    try:
        rider = api.as_(api.user("rider")["token"])
        client = batching.test_client()
        auth = {"Authorization": f"Bearer {rider.token}"}
        for _ in range(3):
            assert client.post("/v1/bookings", json=GOOD, headers=auth).status_code == 202
        queued = _queued_dispatches(settings)
        assert len(queued) == 1
        message = queued[0]
        assert message["headers"]["task"] == "workers.tasks.dispatch_region"
        assert message["headers"]["eta"] is not None  # Runs when the window closes.
        region, window_s, _due_at = json.loads(base64.b64decode(message["body"]))[0]
        assert (region, window_s) == ("default", 30.0)
    finally:
        batching.extensions["smartroute"].engine.dispose()


def test_a_region_batches_over_the_window_its_last_batch_set(api, settings):
    """The adaptive window: bookings wait what the region's last batch chose, within the
    configured bounds, and the first batch of a quiet region waits the shortest."""
    batching = create_app(replace(settings, batch_window_s=30, batch_window_min_s=10))
    cache = redis.Redis.from_url(settings.redis_url)
    try:
        rider = api.as_(api.user("rider")["token"])
        client = batching.test_client()
        auth = {"Authorization": f"Bearer {rider.token}"}
        assert client.post("/v1/bookings", json=GOOD, headers=auth).status_code == 202
        cache.delete("smartroute:batch-scheduled:default")
        set_batch_window(cache, "default", 20)
        for _ in range(2):
            assert client.post("/v1/bookings", json=GOOD, headers=auth).status_code == 202
        queued = _queued_dispatches(settings)
        windows = [json.loads(base64.b64decode(m["body"]))[0][1] for m in queued]
        assert sorted(windows) == [10.0, 20.0]
    finally:
        cache.delete("smartroute:batch-window:default")
        batching.extensions["smartroute"].engine.dispose()


def test_admins_read_why_a_booking_got_its_driver(api, committed_sessions):
    import datetime as dt

    from dispatch.eta import GreatCircleEta
    from dispatch.matching.batch import dispatch_region
    from dispatch.matching.policy import MatchPolicy

    rider = api.as_(api.user("rider")["token"])
    driver = api.as_(api.user("driver")["token"])
    driver.request("PUT", "/v1/drivers/me/location", json=GOOD["pickup"])
    driver.request("PUT", "/v1/drivers/me/status", json={"status": "available"})
    booking_id = rider.request("POST", "/v1/bookings", json=GOOD).get_json()["id"]
    with committed_sessions.begin() as s:
        dispatch_region(s, "default", MatchPolicy(), GreatCircleEta(), now=dt.datetime.now(dt.UTC))

    log = api.request("GET", f"/v1/bookings/{booking_id}/dispatch-log").get_json()
    assert log["status"] == "assigned"
    [attempt] = log["attempts"]
    assert attempt["outcome"] == "assigned" and attempt["matcher"] == "batched"
    assert attempt["candidates"][0]["chosen"] and attempt["candidates"][0]["reason"] == "offered"
    assert rider.request("GET", f"/v1/bookings/{booking_id}/dispatch-log").status_code == 403
    assert api.request("GET", "/v1/bookings/999999/dispatch-log").status_code == 404


def test_a_booking_goes_to_its_regions_queue(api, settings):
    from dispatch.regions import parse_regions

    regional = create_app(
        replace(settings, batch_window_s=0, regions=parse_regions("porto:41.0,-8.8,41.3,-8.5"))
    )
    try:
        rider = api.as_(api.user("rider")["token"])
        auth = {"Authorization": f"Bearer {rider.token}"}
        porto = {"pickup": {"lat": 41.15, "lng": -8.61}, "dropoff": {"lat": 41.16, "lng": -8.6}}
        booked = regional.test_client().post("/v1/bookings", json=porto, headers=auth).get_json()
        assert booked["region"] == "porto"
        broker = redis.Redis.from_url(settings.redis_url)
        assert broker.llen("dispatch.porto") == 1 and broker.llen("dispatch.default") == 0
    finally:
        redis.Redis.from_url(settings.redis_url).delete("dispatch.porto")
        regional.extensions["smartroute"].engine.dispose()


def test_a_window_planted_in_redis_is_held_within_the_configured_bounds(api, settings):
    """Whatever Redis holds for a region's window, a booking waits within the bounds."""
    batching = create_app(replace(settings, batch_window_s=30, batch_window_min_s=10))
    cache = redis.Redis.from_url(settings.redis_url)
    try:
        rider = api.as_(api.user("rider")["token"])
        auth = {"Authorization": f"Bearer {rider.token}"}
        windows = []
        for planted in (b"999999999", b"0", b"not a number"):
            cache.delete("smartroute:batch-scheduled:default", "dispatch.default")
            cache.set("smartroute:batch-window:default", planted)
            response = batching.test_client().post("/v1/bookings", json=GOOD, headers=auth)
            assert response.status_code == 202
            [message] = _queued_dispatches(settings)
            windows.append(json.loads(base64.b64decode(message["body"]))[0][1])
        assert windows == [30.0, 10.0, 10.0]
    finally:
        cache.delete("smartroute:batch-window:default")
        batching.extensions["smartroute"].engine.dispose()
