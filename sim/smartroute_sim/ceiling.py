"""Celery's own ceiling on this machine: no-op tasks drained per second; and the API
server's, no-op requests answered per second.

Same broker, same ``celeryconfig`` (late acks, prefetch 1), same worker flags and log level
and the same number of prefork processes as the engine's worker; only the task body
differs. The queue is filled first and the worker started after, so the number is the drain
rate alone: from the first message taken to an empty queue.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from smartroute_sim.client import Api
from smartroute_sim.engine import broker_client
from smartroute_sim.noop import NOOP_QUEUE, NOOP_TASK

START_TIMEOUT_S = 60.0
POLL_S = 0.01


@dataclass(frozen=True)
class Ceiling:
    """How many no-op tasks (or requests) were done, in how long."""

    done: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


def worker_argv(concurrency: int) -> list[str]:
    """The engine's worker command (smartroute.cli.worker_argv) with the no-op app."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "smartroute_sim.noop",
        "worker",
        "--queues",
        NOOP_QUEUE,
        "--concurrency",
        str(concurrency),
        "--hostname",
        f"bench-noop-{os.getpid()}@%h",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]


def measure(
    broker_url: str,
    concurrency: int,
    tasks: int = 3000,
    log_path: Path | None = None,
    timeout_s: float = 120.0,
) -> Ceiling:
    """Fill the no-op queue with ``tasks`` messages, start a worker, time the drain."""
    from smartroute_sim.noop import app

    client = broker_client(broker_url)
    if client is None:
        raise ValueError(f"the ceiling needs a Redis broker, not {broker_url!r}")
    client.delete(NOOP_QUEUE)
    app.conf.broker_url = broker_url
    with app.producer_pool.acquire(block=True) as producer:
        for _ in range(tasks):
            app.send_task(NOOP_TASK, queue=NOOP_QUEUE, producer=producer)
    env = {**os.environ, "CELERY_BROKER_URL": broker_url}
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    worker = subprocess.Popen(
        worker_argv(concurrency),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        # The worker's startup is not Celery's per-message cost: start timing at the first
        # message taken. The queue length is the only signal the broker gives; poll it.
        while (waiting := client.llen(NOOP_QUEUE)) >= tasks:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the no-op worker did not start consuming")
            time.sleep(POLL_S)
        first, at_first = waiting, time.monotonic()
        deadline = at_first + timeout_s
        while (waiting := client.llen(NOOP_QUEUE)) > 0 and time.monotonic() < deadline:
            time.sleep(POLL_S)
        seconds = time.monotonic() - at_first
        return Ceiling(first - waiting, seconds)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        client.delete(NOOP_QUEUE)
        if log_path:
            log.close()


def measure_http(api_url: str, requests_total: int = 3000, threads: int = 16) -> Ceiling:
    """The API server's own ceiling here: ``GET /health/live`` (no database, no Redis) as
    fast as ``threads`` keep-alive clients of the load generator can send it. Divided by
    the HTTP requests a booking takes (the booking and pings; the driver actions too when
    they go over HTTP), it bounds the bookings a second this API server and client can
    carry, whatever the engine does behind them."""
    api = Api(api_url)
    per_thread = max(1, requests_total // threads)
    failures: list[int] = []

    def send() -> None:
        for _ in range(per_thread):
            if api.call("GET", "/health/live").status_code != 200:
                failures.append(1)

    pool = [threading.Thread(target=send) for _ in range(threads)]
    started = time.monotonic()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    seconds = time.monotonic() - started
    return Ceiling(per_thread * threads - len(failures), seconds)
