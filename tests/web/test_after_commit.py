"""What a request asks of the workers is sent once its transaction commits, and never if it
rolls back (smartroute.infra.after_commit): through the API's views and the relay's driver
actions, on the real broker (Redis), with the messages read back from its queues."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import redis
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from dispatch import tokens
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy, Outcome
from dispatch.models import Booking, User
from dispatch.tokens import hash_token
from smartroute.infra.after_commit import after_commit, pending
from smartroute.infra.celery_app import create_celery
from smartroute.infra.enqueue import MATCH_BOOKING, PUBLISH_OUTBOX
from smartroute.infra.identity import Identity
from tests import factories as make
from web.relay_actions import DriverActions
from web.runtime import db, enqueue_dispatch, enqueue_publish

PICKUP = {"lat": 38.7223, "lng": -9.1393}
BOOKING = {"pickup": PICKUP, "dropoff": {"lat": 38.75, "lng": -9.14}}


def _sent(redis_url: str) -> dict[str, list[str]]:
    """The task of each message waiting in the queues a request may send to."""
    broker = redis.Redis.from_url(redis_url)
    return {
        queue: [json.loads(m)["headers"]["task"] for m in broker.lrange(queue, 0, -1)]
        for queue in ("notify", "dispatch.default")
    }


NOTHING: dict[str, list[str]] = {"notify": [], "dispatch.default": []}
A_NEW_BOOKING = {"notify": [PUBLISH_OUTBOX], "dispatch.default": [MATCH_BOOKING]}


class CommitFails(OperationalError):
    def __init__(self) -> None:
        super().__init__("COMMIT", {}, Exception("the database went away at commit"))


@pytest.fixture
def failing_commits():
    """Make every commit on ``sessions`` fail until the test ends: the request's transaction
    rolls back after its view asked for work."""
    added = []

    def fail_on(sessions) -> None:
        def refuse(_session):
            raise CommitFails()

        event.listen(sessions, "before_commit", refuse)
        added.append((sessions, refuse))

    yield fail_on
    for sessions, refuse in added:
        event.remove(sessions, "before_commit", refuse)


def test_a_view_asks_inside_its_transaction_and_nothing_leaves_before_the_commit(
    app, clean_db, settings, now
):
    with app.test_request_context():
        session = db()
        booking = make.booking(session, make.rider(session), now=now)
        enqueue_publish()
        enqueue_dispatch(booking)
        assert pending(session) == 2
        assert _sent(settings.redis_url) == NOTHING
        session.rollback()
        assert pending(session) == 0
    assert _sent(settings.redis_url) == NOTHING

    with app.test_request_context():
        session = db()
        booking = make.booking(session, make.rider(session), now=now)
        enqueue_publish()
        enqueue_dispatch(booking)
        assert _sent(settings.redis_url) == NOTHING
        session.commit()
        assert pending(session) == 0
    assert _sent(settings.redis_url) == A_NEW_BOOKING


def test_a_booking_whose_commit_fails_enqueues_nothing_and_one_committed_enqueues(
    api, app, settings, failing_commits, committed_sessions
):
    rider = api.user("rider")
    as_rider = api.as_(rider["token"])
    failing_commits(app.extensions["smartroute"].sessions)
    refused = as_rider.request("POST", "/v1/bookings", json=BOOKING)
    assert refused.status_code == 503, refused.get_json()
    with committed_sessions() as s:
        assert s.scalar(select(func.count()).select_from(Booking)) == 0
    assert _sent(settings.redis_url) == NOTHING


def test_a_committed_booking_enqueues_its_publish_and_its_match(api, settings):
    rider = api.user("rider")
    created = api.as_(rider["token"]).request("POST", "/v1/bookings", json=BOOKING)
    assert created.status_code == 202, created.get_json()
    assert _sent(settings.redis_url) == A_NEW_BOOKING


@pytest.fixture
def declining(settings, committed_sessions, now):
    """A booking offered to its driver, committed, and relay actions with a real Celery app
    and no batch window (a declined booking is one match message)."""
    with committed_sessions.begin() as s:
        booking = make.booking(s, make.rider(s), now=now)
        driver = make.driver(s, now=now)
        assert dispatch_booking(s, booking.id, MatchPolicy(), now).outcome == Outcome.ASSIGNED
        token, row = tokens.issue(s, s.get(User, driver.user_id), settings.secret_key, 3600)
        holder = Identity(driver.user_id, "driver", row.id, hash_token(token), row.expires_at)
    unbatched = replace(settings, batch_window_s=0)
    actions = DriverActions(
        unbatched,
        committed_sessions,
        create_celery(unbatched),
        redis.Redis.from_url(settings.redis_url),
    )
    redis.Redis.from_url(settings.redis_url).delete("notify", "dispatch.default")
    return actions, holder, {"booking_id": booking.id, "action": "decline"}


def test_a_relay_action_whose_commit_fails_enqueues_nothing(declining, settings, failing_commits):
    actions, holder, decline = declining
    failing_commits(actions.sessions)
    answer, ended = actions.handle(holder, decline)
    assert (answer["status"], answer["error"]["code"], ended) == (
        503,
        "database_unavailable",
        False,
    )
    assert _sent(settings.redis_url) == NOTHING


def test_a_committed_relay_decline_enqueues_its_publish_and_the_next_match(declining, settings):
    actions, holder, decline = declining
    answer, ended = actions.handle(holder, decline)
    assert (answer["status"], answer["booking"]["status"], ended) == (200, "pending", False)
    assert _sent(settings.redis_url) == A_NEW_BOOKING


def test_a_savepoint_released_is_not_the_commit(committed_sessions):
    sent = []
    with committed_sessions() as session:
        session.begin()
        after_commit(session, lambda: sent.append("outer"))
        with session.begin_nested():
            after_commit(session, lambda: sent.append("inner"))
        assert sent == []
        session.commit()
    assert sent == ["outer", "inner"]


def test_a_session_closed_without_commit_drops_what_it_asked_for(committed_sessions):
    sent = []
    with committed_sessions() as session:
        session.begin()
        after_commit(session, lambda: sent.append("never"))
    with committed_sessions() as session:
        session.begin()
        session.commit()
    assert sent == []


def test_what_a_commit_asked_for_is_sent_with_the_connection_back_in_the_pool(
    committed_sessions, engine
):
    # A send is a Redis round trip; made while the session still held its connection, it
    # would keep that connection from whoever waits for one next.
    checked_out_during_send = []
    with committed_sessions() as session:
        session.execute(select(func.now()))
        checked_out = engine.pool.checkedout()
        after_commit(session, lambda: checked_out_during_send.append(engine.pool.checkedout()))
        session.commit()
    assert checked_out_during_send == [checked_out - 1]
