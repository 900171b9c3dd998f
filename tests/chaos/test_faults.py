"""Faults under steady load, healed, then every invariant checked (tests/chaos/invariants.py).

Each test runs the whole engine on services of its own (tests/chaos/conftest.py) with
riders booking four rides a second and eight drivers taking them, injects one fault,
heals it, keeps the load on for a while, and lets the checker judge.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
from sqlalchemy import text

from tests.chaos import invariants
from tests.chaos.load import Load
from tests.integration.conftest import new_user
from tests.support import wait_for, waiting_on_locks

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

WARM_UP = 8  # Bookings accepted before the fault, so it strikes a running engine.


def _warm(load: Load, at_least: int = WARM_UP) -> None:
    wait_for(lambda: len(load.record.accepted) >= at_least, 30, "the load to get going")


def _after_heal(load: Load, more: int = WARM_UP) -> None:
    """The engine takes new bookings again after the fault, then the riders stop."""
    count = len(load.record.accepted)
    wait_for(
        lambda: len(load.record.accepted) >= count + more,
        60,
        "bookings to be accepted again after the fault",
    )
    load.stop_booking()


def test_a_worker_child_and_then_its_parent_are_killed(chaos, chaos_admin, chaos_engine):
    with Load(chaos_admin, chaos.relay_url) as load:
        _warm(load)
        parent, children = chaos.worker_pids("alpha")
        os.kill(children[0], signal.SIGKILL)
        # The parent replaces its child; then the parent itself dies, unannounced, with
        # whatever message it had reserved still unacknowledged in Redis.
        wait_for(
            lambda: chaos.worker_pids("alpha")[1] not in ([], children),
            20,
            "the parent to replace its child",
        )
        os.kill(parent, signal.SIGKILL)
        chaos.workers["alpha"].wait(timeout=10)
        _after_heal(load)
        chaos.restart_worker("alpha")  # What a supervisor (`smartroute up`, Compose) does.
        invariants.check(chaos_engine, load)


def test_a_stalled_worker_wakes_past_the_offer_window_and_its_write_changes_nothing(
    chaos, chaos_admin, chaos_engine
):
    # Far from the load's city centre, out of every load driver's reach: a booking that
    # can go only to `near` (nearest) or `far`.
    spot = {"lat": 38.45, "lng": -9.14}
    near = new_user(chaos_admin, "driver", "near")
    far = new_user(chaos_admin, "driver", "far")
    for driver, north in ((near, 0.001), (far, 0.004)):
        driver.call(
            "PUT", "/v1/drivers/me/location", json={"lat": spot["lat"] + north, "lng": spot["lng"]}
        )
        driver.call("PUT", "/v1/drivers/me/status", json={"status": "available"})
    rider = new_user(chaos_admin, "rider", "stalled-rider")

    with Load(chaos_admin, chaos.relay_url) as load, chaos_engine.connect() as blocker:
        _warm(load)
        held = blocker.begin()
        blocker.execute(text("SELECT 1 FROM drivers WHERE user_id = :d FOR UPDATE"), {"d": near.id})
        trip = {"pickup": spot, "dropoff": {"lat": 38.47, "lng": -9.15}}
        booking_id = rider.call("POST", "/v1/bookings", expect=202, json=trip)["id"]
        stalled = _task_blocked_on_a_lock(chaos, chaos_engine)
        stalled_pid = stalled["worker_pid"]
        os.kill(stalled_pid, signal.SIGSTOP)
        try:
            held.rollback()  # The stalled worker's claim on `near` now succeeds, uncommitted.
            # PostgreSQL ends the stalled session (idle in transaction), undoing its claim;
            # the other worker offers the booking to `near`, who declines; `far` takes it.
            wait_for(
                lambda: _status(rider, booking_id) == ("assigned", near.id),
                30,
                "the booking to be offered to `near` by the worker still running",
            )
            near.call("POST", f"/v1/bookings/{booking_id}/decline")
            wait_for(
                lambda: _status(rider, booking_id) == ("assigned", far.id),
                30,
                "the booking to go to `far`",
            )
            for action in ("accept", "start", "complete"):
                far.call("POST", f"/v1/bookings/{booking_id}/{action}")
            before = _trail(chaos_engine, booking_id)
        finally:
            os.kill(stalled_pid, signal.SIGCONT)
        # The woken worker finds its session gone; its task fails or retries and re-reads.
        wait_for(
            lambda: not _running(chaos, stalled["id"]),
            60,
            "the woken worker to finish its stale task",
        )
        assert _trail(chaos_engine, booking_id) == before, "the stale write changed the booking"
        assert near.call("GET", "/v1/drivers/me")["current_booking"] is None
        _after_heal(load)
        invariants.check(chaos_engine, load)


def test_redis_is_killed_and_comes_back_empty(chaos, chaos_admin, chaos_engine):
    with Load(chaos_admin, chaos.relay_url) as load:
        _warm(load)
        chaos.kill_redis()
        time.sleep(3)  # noqa - the outage itself: nothing to await while Redis is gone.
        chaos.start_redis()
        assert redis.Redis.from_url(chaos.settings.redis_url).dbsize() < 50, "not empty"
        _after_heal(load)
        # A push handed to the old Redis but not yet delivered is gone with it; the driver's
        # app learns of that offer from the API instead (its ping says it is busy).
        invariants.check(chaos_engine, load, fetched_offers_count=True)


def test_postgres_restarts_and_the_api_answers_503_meanwhile(chaos, chaos_admin, chaos_engine):
    with Load(chaos_admin, chaos.relay_url) as load:
        _warm(load)
        chaos.stop_postgres()
        outage_started = time.monotonic()

        def booking_answers():
            with load.record.lock:
                return [
                    a
                    for a in load.record.answers
                    if a.path == "/v1/bookings" and a.started > outage_started
                ]

        wait_for(
            lambda: len(booking_answers()) >= 3,
            30,
            "riders to get answers while PostgreSQL is down",
        )
        during = booking_answers()
        chaos.start_postgres()
        _after_heal(load)
        invariants.check(chaos_engine, load)

    assert all(a.status == 503 and a.code == "database_unavailable" for a in during), [
        (a.status, a.code, round(a.seconds, 2)) for a in during
    ]
    slowest = max(a.seconds for a in during)
    assert slowest < 5, f"a booking waited {slowest:.1f} s for its 503: the API hung"


def test_the_relay_is_killed_and_drivers_catch_up(chaos, chaos_admin, chaos_engine):
    with Load(chaos_admin, chaos.relay_url) as load:
        _warm(load)
        chaos.relay.send_signal(signal.SIGKILL)
        chaos.relay.wait(timeout=10)
        time.sleep(2)  # noqa - the outage: assignments go on being made meanwhile.
        chaos.relay = chaos.start_relay()
        wait_for(chaos.relay_up, 30, "the relay to come back")
        _after_heal(load)
        invariants.check(chaos_engine, load)


def test_beat_stops_for_twenty_seconds(chaos, chaos_admin, chaos_engine):
    with Load(chaos_admin, chaos.relay_url) as load:
        _warm(load)
        chaos.beat.terminate()
        chaos.beat.wait(timeout=20)
        # Without sweeps, publishing safety net or stats for forty of the stack's sweep
        # intervals and six of its offer windows, the engine must keep matching and
        # pushing on its own.
        stopped = time.monotonic()
        count = len(load.record.accepted)
        wait_for(lambda: time.monotonic() - stopped >= 20, 30, "20 s without beat", every=1)
        assert len(load.record.accepted) > count + 20
        chaos.restart_beat()
        _after_heal(load)
        invariants.check(chaos_engine, load)


def _status(client, booking_id: int) -> tuple[str, int | None]:
    booking = client.call("GET", f"/v1/bookings/{booking_id}")
    return booking["status"], booking["driver_id"]


def _trail(engine, booking_id: int) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT version, from_status, to_status, driver_id FROM booking_events "
                "WHERE booking_id = :b ORDER BY version"
            ),
            {"b": booking_id},
        ).all()


def _task_blocked_on_a_lock(chaos, engine) -> dict:
    """The matching task (id, worker_pid) whose transaction waits on our row lock."""
    wait_for(
        lambda: waiting_on_locks(engine, "smartroute-worker"),
        20,
        "a matching task to block on the held driver row",
    )
    # Other batches finish in milliseconds; the one still running since before is ours.
    active = chaos.celery.control.inspect(timeout=2).active() or {}
    matching = [
        t
        for tasks in active.values()
        for t in tasks
        if t["name"] in ("workers.tasks.dispatch_region", "workers.tasks.match_booking")
    ]
    assert matching, active
    return min(matching, key=lambda t: t["time_start"])


def _running(chaos, task_id: str) -> bool:
    """Whether the task is still being run; only a reply from every node settles it."""
    active = chaos.celery.control.inspect(timeout=2).active()
    if active is None or len(active) < len(chaos.workers):
        return True
    return any(t["id"] == task_id for tasks in active.values() for t in tasks)
