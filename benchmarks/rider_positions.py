"""What pushing drivers' positions after a flush costs: the flushing relay, and every other.

    python benchmarks/rider_positions.py --drivers 5000 --rides 2500 --flushes 10

On the embedded PostgreSQL and Redis in ``.smartroute/bench``, makes ``--drivers`` drivers of
whom the first ``--rides`` hold an accepted ride, then runs the relay's own code after a flush
of every driver's position (``web.relay_tracking.PositionFeed.after_flush`` with the relays'
``CountingRedisManager.emit_each``), ``--flushes`` times: the query for the tracked rides, the
events, and one Redis pipeline of publishes. Prints the wall time of each part per flush.

A relay process with no clients listens on the same channel meanwhile, as every other relay
would: its CPU time (user + system, less what it spends idle) per flush is what a flush of
another relay costs it to read and drop, none of those riders being its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from relay_sockets import (  # noqa: E402
    SECRET,
    connect,
    drivers_with_tokens,
    free_port,
    wait_for_relay,
)

from dispatch.db import make_engine, make_sessionmaker  # noqa: E402
from dispatch.eta import GreatCircleEta  # noqa: E402
from dispatch.tracking import tracked_rides  # noqa: E402
from smartroute.cli.processes import relay_argv  # noqa: E402
from smartroute.infra import migrate  # noqa: E402
from smartroute.infra.embedded import ensure_services  # noqa: E402
from smartroute.infra.push import CHANNEL  # noqa: E402
from web.relay import CountingRedisManager  # noqa: E402
from web.relay_tracking import PositionFeed  # noqa: E402

IDLE_S = 3.0
METRICS_TOKEN = "rider-positions-benchmark-metrics-token"
LISBON = (38.7223, -9.1393)


def make_rides(database_url: str, drivers: int, rides: int) -> list[int]:
    """``drivers`` new drivers, the first ``rides`` of them on an accepted ride of a rider of
    their own; their ids."""
    engine = make_engine(database_url)
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                text(
                    "INSERT INTO users (name, role) SELECT 'bench-positions-driver', 'driver' "
                    "FROM generate_series(1, :n) RETURNING id"
                ),
                {"n": drivers},
            ).scalars()
        )
        conn.execute(
            text(
                "INSERT INTO drivers (user_id, status) "
                "SELECT unnest(CAST(:ids AS bigint[])), 'busy'"
            ),
            {"ids": ids},
        )
        riders = list(
            conn.execute(
                text(
                    "INSERT INTO users (name, role) SELECT 'bench-positions-rider', 'rider' "
                    "FROM generate_series(1, :n) RETURNING id"
                ),
                {"n": rides},
            ).scalars()
        )
        conn.execute(
            text(
                """
                INSERT INTO cab_bookings (user_id, driver_id, pickup_lat, pickup_lng,
                    dropoff_lat, dropoff_lng, date, time, status, expires_at, accepted_at)
                SELECT r, d, :lat, :lng, :lat + 0.03, :lng, current_date, localtime,
                    'accepted', now() + interval '1 hour', now()
                FROM unnest(CAST(:riders AS bigint[]), CAST(:drivers AS bigint[])) AS t(r, d)
                """
            ),
            {"riders": riders, "drivers": ids[:rides], "lat": LISBON[0], "lng": LISBON[1]},
        )
    engine.dispose()
    return ids


def pushes_read(port: int) -> float:
    """The positions events the listening relay has read off the channel."""
    exposition = requests.get(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=10,
    ).text
    return sum(
        float(line.split()[1])
        for line in exposition.splitlines()
        if line.startswith("smartroute_relay_pushes_total{")
        and ('event="driver_position"' in line or 'event="driver_positions"' in line)
    )


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drivers", type=int, default=5000)
    parser.add_argument("--rides", type=int, default=2500)
    parser.add_argument("--flushes", type=int, default=10)
    args = parser.parse_args()
    services = ensure_services(None, None, Path(".smartroute/bench"))
    relay = None
    try:
        migrate.upgrade(services.database_url)
        ids = make_rides(services.database_url, args.drivers, args.rides)
        env = {
            **os.environ,
            "DATABASE_URL": services.database_url,
            "REDIS_URL": services.redis_url,
            "SMARTROUTE_SECRET_KEY": SECRET,
            "SMARTROUTE_LOG_LEVEL": "WARNING",
            "SMARTROUTE_METRICS_TOKEN": METRICS_TOKEN,
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        port = free_port()
        relay = subprocess.Popen(relay_argv("127.0.0.1", port), env=env, start_new_session=True)
        wait_for_relay(port, relay)
        listener = psutil.Process(relay.pid)
        # A relay subscribes to the channel once it has a client: one driver, who is no
        # rider's and so is sent none of the events.
        held = connect(port, drivers_with_tokens(services.database_url, 1)[0], 10.0)

        sessions = make_sessionmaker(make_engine(services.database_url, pool_size=2))
        manager = CountingRedisManager(services.redis_url, channel=CHANNEL, connections=4, wait_s=5)
        manager._redis_connect()  # No server: none of these riders is connected here.
        published: list[int] = []

        def emit_each(messages):
            published.append(len(messages))
            manager.emit_each(messages)

        clock = [0.0]
        feed = PositionFeed(
            sessions, GreatCircleEta(), emit_each, every_s=2.0, clock=lambda: clock[0]
        )
        now = time.time()
        flushed = {
            driver: (LISBON[0] - 0.01 + i / 1e6, LISBON[1], now) for i, driver in enumerate(ids)
        }
        with sessions() as session:  # Warm the plan and the pool.
            tracked_rides(session, list(flushed))

        idle_from = cpu_s(listener)
        time.sleep(IDLE_S)
        idle_per_s = (cpu_s(listener) - idle_from) / IDLE_S

        queries, totals = [], []
        before, started = cpu_s(listener), time.monotonic()
        for _ in range(args.flushes):
            clock[0] += 2.0  # A flush interval on: no ride is thinned.
            t0 = time.perf_counter()
            with sessions() as session:
                tracked_rides(session, list(flushed))
            t1 = time.perf_counter()
            feed.after_flush(flushed)
            t2 = time.perf_counter()
            queries.append(t1 - t0)
            totals.append(t2 - t1)
        expected = args.flushes * published[-1]
        while pushes_read(port) < expected:
            if time.monotonic() - started > 120:
                raise SystemExit(f"the other relay read {pushes_read(port)} of {expected}")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        listener_cpu = cpu_s(listener) - before - idle_per_s * elapsed

        messages = published[-1]
        print(
            f"{args.drivers} drivers, {args.rides} on a ride: {messages} events a flush "
            f"({messages - 1} to riders, 1 batch to admins), {args.flushes} flushes"
        )
        print(
            f"flushing relay: tracked-rides query {1000 * statistics.median(queries):.1f} ms, "
            f"whole push (query, events, one pipeline) {1000 * statistics.median(totals):.1f} ms "
            "a flush (median)"
        )
        print(
            f"another relay, no clients: {1000 * listener_cpu / args.flushes:.1f} ms CPU a flush "
            f"({1e6 * listener_cpu / (args.flushes * messages):.1f} µs an event; "
            f"idle {1000 * idle_per_s:.1f} ms/s)"
        )
        held.close()
    finally:
        if relay is not None and relay.poll() is None:
            relay.terminate()
            relay.wait(timeout=30)
        services.stop()


if __name__ == "__main__":
    main()
