"""The Celery app: the workers and beat run it (``workers.main``); the API and the relay
send their messages through one of their own (smartroute.infra.enqueue)."""

from __future__ import annotations

from celery import Celery

from beat_schedule import beat_schedule
from smartroute.infra.settings import Settings


def create_celery(settings: Settings) -> Celery:
    app = Celery("smartroute", broker=settings.celery_broker_url, include=["workers.tasks"])
    app.config_from_object("celeryconfig")
    app.conf.beat_schedule = beat_schedule(settings)
    return app
