"""Beat's rebalancing task: scheduled, and pushing ``reposition`` on the relays' channel to
each chosen driver once per interval, run in-process on the test services as a worker
would run it."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import redis
from prometheus_client import REGISTRY

from beat_schedule import beat_schedule
from smartroute.infra.push import CHANNEL
from tests import factories as make
from tests.security.conftest import worker_context  # noqa: F401 - the in-process task context


def test_beat_suggests_repositioning_on_its_own_interval(settings):
    entry = beat_schedule(settings)["suggest-repositioning"]
    assert entry["task"] == "workers.tasks.suggest_repositioning"
    assert entry["schedule"] == settings.rebalance_every_s
    assert entry["kwargs"] == {"interval_s": settings.rebalance_every_s}
    assert entry["options"]["queue"] == "maintenance"


@pytest.fixture
def channel(settings):
    """A subscriber to the relays' channel, as a relay's RedisManager is."""
    pubsub = redis.Redis.from_url(settings.redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    pubsub.get_message(timeout=1)  # The subscription's confirmation.
    yield pubsub
    pubsub.close()


def suggestions(channel) -> list[dict]:
    found = []
    while (message := channel.get_message(timeout=0.5)) is not None:
        body = json.loads(message["data"])
        if body["event"] == "reposition":
            found.append(body)
    return found


def test_an_idle_driver_is_told_where_bookings_are_expected_once_per_interval(
    worker_context,  # noqa: F811
    committed_sessions,
    channel,
):
    from workers import tasks

    now = dt.datetime.now(dt.UTC)
    with committed_sessions.begin() as s:
        rider = make.rider(s)
        for _ in range(6):
            make.booking(s, rider, make.LISBON, now=now)
        driver_id = make.driver(s, make.offset(make.LISBON, east_km=1.5), now=now).user_id
    counted = REGISTRY.get_sample_value(
        "smartroute_reposition_suggestions_total", {"region": "default"}
    )
    assert tasks.suggest_repositioning(interval_s=60) == {"default": 1}
    [pushed] = suggestions(channel)
    assert pushed["room"] == f"driver_{driver_id}" and pushed["method"] == "emit"
    [data] = pushed["data"]
    assert set(data) == {"zone", "lat", "lng", "reason", "expires_at"}
    assert abs(data["lat"] - make.LISBON.lat) < 0.01 and abs(data["lng"] - make.LISBON.lng) < 0.01
    assert data["reason"].startswith(f"zone {data['zone']} expects ")
    expires = dt.datetime.fromisoformat(data["expires_at"])
    assert dt.timedelta(seconds=55) < expires - now < dt.timedelta(seconds=65)
    assert (
        REGISTRY.get_sample_value("smartroute_reposition_suggestions_total", {"region": "default"})
        == (counted or 0) + 1
    )
    # Within the interval the same driver is not told again.
    assert tasks.suggest_repositioning(interval_s=60) == {}
    assert suggestions(channel) == []


def test_two_runs_at_once_tell_a_driver_once_and_the_mark_lapses_with_the_suggestion(
    settings, clean_db, channel
):
    from dispatch.rebalancing import Move
    from smartroute.infra import reposition

    client = redis.Redis.from_url(settings.redis_url)
    now = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)
    moves = {"default": [Move(7, "r1c1", 38.72, -9.14, 90.0, "why")]}
    assert reposition.send(client, "test", moves, 30, now) == {"default": 1}
    assert reposition.send(client, "test", moves, 30, now) == {}
    assert len(suggestions(channel)) == 1
    assert reposition.recently_told(client, now + dt.timedelta(seconds=29)) == {7}
    later = now + dt.timedelta(seconds=30)
    assert reposition.recently_told(client, later) == frozenset()
    assert reposition.send(client, "test", moves, 30, later) == {"default": 1}
