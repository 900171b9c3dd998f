"""What Celery beat runs, and how often. Run exactly one beat; each sweep is safe if two do.

Every entry expires after its own interval: if workers are down, sweeps do not pile up
in the queue, the next one simply does the work.
"""

from __future__ import annotations

from smartroute.infra.settings import Settings


def _every(seconds: float, task: str, **kwargs) -> dict:
    entry = {
        "task": f"workers.tasks.{task}",
        "schedule": seconds,
        "options": {"queue": "maintenance", "expires": seconds},
    }
    if kwargs:
        entry["kwargs"] = kwargs
    return entry


def beat_schedule(settings: Settings) -> dict:
    return {
        "lapse-unanswered-offers": _every(settings.sweep_offers_every_s, "lapse_offers"),
        "redispatch-pending-bookings": _every(settings.redispatch_every_s, "redispatch_pending"),
        "expire-overdue-bookings": _every(settings.expire_every_s, "expire_bookings"),
        # Beat's own settings decide how long silence lasts, so the threshold travels with
        # the message rather than depending on each worker's environment.
        "mark-silent-drivers-offline": _every(
            settings.offline_every_s, "mark_drivers_offline", stale_after_s=settings.driver_stale_s
        ),
        # Rides accepted and never started, and rides under way for too long.
        "recover-stuck-rides": _every(settings.stuck_every_s, "recover_stuck_rides"),
        "refresh-booking-stats": _every(settings.stats_every_s, "refresh_stats"),
        "refresh-health-metrics": _every(settings.health_every_s, "refresh_health"),
        "refresh-surge": _every(settings.surge_every_s, "refresh_surge"),
        # The safety net behind the publish each commit asks for.
        "publish-outbox": {
            **_every(settings.publish_every_s, "publish_outbox"),
            "options": {"queue": "notify", "expires": settings.publish_every_s},
        },
        # Each run deletes a bounded number of rows (workers.tasks.PRUNE_*), so these run
        # often enough to keep up with a busy day's keys.
        "prune-idempotency-keys": _every(60.0, "prune_idempotency_keys"),
        "prune-access-tokens": _every(600.0, "prune_access_tokens"),
        "prune-quotes": _every(60.0, "prune_quotes"),
        # Advisory: where idle drivers should wait for the next bookings. Each suggestion
        # holds until the next run, so the interval travels with the message too.
        "suggest-repositioning": _every(
            settings.rebalance_every_s,
            "suggest_repositioning",
            interval_s=settings.rebalance_every_s,
        ),
    }
