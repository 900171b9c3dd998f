"""Prometheus metrics shared by the API and the workers.

With several gunicorn workers or Celery prefork processes, prometheus-client's
multiprocess mode is used: ``PROMETHEUS_MULTIPROC_DIR`` is set (and wiped) by
``smartroute up``, ``api``, ``worker`` and ``relay`` before any process starts (each of the
last three gets a folder of its own unless the variable is already set), each process
writes its own files, and a scrape sums them. Gauges therefore name how they combine
across processes.

Every scrape endpoint (the API's, a worker node's and the relay's ``/metrics``) asks for
``Authorization: Bearer <SMARTROUTE_METRICS_TOKEN>``; ``scrape_allowed`` is that check.
"""

from __future__ import annotations

import hmac
import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "API request duration, by method, route pattern and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DATABASE_CONNECTIONS_ACTIVE = Gauge(
    "database_connections_active",
    "Database connections checked out of the pools, summed over live processes.",
    ["component"],
    multiprocess_mode="livesum",
)
TASKS = Counter(
    "smartroute_tasks_total", "Celery tasks finished, by task and outcome.", ["task", "state"]
)
TASK_FAILURES = Counter("smartroute_task_failures_total", "Celery tasks that raised.", ["task"])
TASK_DURATION = Histogram(
    "smartroute_task_duration_seconds",
    "Celery task run time.",
    ["task"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ASSIGN_LATENCY = Histogram(
    "smartroute_booking_assign_latency_seconds",
    "From a booking's creation to its (latest) offer to a driver.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
PUSHES = Counter("smartroute_pushes_total", "Outbox events delivered to the relays.")
RELAY_CONNECTIONS = Gauge(
    "smartroute_relay_connections",
    "Socket.IO clients connected, by room kind.",
    ["kind"],
    multiprocess_mode="livesum",
)
RELAY_REPLAYED = Counter(
    "smartroute_relay_replayed_total", "Events replayed to clients that reconnected."
)
RELAY_DRIVER_ACTIONS = Counter(
    "smartroute_relay_driver_actions_total",
    "Driver actions sent over the relay, by action and outcome (done, refused, failed).",
    ["action", "outcome"],
)
MATCH_OUTCOMES = Counter(
    "smartroute_match_outcomes_total", "Matching attempts by outcome.", ["outcome"]
)
BOOKINGS_CREATED = Counter(
    "smartroute_bookings_created_total",
    "Bookings accepted by the API (not idempotent repeats), by region.",
    ["region"],
)
PUSH_LATENCY = Histogram(
    "smartroute_push_latency_seconds",
    "From an outbox row's creation (its transaction's start) to its delivery to the relays.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RELAY_PUSHES = Counter(
    "smartroute_relay_pushes_total",
    "Messages a relay received from the push channel and emitted to its clients, by event.",
    ["event"],
)

# Drivers' location pings over the relay, counted a tick at a time (a ping itself only
# lands in a buffer).
RELAY_LOCATION_PINGS = Counter(
    "smartroute_relay_location_pings_total", "Location pings drivers sent over the relay."
)
RELAY_LOCATIONS_APPLIED = Counter(
    "smartroute_relay_locations_applied_total",
    "Drivers' positions the relay wrote to Redis (at most one per driver a tick).",
)
RELAY_LOCATIONS_IGNORED = Counter(
    "smartroute_relay_locations_ignored_total",
    "Location pings the relay did not apply, by reason: coalesced (a newer one came in the "
    "same tick), out_of_order (an equal or newer fix was applied first), stale (older than "
    "the bound), future, invalid, forbidden (not a driver).",
    ["reason"],
)
RELAY_LOCATION_WRITES = Histogram(
    "smartroute_relay_location_write_drivers",
    "Drivers in each of the relay's Redis writes of pings (one write a tick with pings).",
    buckets=(1, 10, 50, 100, 500, 1000, 5000, 20000),
)
# Labelled, so that only a process that sets it has a live gauge file: every process
# imports this module, and a gauge without labels would give each of them one.
RELAY_LOCATIONS_UNFLUSHED = Gauge(
    "smartroute_relay_locations_unflushed",
    "Drivers' positions the relay applied to Redis that wait for its next write to the "
    "store named (postgresql); grows while that store cannot take them.",
    ["store"],
    multiprocess_mode="livesum",
)
RELAY_LOCATION_FLUSHES = Histogram(
    "smartroute_relay_location_flush_drivers",
    "Drivers in each of the relay's PostgreSQL writes of last-known positions (one a flush).",
    buckets=(1, 10, 50, 100, 500, 1000, 5000, 20000),
)


# Drivers' positions pushed after each flush (web.relay_tracking).
RELAY_POSITIONS_PUSHED = Counter(
    "smartroute_relay_positions_pushed_total",
    "Drivers' positions a relay pushed after its flushes, by audience: rider (a "
    "driver_position to the rider of a ride accepted or under way), admin (an entry of a "
    "driver_positions batch to the admin dashboard).",
    ["to"],
)
RELAY_RIDER_POSITIONS_THINNED = Counter(
    "smartroute_relay_rider_positions_thinned_total",
    "Drivers' positions not pushed to a rider because the ride's last one went out less "
    "than SMARTROUTE_RIDER_POSITION_EVERY_S before.",
)


def scrape_allowed(metrics_token: str | None, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header carries the metrics token.

    With no token configured nobody may scrape: metrics name queues, regions and load,
    and an endpoint that is open by default stays open in production by mistake."""
    if not metrics_token or not authorization:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode(), metrics_token.encode())


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(*extra_collectors) -> bytes:
    """The text exposition of every process's metrics plus ``extra_collectors``, for a scrape."""
    extra = CollectorRegistry()
    for collector in extra_collectors:
        extra.register(collector)
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(extra)


def instrument_pool(engine, component: str) -> None:
    """Keep ``database_connections_active`` equal to the connections this pool has out."""
    from sqlalchemy import event

    gauge = DATABASE_CONNECTIONS_ACTIVE.labels(component)
    event.listen(engine, "checkout", lambda *_: gauge.inc())
    event.listen(engine, "checkin", lambda *_: gauge.dec())


# A reconnecting client told to reload its state over HTTP instead of a replay, by reason
# (older than the replay window, a replay log reset, Redis unavailable).
RELAY_RESYNCS = Counter(
    "smartroute_relay_resyncs_total",
    "Reconnecting clients told to resync instead of replaying.",
    ["reason"],
)

# Arrival, cancellations, no-shows and stuck rides.
DRIVER_CANCELLATIONS = Counter(
    "smartroute_driver_cancellations_total",
    "Rides drivers accepted and then cancelled before pickup (back to matching), by region.",
    ["region"],
)
RIDE_ENDINGS = Counter(
    "smartroute_ride_endings_total",
    "Rides ended otherwise than by their driver completing them, by how: cancelled by a "
    "rider or an admin, no-show, force-completed.",
    ["how"],
)
STUCK_RIDES = Counter(
    "smartroute_stuck_rides_total",
    "Rides accepted and never started that beat took from their driver, by outcome "
    "(rematched, cancelled).",
    ["outcome"],
)
# The window each region's next batch waits (dispatch.matching.window), as its last batch
# set it. Labelled, so only a worker that ran a batch has a file for it.
BATCH_WINDOW = Gauge(
    "smartroute_batch_window_seconds",
    "How long the region's next batch waits to gather bookings, as its last batch set it.",
    ["region"],
    multiprocess_mode="mostrecent",
)

# Rebalancing. A counter sums across processes as it is in multiprocess mode.
REPOSITION_SUGGESTIONS = Counter(
    "smartroute_reposition_suggestions_total",
    "Suggestions pushed to idle drivers to wait in another zone, by region.",
    ["region"],
)
