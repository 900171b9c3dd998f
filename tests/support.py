"""Helpers shared by tests that run real processes."""

from __future__ import annotations

import functools
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import redis
import requests
from celery import Celery


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``.

    Used only where no event exists to wait on (a row reaching a status in another
    process); each poll is a cheap query.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def healthy(base_url: str, token: str | None = None) -> bool:
    """``base_url``'s /health answers 200 (the API's needs the metrics ``token``; the
    relay's is public). Refused, or too slow to answer on a busy machine, is "not yet",
    for ``wait_for``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return requests.get(f"{base_url}/health", headers=headers, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def waiting_on_locks(engine, application_name: str, wait_event: str | None = None) -> int:
    """How many of ``application_name``'s sessions wait on a lock (of kind ``wait_event``,
    e.g. "advisory", if given): how a test sees another process block inside its
    transaction, there being no event to wait on."""
    from sqlalchemy import text

    # A fresh connection each time: pg_stat_activity is a per-transaction snapshot.
    with engine.connect() as probe:
        return probe.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                "AND wait_event_type = 'Lock' AND (:event IS NULL OR wait_event = :event)"
            ),
            {"name": application_name, "event": wait_event},
        )


def stop_consuming(celery: Celery, node: str, queue_name: str, broker: redis.Redis) -> None:
    """Cancel ``node``'s consumer of ``queue_name`` and prove it no longer pops from it."""
    celery.control.cancel_consumer(queue_name, destination=[node], reply=True)

    # A blocking pop already in flight may still take one message; kombu's BRPOP returns
    # within 1 s, so a probe that survives 2 s shows the consumer is really gone. The probe
    # names a booking that cannot exist, so running it is harmless.
    def probe():
        celery.send_task("workers.tasks.match_booking", args=[2**62], queue=queue_name)

    probe()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if broker.llen(queue_name) == 0:
            probe()
            deadline = time.monotonic() + 2
        time.sleep(0.1)
    broker.delete(queue_name)


@functools.cache
def bench_matching(seed: int) -> dict:
    """What ``smartroute bench matching --seed SEED --json`` prints, run once per seed for
    the whole test run (each run replays the city through every matcher)."""
    out = subprocess.run(
        [sys.executable, "-m", "smartroute", "bench", "matching", "--seed", str(seed), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return json.loads(out.stdout)


def database_at(database_url: str, name: str, revision: str) -> str:
    """The URL of a scratch database ``name`` beside ``database_url``'s, emptied and
    migrated to ``revision``: for a migration's test to fill before upgrading it."""
    from sqlalchemy import make_url

    from smartroute.infra import migrate
    from smartroute.infra.embedded import ensure_database

    url = make_url(database_url)
    ensure_database(url.set(database="postgres").render_as_string(hide_password=False), name)
    database = url.set(database=name).render_as_string(hide_password=False)
    migrate.downgrade(database, "base")
    migrate.upgrade(database, revision)
    return database
