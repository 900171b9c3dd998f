"""The guarantees under load and under a killed worker, checked in SQL."""

from __future__ import annotations

import concurrent.futures as cf
import os
import random
import signal

import pytest
from sqlalchemy import text

from tests.integration.conftest import new_user, online_driver
from tests.support import wait_for, waiting_on_locks

CENTRE = (38.7223, -9.1393)
ACTIVE = "('assigned', 'accepted', 'in_progress')"


def _near(rng: random.Random, km: float = 2.0) -> dict:
    d = km / 111.0
    return {"lat": CENTRE[0] + rng.uniform(-d, d), "lng": CENTRE[1] + rng.uniform(-d, d)}


@pytest.mark.slow
def test_500_concurrent_bookings_against_100_drivers(admin, engine):
    rng = random.Random(500)
    with cf.ThreadPoolExecutor(max_workers=20) as pool:
        drivers = list(
            pool.map(lambda i: online_driver(admin, **_near(rng), name=f"driver-{i}"), range(100))
        )
        riders = list(pool.map(lambda i: new_user(admin, "rider", f"rider-{i}"), range(50)))
    trips = [(riders[i % 50], {"pickup": _near(rng), "dropoff": _near(rng)}) for i in range(500)]

    with cf.ThreadPoolExecutor(max_workers=50) as pool:
        accepted = list(
            pool.map(
                lambda t: t[0].call("POST", "/v1/bookings", expect=202, json=t[1])["id"], trips
            )
        )

    with engine.connect() as conn:
        # Every booking has been through a worker at least once.
        wait_for(
            lambda: conn.scalar(
                text(
                    "SELECT count(*) = 0 FROM cab_bookings WHERE status = 'pending' AND "
                    "match_attempts = 0"
                )
            ),
            120,
            "every booking to be tried",
        )
        stored = dict(conn.execute(text("SELECT id, status FROM cab_bookings")).all())
        doubled = conn.execute(
            text(
                f"SELECT driver_id FROM cab_bookings WHERE status IN {ACTIVE} "
                "GROUP BY driver_id HAVING count(*) > 1"
            )
        ).all()
        busy = conn.scalar(text("SELECT count(*) FROM drivers WHERE status = 'busy'"))

    assert sorted(stored) == sorted(accepted), "a booking answered 202 is missing"
    assert doubled == [], "a driver holds two active bookings"
    statuses = list(stored.values())
    assert statuses.count("assigned") == 100 == busy == len(drivers)
    assert set(statuses) <= {"assigned", "pending", "expired"}


@pytest.mark.chaos
def test_a_worker_killed_mid_match_loses_no_booking(admin, engine, stack):
    driver = online_driver(admin, CENTRE[0] + 0.003, CENTRE[1])
    rider = new_user(admin, "rider")
    with engine.connect() as blocker:
        # Hold the driver's row: the matching task's compare-and-set blocks on it, inside
        # its transaction, holding the booking's row lock. That is "mid-task".
        held = blocker.begin()
        blocker.execute(
            text("SELECT 1 FROM drivers WHERE user_id = :d FOR UPDATE"), {"d": driver.id}
        )
        booking_id = rider.call(
            "POST",
            "/v1/bookings",
            expect=202,
            json={"pickup": _near(random.Random(1), 0.1), "dropoff": _near(random.Random(2))},
        )["id"]

        wait_for(
            lambda: waiting_on_locks(engine, "smartroute-worker"),
            15,
            "the matching task to block on the driver's row",
        )

        active = stack.celery.control.inspect(timeout=2).active() or {}
        # The blocked batch, and any other batch of the region running beside it (a request
        # the previous test left, say, with nothing left to match): every one is killed.
        pids = [
            t["worker_pid"]
            for tasks in active.values()
            for t in tasks
            if t["name"] == "workers.tasks.dispatch_region" and t["args"][0] == "default"
        ]
        assert pids, active
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # The parent sees its child die and requeues the message (reject_on_worker_lost);
        # a new child picks it up. Now let the killed task's orphaned transaction finish.
        wait_for(
            lambda: not set(pids) & set(stack.worker_children()), 15, "the children to be reaped"
        )
        held.rollback()

    assigned = wait_for(
        lambda: (
            (b := rider.call("GET", f"/v1/bookings/{booking_id}"))["status"] == "assigned" and b
        ),
        30,
        "the booking to be matched after the kill",
    )
    assert assigned["driver_id"] == driver.id
    with engine.connect() as conn:
        assert conn.scalar(text(f"SELECT count(*) FROM cab_bookings WHERE status IN {ACTIVE}")) == 1
