"""What Celery beat runs, and how often. Run exactly one beat; each sweep is safe if two do.

Every entry expires after its own interval: if workers are down, sweeps do not pile up
in the queue, the next one simply does the work.
"""

from __future__ import annotations

from smartroute.settings import Settings


def beat_schedule(settings: Settings) -> dict:
    return {
        "lapse-unanswered-offers": {
            "task": "workers.tasks.lapse_offers",
            "schedule": settings.sweep_offers_every_s,
            "options": {"queue": "maintenance", "expires": settings.sweep_offers_every_s},
        },
        "redispatch-pending-bookings": {
            "task": "workers.tasks.redispatch_pending",
            "schedule": settings.redispatch_every_s,
            "options": {"queue": "maintenance", "expires": settings.redispatch_every_s},
        },
        "expire-overdue-bookings": {
            "task": "workers.tasks.expire_bookings",
            "schedule": settings.expire_every_s,
            "options": {"queue": "maintenance", "expires": settings.expire_every_s},
        },
        # Beat's own settings decide how long silence lasts, so the threshold travels with
        # the message rather than depending on each worker's environment.
        "mark-silent-drivers-offline": {
            "task": "workers.tasks.mark_drivers_offline",
            "schedule": settings.offline_every_s,
            "kwargs": {"stale_after_s": settings.driver_stale_s},
            "options": {"queue": "maintenance", "expires": settings.offline_every_s},
        },
        "refresh-booking-stats": {
            "task": "workers.tasks.refresh_stats",
            "schedule": settings.stats_every_s,
            "options": {"queue": "maintenance", "expires": settings.stats_every_s},
        },
        "refresh-health-metrics": {
            "task": "workers.tasks.refresh_health",
            "schedule": settings.health_every_s,
            "options": {"queue": "maintenance", "expires": settings.health_every_s},
        },
    }
