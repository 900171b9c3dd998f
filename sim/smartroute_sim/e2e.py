"""``smartroute bench e2e``: open-loop bookings at a fixed rate through the whole engine.

Accept latency (the 202's round trip, from the scheduled send), assignment latency (the
booking's ``created_at`` to ``assigned_at``, both stamped by the engine), push latency
(``assigned_at`` to the driver's Socket.IO client receiving ``new_assignment``), the
sustained rate, lost bookings and double assignments (SQL when the database is reachable),
every engine process's peak memory, and Celery's own no-op ceiling on the same broker.
"""

from __future__ import annotations

import math
from pathlib import Path

from smartroute_sim import ceiling
from smartroute_sim.engine import Target
from smartroute_sim.report import Recorder, write_chart
from smartroute_sim.run import DriverPolicy, LoadPlan, LoadRun

# The engine's performance targets, checked in every result.
ACCEPT_P99_MS = 50.0
CEILING_RATIO = 0.6
PUSH_P99_BEYOND_WINDOW_MS = 1500.0
RSS_LIMIT_MB = 200.0


def default_drivers(rate: float, batch_window_s: float) -> int:
    """Enough drivers that each batch finds one free per booking: a driver is busy from its
    offer until its quick complete, a window or so."""
    return math.ceil(2 * rate * max(batch_window_s, 0.5)) + 10


def run_e2e(
    target: Target,
    rate: float,
    duration_s: float,
    drivers: int | None = None,
    seed: int = 1,
    drain_s: float = 30.0,
    ceiling_tasks: int = 3000,
    on_sample=None,
    chart: Path | None = None,
    actions_over: str = "relay",
) -> dict:
    window = target.settings.batch_window_s
    plan = LoadPlan(
        rate=rate,
        duration_s=duration_s,
        drivers=drivers or default_drivers(rate, window),
        riders=max(10, min(200, math.ceil(rate))),
        seed=seed,
        drain_s=drain_s,
        # Open loop: enough senders that a slow answer never delays the next send.
        send_threads=min(512, max(64, math.ceil(rate))),
    )
    # Celery's ceiling first, while the engine is idle: measured after the load, it would
    # share the cores with whatever backlog an overloaded engine is still working off.
    measured = None
    if target.broker_url:
        log_path = target.log_path.with_name("ceiling.log") if target.log_path else None
        measured = ceiling.measure(
            target.broker_url, target.worker_concurrency, ceiling_tasks, log_path=log_path
        )
    http = ceiling.measure_http(target.api)
    policy = DriverPolicy(actions_over=actions_over)
    run = LoadRun(target, plan, policy, on_sample=on_sample)
    checked = run.execute()
    rec = run.recorder
    if chart is not None:
        write_chart(
            chart,
            rec,
            f"smartroute bench e2e: {rate:g} bookings/s for {duration_s:g} s",
            latencies={
                "accept": "booking accepted (HTTP 202)",
                "assign": "committed → assigned",
                "push": "assigned → driver's client",
            },
            throughput={
                "booked": "booked (202)",
                "pushed": "assigned (pushed)",
                "completed": "completed",
            },
            gauges={
                **{f"depth:{q}": f"queue {q}" for q in target.settings.queues},
                "waiting": "bookings waiting",
            },
        )
    result = {
        "rate_offered": rate,
        "rate_sustained": checked["rate_pushed_in_window"],
        "rate_accepted": checked["rate_accepted"],
        "duration_s": duration_s,
        "drivers": plan.drivers,
        "batch_window_s": window,
        "worker_concurrency": target.worker_concurrency,
    }
    result.update(booking_figures(checked, rec))
    if measured is not None:
        result["celery_noop_ceiling"] = round(measured.per_s, 1)
        result["ratio"] = round(result["rate_sustained"] / measured.per_s, 3)
    else:
        result["celery_noop_ceiling"] = None
        result["ratio"] = None
    # What bounds a booking's HTTP side: its requests, against the API server's own ceiling.
    bookings = checked["bookings"]
    result["http_noop_ceiling"] = round(http.per_s, 1)
    result["requests_per_booking"] = (
        round(checked["http_requests"] / bookings, 2) if bookings else None
    )
    result["relay_actions_per_booking"] = (
        round(checked["counts"].get("relay_actions", 0) / bookings, 2) if bookings else None
    )
    result["driver_actions_over"] = policy.actions_over
    result["meets_targets"] = targets_met(result)
    return result


def booking_figures(checked: dict, rec: Recorder) -> dict:
    """What a load run's bookings came to: latencies, losses, double assignments, memory,
    CPU and client errors (``bench e2e``'s figures, shared by ``bench fleet``)."""
    result: dict = {}
    for name in ("accept", "assign", "push", "book_to_push", "send_lag"):
        summary = rec.summary(name)
        result[f"{name}_p50_ms"] = summary["p50_ms"]
        result[f"{name}_p99_ms"] = summary["p99_ms"]
    result.update(
        {
            key: checked[key]
            for key in (
                "bookings",
                "lost",
                "missing",
                "unfinished",
                "lost_bookings",
                "by_status",
                "double_assigned",
                "double_assigned_seen_by_drivers",
                "checked_by",
                "max_rss_mb",
                "max_rss_mb_by_role",
                "loadgen_cpu_percent",
                "max_queue_depth",
                "cpu_ms_per_booking_by_role",
            )
        }
    )
    result["errors"] = {
        k: v
        for k, v in checked["counts"].items()
        if k.endswith(("_errors", "_refused"))
        or k in ("rate_limited", "socket_disconnects", "duplicate_pushes", "relay_action_fallbacks")
    }
    return result


def targets_met(r: dict) -> dict:
    # Pushed within 1.5 s of the assignment, and within the batch window plus 1.5 s of the
    # booking being sent (a booking waits up to one window for its batch).
    push_ok = (
        r["push_p99_ms"] is not None
        and r["book_to_push_p99_ms"] is not None
        and (
            r["push_p99_ms"] <= PUSH_P99_BEYOND_WINDOW_MS
            and r["book_to_push_p99_ms"] <= r["batch_window_s"] * 1000 + PUSH_P99_BEYOND_WINDOW_MS
        )
    )
    checks = {
        "accept_p99": r["accept_p99_ms"] is not None and r["accept_p99_ms"] <= ACCEPT_P99_MS,
        "push_p99": push_ok,
        "nothing_lost": r["lost"] == 0 and r["bookings"] > 0,
        "no_double_assignment": r["double_assigned"] == 0,
        "rss_under_200mb": r["max_rss_mb"] < RSS_LIMIT_MB,
        "kept_up": r["rate_sustained"] >= 0.95 * r["rate_offered"],
        "ratio": r["ratio"] is not None and r["ratio"] >= CEILING_RATIO,
    }
    checks["all"] = all(checks.values())
    return checks


def default_log_dir() -> Path:
    return Path(".smartroute") / "bench"
