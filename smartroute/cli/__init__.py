"""The ``smartroute`` command: run the whole engine, or one part of it.

Each command group is a module here; this one only puts them together.
"""

from __future__ import annotations

import click

from smartroute.cli import bench, db, operate, serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """SmartRoute: ride bookings in over HTTP, a driver for each, fast.

    Configuration comes from environment variables (DATABASE_URL, REDIS_URL,
    CELERY_BROKER_URL, SMARTROUTE_ADMIN_TOKEN, SMARTROUTE_*). With DATABASE_URL or
    REDIS_URL unset, an embedded PostgreSQL or Redis is started in SMARTROUTE_DATA_DIR
    (default .smartroute).
    """


for command in (serve.up, serve.api, serve.worker, serve.relay, serve.beat, db.db,
                operate.queues, operate.autoscale, bench.bench, bench.simulate):
    main.add_command(command)
