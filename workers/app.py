"""The Celery app factory. ``workers.main`` builds the instance the worker and beat run."""

from __future__ import annotations

from celery import Celery

from beat_schedule import beat_schedule
from smartroute.infra.settings import Settings


def create_celery(settings: Settings) -> Celery:
    app = Celery("smartroute", broker=settings.celery_broker_url, include=["workers.tasks"])
    app.config_from_object("celeryconfig")
    app.conf.beat_schedule = beat_schedule(settings)
    return app
