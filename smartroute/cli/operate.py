"""Watching and sizing the worker pool: ``queues`` and ``autoscale``."""

from __future__ import annotations

import logging

import click

from smartroute.cli.startup import settings_from_env, with_services
from smartroute.infra.settings import Settings


def celery_app(settings: Settings):
    from smartroute.infra.celery_app import create_celery

    return create_celery(settings)


log = logging.getLogger("smartroute")


@click.command()
@click.option("--window", default=2.0, show_default=True, help="Seconds to measure drain over.")
@click.option(
    "--target-wait", default=5.0, show_default=True, help="Seconds a message should wait at most."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def queues(window: float, target_wait: float, as_json: bool) -> None:
    """Show each queue's depth, consumers, drain rate and the processes it needs."""
    import json

    from smartroute.cli import scaling

    settings, services = with_services(settings_from_env())
    try:
        reports = scaling.measure(
            celery_app(settings), settings.queues, window_s=window, target_wait_s=target_wait
        )
    finally:
        services.stop()
    if as_json:
        click.echo(json.dumps(scaling.as_dicts(reports)))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Celery queues (drain over {window:g}s, target wait {target_wait:g}s)")
    for column in ("queue", "depth", "consumers", "drain/s", "processes needed"):
        table.add_column(column, justify="left" if column in ("queue", "consumers") else "right")
    for r in reports:
        table.add_row(
            r.queue,
            str(r.depth),
            ", ".join(r.consumers) or "-",
            f"{r.drain_per_s:g}",
            str(r.processes_needed),
        )
    Console().print(table)


@click.command()
@click.option("--min", "minimum", default=1, show_default=True, help="Fewest processes a node.")
@click.option("--max", "maximum", default=8, show_default=True, help="Most processes a node.")
@click.option(
    "--target-wait", default=5.0, show_default=True, help="Seconds a message should wait at most."
)
@click.option("--interval", default=15.0, show_default=True, help="Seconds between rounds.")
@click.option("--window", default=2.0, show_default=True, help="Seconds to measure drain over.")
@click.option("--once", is_flag=True, help="Resize once and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print each round as JSON.")
def autoscale(
    minimum: int,
    maximum: int,
    target_wait: float,
    interval: float,
    window: float,
    once: bool,
    as_json: bool,
) -> None:
    """Grow or shrink worker pools to the queues' depth (Celery pool_grow / pool_shrink)."""
    import json
    import threading

    from smartroute.cli import scaling

    if not 1 <= minimum <= maximum:
        raise click.UsageError("need 1 <= --min <= --max")
    settings, services = with_services(settings_from_env())
    app = celery_app(settings)
    stop = threading.Event()
    try:
        while True:
            reports = scaling.measure(
                app, settings.queues, window_s=window, target_wait_s=target_wait
            )
            sizes = scaling.pool_sizes(app.control.inspect(timeout=1).stats() or {})
            resizes = scaling.plan(reports, sizes, minimum, maximum)
            scaling.apply(app, resizes)
            if as_json:
                click.echo(
                    json.dumps(
                        {"queues": scaling.as_dicts(reports), "resizes": scaling.as_dicts(resizes)}
                    )
                )
            else:
                for r in resizes:
                    log.info("worker %s: %d -> %d processes", r.node, r.current, r.target)
            if once or stop.wait(interval):
                break
    except KeyboardInterrupt:
        pass
    finally:
        services.stop()
