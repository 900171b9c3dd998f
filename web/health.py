"""``GET /health``: the engine's status and each dependency's, for operators and probes.

``/health/live`` is public and checks nothing but the process. The detailed ``/health`` (and
``/metrics``, ``web/metrics.py``) answers only the metrics token or an admin token: it tells
which dependency is down, which is worth knowing to an attacker too. Its checks reuse the
app's long-lived Redis client and broker connection pool and are cached for a moment, so a
probe hammering it costs a dictionary lookup, not new connections.
"""

from __future__ import annotations

import functools
import hmac
import threading
import time
from collections.abc import Callable

import psutil
from flask import Blueprint, current_app, request
from sqlalchemy import text

from dispatch.states import Role
from smartroute.infra import snapshots
from smartroute.infra.queues import ping_broker
from web.auth import requires
from web.errors import ApiError
from web.runtime import Runtime, runtime, utcnow

health = Blueprint("health", __name__)

_STARTED = time.monotonic()
# How long one look at the dependencies serves every caller of this process.
CHECK_TTL_S = 2.0
BROKER_TIMEOUT_S = 2.0


@requires(Role.ADMIN)
def _admin() -> None:
    """Passes for an admin token; the 401 or 403 of any other view otherwise."""


def scraper_or_admin(view: Callable) -> Callable:
    """The view needs ``Authorization: Bearer`` with the metrics token or an admin token."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expected = runtime().settings.metrics_token
        if (
            expected is not None
            and scheme.lower() == "bearer"
            and hmac.compare_digest(token.strip().encode(), expected.encode())
        ):
            return view(*args, **kwargs)
        if not request.headers.get("Authorization"):
            raise ApiError(
                401,
                "unauthorized",
                "an Authorization: Bearer token (the metrics token or an admin's) is required",
                "Authorization",
            )
        _admin()
        return view(*args, **kwargs)

    return wrapper


class CachedChecks:
    """The latest result of ``check``, recomputed by one thread at a time once it is older
    than ``ttl_s``; the others wait for it rather than run their own."""

    def __init__(self, check: Callable[[], dict], ttl_s: float) -> None:
        self.check, self.ttl_s = check, ttl_s
        self.lock = threading.Lock()
        self.result: dict | None = None
        self.taken_at = 0.0

    def get(self) -> dict:
        with self.lock:
            if self.result is None or time.monotonic() - self.taken_at >= self.ttl_s:
                self.result = self.check()
                self.taken_at = time.monotonic()
            return self.result


def _timed(probe: Callable[[], object]) -> dict:
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:
        return {"status": "down", "error": exc.__class__.__name__}
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def _check_database(app_runtime: Runtime) -> None:
    with app_runtime.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _check_redis(app_runtime: Runtime) -> None:
    app_runtime.redis.ping()


def _check_broker(app_runtime: Runtime) -> None:
    ping_broker(app_runtime.celery, BROKER_TIMEOUT_S)


def _dependencies(app_runtime: Runtime) -> dict:
    return {
        "database": _timed(lambda: _check_database(app_runtime)),
        "redis": _timed(lambda: _check_redis(app_runtime)),
        "broker": _timed(lambda: _check_broker(app_runtime)),
    }


def _cached_dependencies() -> dict:
    app_runtime = runtime()
    cache = current_app.extensions.get("smartroute.health")
    if cache is None:
        cache = current_app.extensions.setdefault(
            "smartroute.health", CachedChecks(lambda: _dependencies(app_runtime), CHECK_TTL_S)
        )
    return cache.get()


def _memory() -> dict:
    process = psutil.Process()
    return {
        "rss_mb": round(process.memory_info().rss / 2**20, 1),
        "system_available_mb": round(psutil.virtual_memory().available / 2**20, 1),
    }


@health.get("/health")
@scraper_or_admin
def get_health():
    checks = _cached_dependencies()
    failing = sorted(name for name, check in checks.items() if check["status"] != "ok")
    body = {
        "status": "ok" if not failing else "degraded",
        "timestamp": utcnow().isoformat(),
        "uptime_s": round(time.monotonic() - _STARTED, 1),
        "memory": _memory(),
        **checks,
    }
    if failing:
        body["failing"] = failing
    # Beat's latest look at the worker side (informational: it never fails the check).
    workers = snapshots.load(runtime().redis, snapshots.HEALTH_KEY)
    if workers is not None:
        body["workers"] = workers
    return body, 200 if not failing else 503


@health.get("/health/live")
def get_liveness():
    """Cheap liveness for a process manager: the process answers; nothing else is checked."""
    return {"status": "ok"}
