"""A rolling deploy under load loses nothing (tests/chaos/invariants.py judges).

Two API servers, two relays and two worker nodes serve riders booking four rides a second
and eight drivers taking them; every client knows both API servers and both relays and
moves to the other when one cannot be reached (no proxy). Then, in turn, as a rolling
deploy does, SIGTERM goes to an API server (the gunicorn master: a graceful stop), a worker
node (Celery's warm shutdown) and a relay, and each is replaced by a fresh process on the
same port once it has exited.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import time

import kombu.exceptions
import pytest
import redis
import socketio
from sqlalchemy import text

from smartroute.infra.celery_app import create_celery
from tests.chaos import invariants
from tests.chaos.load import Load
from tests.integration.conftest import Listener, new_user
from tests.support import free_port, healthy, wait_for

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

WARM_UP = 8  # Bookings accepted before the first step, so it strikes a running engine.
BETWEEN = 4  # Bookings accepted after each step before the next.
STOP_S = 30  # Longer than gunicorn's graceful timeout; a warm worker finishes in seconds.


def _more_bookings(load: Load, more: int) -> None:
    count = len(load.record.accepted)
    wait_for(
        lambda: len(load.record.accepted) >= count + more,
        30,
        f"{more} more bookings to be accepted",
    )


def _stop(process: subprocess.Popen, what: str) -> tuple[float, float]:
    """SIGTERM, then wait for a clean exit; (when it was sent, seconds it took)."""
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=STOP_S)
    assert code == 0, f"{what} exited with {code} on SIGTERM"
    return sent, time.monotonic() - sent


def test_a_rolling_deploy_under_load_loses_nothing(chaos, chaos_admin, chaos_engine):
    started = time.monotonic()
    api_b_port, relay_b_port = free_port(), free_port()
    api_b_url, relay_b_url = (f"http://127.0.0.1:{p}" for p in (api_b_port, relay_b_port))
    extra = [chaos.start_api(api_b_port, "api-b"), chaos.start_relay_at(relay_b_port, "relay-b")]
    # Its own broker connections: the stack's may date from before an earlier fault's
    # Redis restart.
    celery = create_celery(chaos.settings)
    # An earlier fault may have left a worker node dead (a supervisor would restart it):
    # the deploy starts from two live nodes.
    for node, process in list(chaos.workers.items()):
        if process.poll() is not None:
            chaos.restart_worker(node)
    chaos.worker = chaos.workers["alpha"]
    try:
        token = chaos.settings.metrics_token  # The API's /health asks for it; the relay's not.
        wait_for(
            lambda: healthy(api_b_url, token) and healthy(relay_b_url),
            60,
            "the second API server and relay to answer /health",
        )
        wait_for(
            lambda: len(_nodes(celery)) == len(chaos.workers),
            60,
            "both worker nodes to answer a ping",
        )
        with Load(
            chaos_admin,
            chaos.relay_url,
            api_urls=[chaos.url, api_b_url],
            relay_urls=[chaos.relay_url, relay_b_url],
        ) as load:
            _warm(load)
            api_sent, api_took = _stop(chaos.api, "the API server (gunicorn master)")
            chaos.api = chaos.start_api(chaos.port, "api-a-new")
            wait_for(
                lambda: healthy(chaos.url, chaos.settings.metrics_token),
                60,
                "the new API server to answer /health",
            )
            _more_bookings(load, BETWEEN)

            worker_sent, worker_took = _stop(chaos.workers["alpha"], "worker node alpha")
            chaos.restart_worker("alpha")
            chaos.worker = chaos.workers["alpha"]
            wait_for(
                lambda: any(node.startswith("alpha-") for node in _nodes(celery)),
                60,
                "the new alpha node to answer a ping",
            )
            _more_bookings(load, BETWEEN)

            on_relay_a = _drivers_on(load, chaos.relay_url)
            assert on_relay_a, "no driver on the relay about to go away"
            relay_sent, relay_took = _stop(chaos.relay, "relay a")
            chaos.relay = chaos.start_relay()
            wait_for(chaos.relay_up, 60, "the new relay to answer /health")
            _more_bookings(load, BETWEEN)
            load.stop_booking()
            invariants.check(chaos_engine, load)

        answers = list(load.record.answers)
        reconnected = _reconnect_delays(load, on_relay_a, relay_sent, relay_b_url)
        sent_at = {chaos.url: api_sent, chaos.relay_url: relay_sent}
        report = {
            "seconds": round(time.monotonic() - started, 1),
            "bookings": len(load.record.accepted),
            "stop_s": {
                "api": round(api_took, 2),
                "worker": round(worker_took, 2),
                "relay": round(relay_took, 2),
            },
            # Requests nothing answered: (what, server, sent how long after its
            # server's SIGTERM, seconds waited).
            "no_answer": {
                kind: sorted(
                    (
                        a.path.split("/")[-1],
                        a.url,
                        round(a.started - sent_at.get(a.url, a.started), 2),
                        round(a.seconds, 2),
                    )
                    for a in answers
                    if a.status is None and a.failure == kind
                )
                for kind in ("unsent", "cut")
            },
            "relay_reconnect_s": sorted(round(d, 2) for d in reconnected.values()),
        }
        print(report)
        # What the API server and the relay were handling when SIGTERM came finished and
        # was answered. (A request sent after it is refused, or in a window of
        # milliseconds reset, and retried elsewhere: every retry is idempotent, load.py.)
        cut_in_flight = [
            a
            for a in answers
            if a.url in sent_at
            and a.status is None
            and a.started < sent_at[a.url] < a.started + a.seconds
        ]
        assert not cut_in_flight, report
        # Nobody hung on a server going away: a request it would not serve failed at once
        # (refused, or reset), never after waiting in a backlog no process reads (which
        # lasts as long as a stopping gunicorn worker keeps its listener: 2 s and more).
        slow = [a for a in answers if a.status is None and a.seconds > 1]
        assert not slow, report
        # Every driver on the relay that went away was back, on the other relay, at once.
        assert set(reconnected) == on_relay_a, report
        assert max(reconnected.values()) < 5, report
    finally:
        for process in extra:
            process.terminate()
        for process in extra:
            process.wait(timeout=STOP_S)


def _nodes(celery) -> set[str]:
    """The worker nodes that answer a ping; none while the broker cannot be reached."""
    try:
        return {node for reply in celery.control.ping(timeout=0.5) for node in reply}
    except (OSError, redis.RedisError, kombu.exceptions.OperationalError):
        return set()


def _warm(load: Load) -> None:
    wait_for(lambda: len(load.record.accepted) >= WARM_UP, 30, "the load to get going")


def _drivers_on(load: Load, relay_url: str) -> set[int]:
    """The drivers whose latest connection is to ``relay_url``."""
    latest: dict[int, str] = {}
    with load.record.lock:
        for _at, driver, url in sorted(load.record.connections):
            latest[driver] = url
    return {driver for driver, url in latest.items() if url == relay_url}


def _reconnect_delays(
    load: Load, drivers: set[int], since: float, relay_url: str
) -> dict[int, float]:
    """Seconds from ``since`` to each driver's first connection to ``relay_url`` after it."""
    delays: dict[int, float] = {}
    with load.record.lock:
        for at, driver, url in sorted(load.record.connections):
            if driver in drivers and url == relay_url and at > since:
                delays.setdefault(driver, at - since)
    return delays


def test_a_stopping_relay_finishes_the_action_it_is_handling_and_turns_new_work_away(
    chaos, chaos_admin, chaos_engine
):
    port = free_port()
    relay_url = f"http://127.0.0.1:{port}"
    relay = chaos.start_relay_at(port, "relay-stopping")
    try:
        wait_for(lambda: healthy(relay_url), 60, "the relay to answer /health")
        spot = {"lat": 38.45, "lng": -9.14}  # Nobody else's city: this driver gets the ride.
        driver = new_user(chaos_admin, "driver", "late-shift")
        driver.call("PUT", "/v1/drivers/me/location", json=spot)
        driver.call("PUT", "/v1/drivers/me/status", json={"status": "available"})
        feed = Listener(relay_url, driver.token)
        rider = new_user(chaos_admin, "rider", "late-rider")
        booking_id = rider.call(
            "POST",
            "/v1/bookings",
            expect=202,
            json={"pickup": spot, "dropoff": {"lat": 38.47, "lng": -9.15}},
        )["id"]
        assert feed.next("new_assignment")[1]["id"] == booking_id
        answers: queue.Queue = queue.Queue()

        with chaos_engine.connect() as lock:
            lock.execute(
                text("SELECT 1 FROM cab_bookings WHERE id = :id FOR UPDATE"), {"id": booking_id}
            )
            feed.client.emit(
                "driver_action",
                {"booking_id": booking_id, "action": "accept"},
                callback=answers.put,
            )
            wait_for(
                lambda: _relay_waits_on_a_lock(chaos_engine),
                20,
                "the accept to wait on the row lock",
            )
            relay.send_signal(signal.SIGTERM)
            wait_for(
                lambda: _refused(relay_url, driver.token),
                10,
                "the stopping relay to refuse a new connection",
            )
            assert relay.poll() is None and answers.empty(), "the action was not waited for"
            lock.rollback()

        answer = answers.get(timeout=20)
        assert (answer["status"], answer["booking"]["status"]) == (200, "accepted")
        assert relay.wait(timeout=STOP_S) == 0
        assert not feed.client.connected
    finally:
        if relay.poll() is None:
            relay.kill()
        relay.wait()


def test_a_stopping_relay_writes_the_positions_it_still_buffers(chaos, chaos_admin, chaos_engine):
    port = free_port()
    relay_url = f"http://127.0.0.1:{port}"
    # Flushes far apart: only the stop can write the ping to PostgreSQL in time.
    relay = chaos.start_relay_at(port, "relay-flushing", {"SMARTROUTE_LOCATION_FLUSH_S": "600"})
    try:
        wait_for(lambda: healthy(relay_url), 60, "the relay to answer /health")
        driver = new_user(chaos_admin, "driver", "last-ping")
        feed = Listener(relay_url, driver.token)
        spot = (38.61, -9.21)
        answer = feed.client.call(
            "location", {"lat": spot[0], "lng": spot[1], "at": time.time()}, timeout=20
        )
        assert answer == {"status": 200}

        relay.send_signal(signal.SIGTERM)

        assert relay.wait(timeout=STOP_S) == 0
        with chaos_engine.connect() as connection:
            row = connection.execute(
                text("SELECT lat, lng FROM drivers WHERE user_id = :id"), {"id": driver.id}
            ).one()
        assert (row.lat, row.lng) == spot
    finally:
        if relay.poll() is None:
            relay.kill()
        relay.wait()


def _refused(relay_url: str, token: str) -> bool:
    try:
        Listener(relay_url, token).close()
    except socketio.exceptions.ConnectionError:
        return True
    return False


def _relay_waits_on_a_lock(engine) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                    "'smartroute-relay' "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar()
        )
