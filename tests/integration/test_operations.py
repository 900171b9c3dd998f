"""Beat keeps every booking moving, and the numbers operators read add up."""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import text

from smartroute.infra.driver_index import KEY, PRESENCE_KEY
from tests.integration.conftest import new_user, online_driver
from tests.support import stop_consuming, wait_for

CENTRE = (38.7223, -9.1393)
TRIP = {"pickup": {"lat": CENTRE[0], "lng": CENTRE[1]}, "dropoff": {"lat": 38.75, "lng": -9.15}}
PROMTOOL = shutil.which("promtool") or next(
    (str(p) for p in [Path(__file__).parents[2] / ".ci" / "bin" / "promtool"] if p.exists()), None
)


def _booking(client, booking_id):
    return client.call("GET", f"/v1/bookings/{booking_id}")


def _becomes(client, booking_id, predicate, what, timeout=20):
    def check():
        booking = _booking(client, booking_id)
        return booking if predicate(booking) else None

    return wait_for(check, timeout, what)


def test_a_booking_whose_message_redis_lost_is_still_matched(admin, stack, beats):
    queue = redis.Redis.from_url(stack.settings.redis_url)
    node = stack.worker_node()
    stop_consuming(stack.celery, node, "dispatch.default", queue)
    try:
        online_driver(admin, CENTRE[0] + 0.003, CENTRE[1])
        rider = new_user(admin, "rider")
        booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
        assert queue.llen("dispatch.default") == 1
        queue.delete("dispatch.default")  # The broker loses the only message about this booking.
    finally:
        stack.celery.control.add_consumer("dispatch.default", destination=[node], reply=True)
    assert _booking(rider, booking_id)["status"] == "pending"
    beats()
    _becomes(rider, booking_id, lambda b: b["status"] == "assigned", "beat to recover it")


def test_an_unanswered_offer_goes_to_another_driver(admin, beat, engine):
    near = online_driver(admin, CENTRE[0] + 0.002, CENTRE[1], "near")
    far = online_driver(admin, CENTRE[0] + 0.02, CENTRE[1], "far")
    rider = new_user(admin, "rider")
    booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    _becomes(rider, booking_id, lambda b: b["driver_id"] == near.id, "the offer to the near one")
    with engine.begin() as conn:  # The offer window passes without an answer.
        conn.execute(
            text(
                "UPDATE cab_bookings SET offer_expires_at = now() - interval '1 second'"
                " WHERE id = :b"
            ),
            {"b": booking_id},
        )
    _becomes(rider, booking_id, lambda b: b["driver_id"] == far.id, "the offer to move on")
    assert near.call("GET", "/v1/drivers/me")["status"] == "available"
    with engine.connect() as conn:
        assert (
            conn.scalar(
                text(
                    "SELECT reason FROM booking_declines WHERE booking_id = :b AND driver_id = :d"
                ),
                {"b": booking_id, "d": near.id},
            )
            == "timeout"
        )


def test_a_silent_driver_goes_offline_and_leaves_the_index(admin, beat, engine, settings):
    silent = online_driver(admin, *CENTRE, "silent")
    pinging = online_driver(admin, *CENTRE, "pinging")
    cache = redis.Redis.from_url(settings.redis_url)
    with engine.begin() as conn:  # Ten minutes without a location ping.
        conn.execute(
            text(
                "UPDATE drivers SET last_seen_at = now() - interval '10 minutes' WHERE user_id = :d"
            ),
            {"d": silent.id},
        )
    cache.zadd(PRESENCE_KEY, {str(silent.id): time.time() - 600})
    wait_for(
        lambda: silent.call("GET", "/v1/drivers/me")["status"] == "offline",
        20,
        "the silent driver to go offline",
    )
    wait_for(lambda: cache.geopos(KEY, silent.id)[0] is None, 20, "the index to forget it")
    assert cache.zscore(PRESENCE_KEY, silent.id) is None
    assert pinging.call("GET", "/v1/drivers/me")["status"] == "available"
    assert cache.geopos(KEY, pinging.id)[0] is not None


def test_a_scheduled_booking_is_dispatched_when_due(admin, beat):
    online_driver(admin, CENTRE[0] + 0.003, CENTRE[1])
    rider = new_user(admin, "rider")
    pickup_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    booking = rider.call(
        "POST", "/v1/bookings", expect=202, json={**TRIP, "pickup_at": pickup_at.isoformat()}
    )
    assert booking["status"] == "pending"
    assigned = _becomes(
        rider,
        booking["id"],
        lambda b: b["status"] == "assigned",
        "the scheduled booking to be dispatched",
    )
    # The stack's lead time is zero: it is offered at its pickup time, not before.
    assert dt.datetime.fromisoformat(assigned["assigned_at"]) >= pickup_at


def test_two_beats_at_once_do_no_double_work(admin, beats, engine):
    drivers = [online_driver(admin, CENTRE[0] + i * 0.0005, CENTRE[1], f"d{i}") for i in range(10)]
    rider = new_user(admin, "rider")
    ids = [rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"] for _ in drivers]
    with engine.connect() as conn:
        wait_for(
            lambda: (
                conn.scalar(text("SELECT count(*) FROM cab_bookings WHERE status = 'assigned'"))
                == len(ids)
            ),
            20,
            "every booking to be offered",
        )
    with engine.begin() as conn:
        conn.execute(text("UPDATE cab_bookings SET offer_expires_at = now() - interval '1 second'"))
    beats("beat-a"), beats("beat-b")
    with engine.connect() as conn:
        # Each offer lapses once; every driver is then excluded from the booking it let lapse,
        # so the bookings are re-offered to other drivers (or wait).
        wait_for(
            lambda: (
                conn.scalar(text("SELECT count(*) FROM booking_declines WHERE reason = 'timeout'"))
                == len(ids)
            ),
            20,
            "every offer to lapse",
        )
        # Greedy re-offers can strand only the last booking, whose one free driver is the
        # one that let it lapse.
        wait_for(
            lambda: (
                conn.scalar(text("SELECT count(*) FROM cab_bookings WHERE status = 'assigned'"))
                >= len(ids) - 1
            ),
            20,
            "the bookings to be offered to other drivers",
        )
        back_to_lapser = conn.scalar(
            text(
                "SELECT count(*) FROM cab_bookings b JOIN booking_declines d "
                "ON d.booking_id = b.id AND d.driver_id = b.driver_id WHERE b.status = 'assigned'"
            )
        )
        lapses = conn.execute(
            text(
                "SELECT booking_id, count(*) FROM booking_events WHERE reason = 'lapse' "
                "GROUP BY booking_id"
            )
        ).all()
        doubled = conn.execute(
            text(
                "SELECT driver_id FROM cab_bookings WHERE status = 'assigned' "
                "GROUP BY driver_id HAVING count(*) > 1"
            )
        ).all()
    assert sorted(b for b, _ in lapses) == ids and {n for _, n in lapses} == {1}
    assert doubled == [] and back_to_lapser == 0
    stats = wait_for(
        lambda: (s := admin.call("GET", "/v1/stats"))["source"] == "cache" and s,
        10,
        "beat's stats snapshot",
    )
    assert sum(stats["by_status"].values()) == len(ids)
    # Beat's health snapshot shows the live worker and the queues on /health.
    health = wait_for(
        lambda: (
            (
                h := requests.get(
                    f"{admin.base_url}/health", timeout=5, headers=admin.http.headers
                ).json()
            ).get("workers")
            and h
        ),
        10,
        "beat's health snapshot",
    )
    assert health["workers"]["workers_alive"]
    assert "dispatch.default" in health["workers"]["queue_depths"]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (.ci/run fetches it)")
def test_metrics_pass_promtool_and_add_up_across_worker_processes(admin, stack, engine):
    drivers = [online_driver(admin, CENTRE[0] + i * 0.001, CENTRE[1], f"d{i}") for i in range(12)]
    rider = new_user(admin, "rider")
    with cf.ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(lambda _: rider.call("POST", "/v1/bookings", expect=202, json=TRIP), drivers))
    with engine.connect() as conn:
        wait_for(
            lambda: (
                conn.scalar(text("SELECT count(*) FROM cab_bookings WHERE status = 'assigned'"))
                == len(drivers)
            ),
            20,
            "every booking to be offered",
        )
        offers = conn.scalar(text("SELECT count(*) FROM booking_events WHERE reason = 'offer'"))

    scrape = requests.get(
        f"{stack.url}/metrics",
        timeout=10,
        headers={"Authorization": f"Bearer {stack.settings.metrics_token}"},
    )
    assert scrape.status_code == 200
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=scrape.text, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def assigned_in(files) -> float:
        for metric in MultiProcessCollector.merge(files, accumulate=True):
            if metric.name == "smartroute_match_outcomes":
                return sum(
                    s.value
                    for s in metric.samples
                    if s.name.endswith("_total") and s.labels["outcome"] == "assigned"
                )
        return 0.0

    per_process = [assigned_in([str(f)]) for f in stack.metrics_dir.glob("counter_*.db")]
    scraped = sum(
        float(line.rsplit(" ", 1)[1])
        for line in scrape.text.splitlines()
        if line.startswith('smartroute_match_outcomes_total{outcome="assigned"}')
    )
    assert len([n for n in per_process if n]) >= 2, "work did not spread over two processes"
    # Every earlier test's offers counted too: the stack has run since the package began.
    assert sum(per_process) == scraped >= offers
    assert "http_request_duration_seconds_bucket" in scrape.text
    assert 'database_connections_active{component="smartroute-api"}' in scrape.text
