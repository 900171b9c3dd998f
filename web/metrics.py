"""``GET /metrics`` for Prometheus, and the timing of every API request.

The scrape needs the metrics token or an admin token (``web/health.py``). Its live gauges
(database counts, queue depths, the stats snapshot) are read at most once per
``web.health.CHECK_TTL_S`` per process, through the app's own pools.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily

from dispatch.outbox import oldest_unsent_age_s
from dispatch.stats import active_bookings, oldest_pending_age_s
from dispatch.surge import surge_levels
from dispatch.sweeps import overrunning_rides
from smartroute.infra import heartbeat, snapshots
from smartroute.infra.metrics import HTTP_REQUEST_DURATION, exposition
from smartroute.infra.queues import pooled_queue_depths
from web import health
from web.health import BROKER_TIMEOUT_S, CachedChecks, scraper_or_admin
from web.runtime import Runtime, runtime

log = logging.getLogger(__name__)

metrics = Blueprint("metrics", __name__)


def time_requests(app: Flask) -> None:
    @app.before_request
    def _start_timer():
        g.request_started = time.perf_counter()

    @app.after_request
    def _observe(response):
        started = g.pop("request_started", None)
        if started is not None:
            # The route pattern, not the path: /v1/bookings/<id:booking_id> is one series.
            route = request.url_rule.rule if request.url_rule else "unmatched"
            HTTP_REQUEST_DURATION.labels(request.method, route, str(response.status_code)).observe(
                time.perf_counter() - started
            )
        return response


def _queue_depths(app_runtime: Runtime) -> dict[str, int]:
    """Messages waiting in each queue, through a connection of the app's broker pool (kept
    between scrapes) rather than a new one per scrape."""
    return pooled_queue_depths(app_runtime.celery, app_runtime.settings.queues, BROKER_TIMEOUT_S)


class LiveCollector:
    """Gauges read from Postgres, the broker and the stats snapshot, at most once per
    ``ttl_s``: a scrape in between is served the families read last time."""

    def __init__(self, app_runtime: Runtime, ttl_s: float) -> None:
        self.runtime = app_runtime
        self.cache = CachedChecks(lambda: {"families": list(self._read())}, ttl_s)

    def collect(self):
        return iter(self.cache.get()["families"])

    def _read(self):
        now = dt.datetime.now(dt.UTC)
        with self.runtime.read_sessions() as session:
            active = active_bookings(session)
            oldest_s = oldest_pending_age_s(session, now)
            lag = oldest_unsent_age_s(session, now)
            levels = surge_levels(session)
            overrunning = overrunning_rides(session)
        # Not active_bookings_total: the `_total` suffix is reserved for
        # counters in Prometheus' naming rules (promtool rejects it on a gauge).
        yield GaugeMetricFamily(
            "smartroute_active_bookings",
            "Bookings a driver holds (assigned, accepted, in progress).",
            value=active,
        )
        yield GaugeMetricFamily(
            "smartroute_overrunning_rides",
            "Rides in progress flagged as running past SMARTROUTE_MAX_RIDE_S.",
            value=overrunning,
        )
        yield GaugeMetricFamily(
            "smartroute_outbox_lag_seconds",
            "Age of the oldest push not yet delivered to the relays.",
            value=lag,
        )
        yield GaugeMetricFamily(
            "smartroute_oldest_pending_booking_age_seconds",
            "Age of the oldest booking still waiting for a driver.",
            value=0 if oldest_s is None else oldest_s,
        )

        surge = GaugeMetricFamily(
            "smartroute_surge_multiplier",
            "Each region's surge price multiplier as beat last computed it (1 is none).",
            labels=["region"],
        )
        for region, level in levels.items():
            surge.add_metric([region], level.multiplier_pct / 100)
        yield surge

        depth = GaugeMetricFamily(
            "smartroute_queue_depth", "Messages waiting per Celery queue.", labels=["queue"]
        )
        try:
            for queue, count in _queue_depths(self.runtime).items():
                depth.add_metric([queue], count)
        except Exception as exc:  # The broker being down must not break the scrape.
            log.warning("queue depth unavailable: %s", exc.__class__.__name__)
        yield depth
        yield GaugeMetricFamily(
            "smartroute_workers_alive",
            "Worker nodes beating (heartbeat).",
            value=len(heartbeat.alive(self.runtime.redis, time.time())),
        )

        stats = snapshots.load(self.runtime.redis, snapshots.STATS_KEY)
        if stats is not None:
            by_status = GaugeMetricFamily(
                "smartroute_bookings",
                "Bookings by status (from beat's stats snapshot).",
                labels=["status"],
            )
            for status, count in stats["by_status"].items():
                by_status.add_metric([status], count)
            yield by_status


@metrics.get("/metrics")
@scraper_or_admin
def get_metrics():
    collector = current_app.extensions.get("smartroute.infra.metrics")
    if collector is None:
        collector = current_app.extensions.setdefault(
            "smartroute.infra.metrics", LiveCollector(runtime(), health.CHECK_TTL_S)
        )
    return Response(exposition(collector), mimetype=CONTENT_TYPE_LATEST)
