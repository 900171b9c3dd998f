"""The ``smartroute`` command group: every command of this package, and those that other
installed distributions declare in the ``smartroute.commands`` entry-point group (the load
tools, ``pip install -e ./sim``, add ``bench`` and ``simulate`` that way, so the engine never
imports them and a production install goes without them)."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import click

from smartroute.cli import db, operate, serve

COMMANDS_GROUP = "smartroute.commands"

log = logging.getLogger("smartroute")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """SmartRoute: ride bookings in over HTTP, a driver for each, fast.

    Configuration comes from environment variables (DATABASE_URL, REDIS_URL,
    CELERY_BROKER_URL, SMARTROUTE_ADMIN_TOKEN, SMARTROUTE_*). With DATABASE_URL or
    REDIS_URL unset, an embedded PostgreSQL or Redis is started in SMARTROUTE_DATA_DIR
    (default .smartroute).
    """


for command in (
    serve.up,
    serve.api,
    serve.worker,
    serve.relay,
    serve.beat,
    db.db,
    operate.queues,
    operate.autoscale,
):
    main.add_command(command)


def _add_installed_commands(group: click.Group) -> None:
    """Every command another installed distribution declares for ``smartroute``."""
    for entry in entry_points(group=COMMANDS_GROUP):
        if entry.name in group.commands:
            continue  # The engine's own commands are not replaced.
        try:
            command = entry.load()
        except Exception as exc:  # A broken plugin must not take the engine's commands down.
            log.warning("the command %r (%s) could not be loaded: %s", entry.name, entry.value, exc)
            continue
        group.add_command(command, entry.name)


_add_installed_commands(main)
