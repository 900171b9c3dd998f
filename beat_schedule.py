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
    }
