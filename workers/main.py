"""The Celery app that ``celery -A workers.main`` (and ``smartroute worker|beat``) runs."""

from smartroute.infra.celery_app import create_celery
from smartroute.infra.logs import configure_logging
from smartroute.infra.settings import Settings
from workers import (
    beat_shutdown,  # noqa: F401 - beat stops on the first signal (beat_init)
    metrics_server,  # noqa: F401 - serves the node's /metrics (worker_init)
)
from workers.heartbeat import Heartbeat

settings = Settings.from_env()
configure_logging(settings)
app = create_celery(settings)
# Worker nodes only: the API builds its app with create_celery too, and needs none of this.
app.steps["worker"].add(Heartbeat)
