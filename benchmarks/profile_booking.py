"""CPU per step of one booking's life, in one process, with cProfile's hot spots.

    python benchmarks/profile_booking.py --bookings 300 --top 25

No load generator, no other process competing: the API app (through Flask's test
client, so the whole request path runs except the socket), a batch as the worker runs
it, and a publisher run, each timed with ``time.process_time`` on real PostgreSQL and
Redis (embedded in ``.smartroute/profile`` unless DATABASE_URL / REDIS_URL are set;
the database is emptied first). Celery messages the API sends go to the broker and are
purged at the end. Prints CPU ms per call of each step, then where it went.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import pstats
import re
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from dispatch import tokens, users  # noqa: E402
from dispatch.matching import batch as batches  # noqa: E402
from dispatch.states import Role  # noqa: E402
from smartroute.infra import migrate  # noqa: E402
from smartroute.infra.embedded import ensure_services  # noqa: E402
from smartroute.infra.push import Publisher  # noqa: E402
from smartroute.infra.settings import Settings  # noqa: E402

DATA_DIR = ROOT / ".smartroute" / "profile"
LIMIT = "10000000/minute"


class Steps:
    """CPU seconds per named step, and a profiler that only runs inside steps."""

    def __init__(self, profile: bool, steps: str | None = None) -> None:
        self.cpu = defaultdict(float)
        self.calls = defaultdict(int)
        # Timed in CPU, not wall: waiting on PostgreSQL costs this process nothing.
        self.profiler = cProfile.Profile(time.process_time) if profile else None
        self.profiled = re.compile(steps or ".")

    def run(self, name: str, fn, *args, **kwargs):
        profiling = self.profiler is not None and self.profiled.search(name)
        start = time.process_time()
        if profiling:
            self.profiler.enable()
        try:
            return fn(*args, **kwargs)
        finally:
            if profiling:
                self.profiler.disable()
            self.cpu[name] += time.process_time() - start
            self.calls[name] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bookings", type=int, default=300)
    parser.add_argument("--batch", type=int, default=20, help="bookings per batch")
    parser.add_argument(
        "--top",
        type=int,
        default=25,
        help="functions to list (0: no profiler, so the CPU times are exact)",
    )
    parser.add_argument("--steps", help="profile only the steps whose name matches this regex")
    parser.add_argument("--match", help="only functions whose file:line(name) matches this regex")
    parser.add_argument("--sort", default="cumulative", choices=("cumulative", "tottime"))
    args = parser.parse_args()

    base = Settings.from_env()
    services = ensure_services(base.database_url, base.redis_url, DATA_DIR)
    settings = replace(
        base.with_services(services.database_url, services.redis_url),
        secret_key=base.secret_key or "profile-secret-key-0123456789-0123456789",
        booking_limit_per_token=LIMIT,
        booking_limit_per_address=LIMIT,
        location_limit_per_token=LIMIT,
        location_limit_per_address=LIMIT,
        driver_action_limit_per_token=LIMIT,
    )
    migrate.upgrade(settings.database_url)
    from web import create_app
    from workers.context import cost_model, match_policy

    app = create_app(settings)
    rt = app.extensions["smartroute"]
    with rt.engine.begin() as conn:
        conn.execute(text("TRUNCATE users, cab_bookings RESTART IDENTITY CASCADE"))
    rt.redis.flushdb()

    with rt.sessions() as session, session.begin():
        rider = users.create_user(session, "rider", Role.RIDER)
        rider_token, _ = tokens.issue(session, rider, settings.secret_key, 3600)
        driver_tokens = []
        for i in range(args.batch):
            driver = users.create_user(session, f"driver-{i}", Role.DRIVER)
            driver_tokens.append(tokens.issue(session, driver, settings.secret_key, 3600)[0])
    client = app.test_client()

    def call(method: str, path: str, token: str, json=None, expect=200, headers=None):
        response = client.open(
            path,
            method=method,
            json=json,
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
        )
        assert response.status_code == expect, (path, response.status_code, response.json)
        return response.json

    for i, token in enumerate(driver_tokens):
        call("PUT", "/v1/drivers/me/location", token, {"lat": 12.97 + i * 1e-4, "lng": 77.59})
        call("PUT", "/v1/drivers/me/status", token, {"status": "available"})

    steps = Steps(profile=args.top > 0, steps=args.steps)
    publisher = Publisher(settings.redis_url)
    policy, cost = match_policy(), cost_model()
    body = {"pickup": {"lat": 12.97, "lng": 77.59}, "dropoff": {"lat": 12.93, "lng": 77.62}}
    by_driver = {int(tokens.verify(settings.secret_key, t).user_id): t for t in driver_tokens}

    def publish():
        publisher.publish_batch(rt.sessions, 500)

    def batch():
        with rt.sessions() as session, session.begin():
            return batches.dispatch_region(
                session, "default", policy, cost, now=dt.datetime.now(dt.UTC), limit=500
            )

    done = 0
    while done < args.bookings:
        booked = [
            steps.run(
                "POST /v1/bookings",
                call,
                "POST",
                "/v1/bookings",
                rider_token,
                body,
                expect=202,
                # As riders' apps send it, so a retry gets the same booking back.
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            for _ in range(args.batch)
        ]
        outcome = steps.run("batch (worker)", batch)
        assert len(outcome.offered) == len(booked), outcome
        steps.run("publish (worker)", publish)
        for booking_id, driver_id in outcome.offered.items():
            for action in ("accept", "start", "complete"):
                steps.run(
                    f"POST …/{action}",
                    call,
                    "POST",
                    f"/v1/bookings/{booking_id}/{action}",
                    by_driver[driver_id],
                )
        for token in driver_tokens:
            steps.run(
                "PUT /v1/drivers/me/location",
                call,
                "PUT",
                "/v1/drivers/me/location",
                token,
                {"lat": 12.97, "lng": 77.59},
            )
        steps.run("publish (worker)", publish)
        done += len(booked)

    print(f"{done} bookings, {args.batch} per batch; CPU in ms")
    print(f"{'step':32} {'calls':>7} {'per call':>9} {'per booking':>12}")
    total = 0.0
    for name, seconds in steps.cpu.items():
        total += seconds
        print(
            f"{name:32} {steps.calls[name]:7} {seconds / steps.calls[name] * 1e3:9.2f} "
            f"{seconds / done * 1e3:12.2f}"
        )
    print(f"{'all':32} {'':7} {'':9} {total / done * 1e3:12.2f}")
    if steps.profiler:
        out = io.StringIO()
        stats = pstats.Stats(steps.profiler, stream=out).sort_stats(args.sort)
        stats.print_stats(*filter(None, [args.match]), args.top)
        print(out.getvalue())
    for queue in settings.queues:
        rt.redis.delete(queue)
    services.stop()


if __name__ == "__main__":
    main()
