"""``GET /health``: the engine's status and each dependency's, for people and probes."""

from __future__ import annotations

import time

import psutil
import redis
from flask import Blueprint
from sqlalchemy import text

from smartroute import snapshots
from web.runtime import runtime, utcnow

health = Blueprint("health", __name__)

_STARTED = time.monotonic()


def _check_database() -> dict:
    started = time.perf_counter()
    try:
        with runtime().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return {"status": "down", "error": exc.__class__.__name__}
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def _check_redis() -> dict:
    started = time.perf_counter()
    client = redis.Redis.from_url(
        runtime().settings.redis_url, socket_timeout=2, socket_connect_timeout=2
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return {"status": "down", "error": exc.__class__.__name__}
    finally:
        client.close()
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def _check_broker() -> dict:
    started = time.perf_counter()
    try:
        with runtime().celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=2)
    except Exception as exc:
        return {"status": "down", "error": exc.__class__.__name__}
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def _memory() -> dict:
    process = psutil.Process()
    return {
        "rss_mb": round(process.memory_info().rss / 2**20, 1),
        "system_available_mb": round(psutil.virtual_memory().available / 2**20, 1),
    }


@health.get("/health")
def get_health():
    checks = {"database": _check_database(), "redis": _check_redis(), "broker": _check_broker()}
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
