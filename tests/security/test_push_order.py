"""Push ordering and replay: what a reconnecting client is told is complete, or it is told
to resync. Events are published in-process by the real task function (workers.tasks) on
the test PostgreSQL and Redis, and read back through a real relay process by real
Socket.IO clients."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time

import pytest
import redis
import requests
import socketio
from sqlalchemy import select

from dispatch import outbox
from dispatch.models import OutboxEvent
from dispatch.users import ensure_bootstrap_admin
from smartroute.cli.processes import relay_argv
from smartroute.infra import push
from smartroute.infra.enqueue import PUBLISH_SCHEDULED
from tests import factories
from tests.support import free_port, healthy, wait_for
from workers import context

# python-socketio's client leaves a websocket the server closed for the garbage collector.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def relay(settings, tmp_path_factory):
    """A relay process on the test services (no API or worker: this module publishes)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        **settings.to_env(),
        "SMARTROUTE_LOG_FORMAT": "json",
        "SMARTROUTE_RELAY_CORS_ORIGINS": url,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path_factory.mktemp("relay") / "relay.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            relay_argv("127.0.0.1", port), env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_for(lambda: process.poll() is None and healthy(url), 60, "the relay to start")
            yield url
        finally:
            process.terminate()
            process.wait(timeout=20)


@pytest.fixture
def publishing(settings, monkeypatch, committed_sessions):
    """workers.context on the test services, in this process; call with a replay window to
    have the publisher keep that many events."""
    caches = (context.settings, context.sessions, context.cache, context.publisher)

    def configure(replay_events: int | None = None) -> None:
        for name, value in settings.to_env().items():
            monkeypatch.setenv(name, value)
        if replay_events is not None:
            monkeypatch.setenv("SMARTROUTE_REPLAY_EVENTS", str(replay_events))
        for cached in caches:
            cached.cache_clear()

    configure()
    yield configure
    for cached in caches:
        cached.cache_clear()


@pytest.fixture
def admin_token(settings, committed_sessions) -> str:
    with committed_sessions.begin() as s:
        ensure_bootstrap_admin(s, settings.admin_token)
    return settings.admin_token


class Feed:
    """A python-socketio client that queues the events a console cares about."""

    def __init__(self, url: str, auth: dict) -> None:
        self.events: queue.Queue = queue.Queue()
        self.refusal = None
        self.client = socketio.Client(reconnection=False)
        for name in ("booking_updated", "resync_required", "error"):
            self.client.on(name, lambda data, name=name: self.events.put((name, data)))
        self.client.on("connect_error", self._refused)
        self.client.connect(url, auth=auth, transports=["websocket"], wait_timeout=10)

    def _refused(self, data=None):
        self.refusal = data

    def next(self, timeout: float = 15) -> tuple[str, dict]:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()


@pytest.fixture
def feeds(relay):
    opened: list[Feed] = []

    def open_(token: str, **auth) -> Feed:
        opened.append(Feed(relay, {"token": token, **auth}))
        return opened[-1]

    yield open_
    for feed in opened:
        feed.close()


def _riders(committed_sessions, count: int):
    with committed_sessions.begin() as s:
        riders = [factories.rider(s) for _ in range(count)]
    return riders


def _admin_updates(feed: Feed, count: int) -> list[dict]:
    seen = []
    while len(seen) < count:
        name, data = feed.next()
        assert name == "booking_updated", (name, data)
        seen.append(data)
    return seen


def test_an_event_committed_after_a_later_id_was_published_is_still_replayed(
    committed_sessions, publishing, admin_token, feeds, now
):
    from workers.tasks import publish_outbox

    early_rider, late_rider = _riders(committed_sessions, 2)
    live = feeds(admin_token)
    with committed_sessions() as early, early.begin():
        # Takes the smaller outbox ids, but commits last.
        early_booking = factories.booking(early, early_rider, now=now)
        early.flush()
        with committed_sessions.begin() as late:
            late_booking = factories.booking(late, late_rider, now=now)
        # Read before the late rows are delivered (and so deleted): its own and the late's.
        ids = dict(
            early.execute(
                select(OutboxEvent.booking_id, OutboxEvent.id).where(
                    OutboxEvent.room == outbox.ADMIN_ROOM
                )
            ).all()
        )
        assert ids[early_booking.id] < ids[late_booking.id]  # The race this test is about.
        assert publish_outbox() == 2
        [first] = _admin_updates(live, 1)
        assert first["id"] == late_booking.id
    live.close()  # The client drops before the early transaction's events go out.
    assert publish_outbox() == 2

    back = feeds(admin_token, last_event_id=first["event_id"])
    name, replayed = back.next()
    assert (name, replayed["id"]) == ("booking_updated", early_booking.id)
    assert replayed["event_id"] > first["event_id"]


def test_a_client_older_than_the_replay_window_is_told_to_resync(
    committed_sessions, publishing, admin_token, feeds, now
):
    from workers.tasks import publish_outbox

    publishing(replay_events=2)
    riders = _riders(committed_sessions, 3)
    live = feeds(admin_token)
    for rider in riders:
        with committed_sessions.begin() as s:
            factories.booking(s, rider, now=now)
        assert publish_outbox() == 2  # To admins, then to the rider.
    ids = [d["event_id"] for d in _admin_updates(live, 3)]
    newest = ids[-1] + 1  # The last rider's event.

    stale = feeds(admin_token, last_event_id=ids[0])
    assert stale.next() == (
        "resync_required",
        {"reason": "older_than_replay_window", "oldest_event_id": newest - 2},
    )
    assert stale.events.empty()  # No partial replay alongside.
    # Just inside the window: a plain replay of what came after.
    recent = feeds(admin_token, last_event_id=newest - 3)
    name, replayed = recent.next()
    assert (name, replayed["event_id"]) == ("booking_updated", ids[-1])


def test_a_replay_log_that_was_lost_is_not_replayed_as_if_complete(
    committed_sessions, publishing, admin_token, feeds, settings, now
):
    from workers.tasks import publish_outbox

    [rider] = _riders(committed_sessions, 1)
    with committed_sessions.begin() as s:
        factories.booking(s, rider, now=now)
    assert publish_outbox() == 2
    # As after a Redis restart with no persistence: every stream and marker is gone.
    cache = redis.Redis.from_url(settings.redis_url)
    cache.delete(*cache.keys(push.REPLAY_PREFIX + "*"))

    back = feeds(admin_token, last_event_id=1)
    assert back.next() == (
        "resync_required",
        {"reason": "replay_log_reset", "oldest_event_id": None},
    )


@pytest.mark.parametrize("last_event_id", [2**64, 2**63, -1, "7", 1.5, True, [1]])
def test_a_last_event_id_out_of_range_is_refused_cleanly(
    admin_token, relay, settings, last_event_id
):
    started = time.monotonic()
    with pytest.raises(socketio.exceptions.ConnectionError):
        feed = Feed(relay, {"token": admin_token, "last_event_id": last_event_id})
        feed.close()
    assert time.monotonic() - started < 5  # Refused, not left to time out.


def test_a_refused_last_event_id_names_the_field_and_leaves_nothing_registered(
    admin_token, relay, settings
):
    client = socketio.Client(reconnection=False)
    errors, refusals = [], []
    client.on("error", errors.append)
    client.on("connect_error", refusals.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(
            relay,
            auth={"token": admin_token, "last_event_id": 2**64},
            transports=["websocket"],
            wait_timeout=10,
        )
    client.disconnect()
    assert errors and errors[0]["code"] == "invalid_field"
    assert errors[0]["field"] == "last_event_id"
    assert refusals[0]["data"]["field"] == "last_event_id"

    def admins_connected() -> float:
        headers = (
            {"Authorization": f"Bearer {settings.metrics_token}"} if settings.metrics_token else {}
        )
        scrape = requests.get(f"{relay}/metrics", timeout=10, headers=headers).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in scrape.splitlines()
            if line.startswith('smartroute_relay_connections{kind="admin"}')
        )

    assert admins_connected() == 0


def test_every_replay_stream_and_marker_expires(committed_sessions, publishing, settings, now):
    from workers.tasks import publish_outbox

    [rider] = _riders(committed_sessions, 1)
    with committed_sessions.begin() as s:
        factories.booking(s, rider, now=now)
    assert publish_outbox() == 2
    cache = redis.Redis.from_url(settings.redis_url)
    keys = cache.keys(push.REPLAY_PREFIX + "*")
    assert {
        push.replay_key(outbox.ADMIN_ROOM).encode(),
        push.SINCE_KEY.encode(),
        push.FLOOR_KEY.encode(),
    } <= set(keys) and len(keys) == 4
    for key in keys:
        assert 0 < cache.ttl(key) <= settings.outbox_retention_s, key


def test_a_retried_delivery_is_a_copy_but_an_older_event_is_never_swallowed(settings):
    cache = redis.Redis.from_url(settings.redis_url)
    cache.delete(*cache.keys(push.REPLAY_PREFIX + "*") or ["-"])
    publisher = push.Publisher(settings.redis_url)
    batch = [
        (10, "driver_1", "new_assignment", '{"event_id": 10}'),
        (11, "driver_1", "new_assignment", '{"event_id": 11}'),
    ]
    listener = cache.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(push.CHANNEL)
    listener.get_message(timeout=5)  # The subscription's confirmation.
    publisher.deliver(batch)
    publisher.deliver(batch)  # The same positions again, as after a failed commit.
    assert len(cache.xrange(push.replay_key("driver_1"))) == 2
    # ...and the relays were told once: the copy's entries were already there.
    cache.publish(push.CHANNEL, "end")
    emitted = []
    while (message := listener.get_message(timeout=5)) and message["data"] != b"end":
        emitted.append(json.loads(message["data"])["data"][0]["event_id"])
    listener.close()
    assert emitted == [10, 11]
    with pytest.raises(push.ReplayOrderError):
        publisher.deliver([(9, "driver_1", "new_assignment", '{"event_id": 9}')])


def test_a_delivery_that_fails_leaves_its_events_waiting_with_their_positions(
    committed_sessions, publishing, settings, now
):
    """A run deletes the events it delivers in the transaction that delivers them: when
    Redis cannot be reached the delete is rolled back, the events keep the positions they
    were given, and the next run sends them under those positions."""
    from workers.tasks import publish_outbox

    [rider] = _riders(committed_sessions, 1)
    with committed_sessions.begin() as s:
        factories.booking(s, rider, now=now)
    unreachable = push.Publisher(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(redis.ConnectionError):
        unreachable.publish_batch(committed_sessions, 500)
    with committed_sessions() as s:
        rows = s.execute(select(OutboxEvent.room, OutboxEvent.position).order_by("id")).all()
    assert [room for room, _ in rows] == ["admin_dashboard", f"rider_{rider.id}"]
    assert all(position is not None for _, position in rows)
    assert publish_outbox() == 2
    cache = redis.Redis.from_url(settings.redis_url)
    for room, position in rows:
        assert [entry_id for entry_id, _ in cache.xrange(push.replay_key(room))] == [
            f"{position}-0".encode()
        ]
    with committed_sessions() as s:
        assert s.scalar(select(OutboxEvent.id)) is None


def test_a_trimmed_copy_is_told_from_a_hole_at_any_position(settings):
    """Positions reach 2^63 - 1; a double cannot tell two of them apart above 2^53, so the
    script is told which events are below the floor rather than comparing them itself."""
    cache = redis.Redis.from_url(settings.redis_url)
    cache.delete(*cache.keys(push.REPLAY_PREFIX + "*") or ["-"])
    publisher = push.Publisher(settings.redis_url, replay_events=1)
    top = 2**60 + 10
    publisher.deliver([(top, "driver_1", "new_assignment", "{}")])
    # The floor is now top + 4: an event at top - 2 is a trimmed copy, not a hole, though as
    # doubles the two are equal.
    publisher.deliver(
        [
            (top - 2, "driver_1", "new_assignment", "{}"),
            (top + 5, "driver_2", "new_assignment", "{}"),
        ]
    )
    assert cache.xrange(push.replay_key("driver_2"))[0][0] == f"{top + 5}-0".encode()


def test_a_second_publisher_leaves_at_once_and_its_wake_up_is_not_lost(
    committed_sessions, publishing, settings, engine, monkeypatch, now
):
    """The holder is paused after its last read found nothing, lock still held (there is no
    lock a test could hold in that window, so the read is wrapped); events commit; a second
    publisher must return at once, not wait in its worker slot, and the holder must still
    send them."""
    from smartroute.infra.enqueue import PUBLISH_AGAIN
    from workers.tasks import publish_outbox

    cache = redis.Redis.from_url(settings.redis_url)
    [rider] = _riders(committed_sessions, 1)
    in_window, go = threading.Event(), threading.Event()
    real_check = outbox.assign_positions

    def check_then_pause(session, limit):
        # An empty read ends here: nothing newly positioned, and nothing left.
        found = real_check(session, limit)
        # The last read of a run: after the run let commits ask again (smartroute.infra.enqueue).
        last_read = not found and cache.get(PUBLISH_SCHEDULED) is None
        if threading.current_thread() is holder and last_read and not go.is_set():
            in_window.set()
            go.wait(timeout=30)
        return found

    monkeypatch.setattr(outbox, "assign_positions", check_then_pause)
    cache.set(PUBLISH_SCHEDULED, 1, px=30_000)  # As the commit that started the run did.
    holder_sent: list[int] = []
    holder = threading.Thread(target=lambda: holder_sent.append(publish_outbox()))
    holder.start()
    try:
        assert in_window.wait(timeout=30), "the holder never reached its last read"
        with committed_sessions.begin() as s:
            factories.booking(s, rider, now=now)
        second: list[int] = []
        started = time.monotonic()
        latecomer = threading.Thread(target=lambda: second.append(publish_outbox()))
        latecomer.start()
        latecomer.join(timeout=10)
        assert not latecomer.is_alive(), "the second publisher waited for the lock"
        assert second == [0] and time.monotonic() - started < 5
        assert cache.exists(PUBLISH_AGAIN)
    finally:
        go.set()
        holder.join(timeout=30)
    assert holder_sent == [2]  # Sent by the holder's run again, not left for beat.
    with committed_sessions() as s:
        assert s.scalar(select(OutboxEvent.id)) is None  # Every push delivered.
