"""A Celery app with one task that does nothing, for measuring Celery's own ceiling.

Built like ``smartroute.infra.celery_app.create_celery``: the same broker and
``celeryconfig`` (JSON, late acks, reject on worker lost, prefetch 1), so the only
difference from the engine's worker is the task body. Run by ``smartroute_sim.ceiling`` as
``celery -A smartroute_sim.noop worker``.
"""

from celery import Celery

from smartroute.infra.settings import ConfigError, Settings

NOOP_QUEUE = "smartroute.bench.noop"
NOOP_TASK = "smartroute_sim.noop.noop"


def _broker() -> str | None:
    try:
        return Settings.from_env().celery_broker_url
    except ConfigError:  # Imported by the benchmark itself, which names the broker later.
        return None


app = Celery("smartroute-noop", broker=_broker())
app.config_from_object("celeryconfig")
app.conf.task_default_queue = NOOP_QUEUE
app.conf.task_routes = {}


@app.task(name=NOOP_TASK)
def noop() -> None:
    """Nothing: what is left is Celery's own cost per message."""
