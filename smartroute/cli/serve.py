"""Running the engine: all of it (``up``), or one kind of process (``api``, ``worker``,
``relay``, ``beat``), as a process manager starts them in production."""

from __future__ import annotations

import logging
import os
import sys

import click

from smartroute.cli.processes import (
    READY_TIMEOUT_S,
    Supervisor,
    api_argv,
    beat_argv,
    fresh_metrics_dir,
    own_metrics_env,
    relay_argv,
    run,
    wait_until_healthy,
    worker_argv,
)
from smartroute.cli.startup import (
    kept_secret,
    prepare_database,
    register_admin_token,
    settings_from_env,
    with_admin_token,
    with_services,
)
from smartroute.infra.settings import Settings

log = logging.getLogger("smartroute")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="API port.")
@click.option("--workers", default=2, show_default=True, help="Celery worker processes.")
@click.option("--demo/--no-demo", default=False, help="Run simulated drivers and riders.")
def up(host: str, port: int, workers: int, demo: bool) -> None:
    """Start everything: migrations, API, workers and beat, supervised."""
    start_demo = installed_demo() if demo else None
    settings, services = with_services(settings_from_env())
    try:
        settings, generated = kept_secret(settings, "admin_token")
        # What Prometheus and operators present for /metrics and the detailed /health.
        settings, _ = kept_secret(settings, "metrics_token")
        prepare_database(settings)
    except BaseException:
        services.stop()
        raise
    url = f"http://{host}:{port}"

    def when_started(supervisor: Supervisor) -> None:
        if not wait_until_healthy(url, supervisor, settings.metrics_token):
            log.error("the API did not become healthy within %ss", READY_TIMEOUT_S)
            supervisor.stopping.set()
            return
        relay_url = f"http://{host}:{port + 1}"
        announce(url, relay_url, settings, generated)
        if start_demo is not None:
            start_demo(url, relay_url, settings.admin_token, supervisor.stopping)

    metrics_env = {
        "PROMETHEUS_MULTIPROC_DIR": str(fresh_metrics_dir(settings)),
        "SMARTROUTE_RELAY_CORS_ORIGINS": ",".join(
            relay_origins(host, port, settings.relay_cors_origins)
        ),
    }
    children = {
        "api": api_argv(host, port, processes=2, threads=8),
        "worker": worker_argv(workers, settings.worker_queues),
        "beat": beat_argv(settings.data_dir),
        "relay": relay_argv(host, port + 1),
    }
    sys.exit(run(settings, services, children, when_started, metrics_env))


DEMO_GROUP = "smartroute.demo"


def installed_demo():
    """The demo's entry point (``smartroute.demo``), installed with the load tools; without
    them, a usage error that says how to install them. Looked up before anything starts."""
    from importlib.metadata import entry_points

    found = list(entry_points(group=DEMO_GROUP))
    if not found:
        raise click.UsageError(
            "--demo needs the load tools, which hold the demo: "
            "pip install -e ./sim (from the repository's root)"
        )
    return found[0].load()


def relay_origins(host: str, port: int, configured: tuple[str, ...] = ()) -> list[str]:
    """The origins the relay lets in under ``smartroute up``: those configured, the API's,
    where the console's pages come from, and the relay's own (port + 1), which non-browser
    clients such as python-socketio send. Never "*".

    A configured list replaces engine.io's same-origin default, so the relay's own origin
    must be named too."""
    hosts = [host]
    if host in ("127.0.0.1", "localhost", "0.0.0.0", "::", "::1"):
        # A page opened as localhost or as 127.0.0.1 is a different origin to a browser.
        hosts = ["127.0.0.1", "localhost"]
    ours = [f"http://{name}:{p}" for p in (port, port + 1) for name in hosts]
    return list(dict.fromkeys([*configured, *ours]))


def announce(url: str, relay_url: str, settings: Settings, generated: bool) -> None:
    from rich.console import Console
    from rich.panel import Panel

    where = (
        "generated and saved in " + str(settings.data_dir / "admin_token")
        if generated
        else (
            "from SMARTROUTE_ADMIN_TOKEN"
            if os.environ.get("SMARTROUTE_ADMIN_TOKEN")
            else "saved in " + str(settings.data_dir / "admin_token")
        )
    )
    metrics_where = (
        "from SMARTROUTE_METRICS_TOKEN"
        if os.environ.get("SMARTROUTE_METRICS_TOKEN")
        else "saved in " + str(settings.data_dir / "metrics_token")
    )
    Console(stderr=True).print(
        Panel.fit(
            f"API      {url}/v1\nHealth   {url}/health\nRelay    {relay_url}\n"
            f"Console  {url}/admin (admin), {url}/driver (drivers)\n"
            f"Admin token ({where}):\n  {settings.admin_token}\n"
            f"Metrics token (for /metrics and /health; {metrics_where}):\n"
            f"  {settings.metrics_token}\n\nCtrl-C stops everything.",
            title="SmartRoute is up",
        )
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--processes", default=2, show_default=True, help="gunicorn worker processes.")
@click.option("--threads", default=8, show_default=True, help="Threads per process.")
def api(host: str, port: int, processes: int, threads: int) -> None:
    """Run the HTTP API under gunicorn, once the admin token is registered."""
    settings, services = with_services(settings_from_env())
    try:
        settings = with_admin_token(settings)
        register_admin_token(settings, caches_required=True)
    except BaseException:
        services.stop()
        raise
    sys.exit(
        run(
            settings,
            services,
            {"api": api_argv(host, port, processes, threads)},
            extra_env=own_metrics_env(settings, f"api-{port}"),
        )
    )


@click.command()
@click.option("--concurrency", "-c", default=2, show_default=True, help="Worker processes.")
@click.option(
    "--queues",
    "-Q",
    default=None,
    help="Comma-separated queues [default: every region's dispatch.<region>, notify "
    "and maintenance].",
)
@click.option("--name", "-n", default="worker@%h", show_default=True, help="Worker node name.")
def worker(concurrency: int, queues: str | None, name: str) -> None:
    """Run a Celery worker (matching and sweeps)."""
    settings, services = with_services(settings_from_env())
    queues = queues or settings.worker_queues
    sys.exit(
        run(
            settings,
            services,
            {"worker": worker_argv(concurrency, queues, name)},
            extra_env=own_metrics_env(settings, f"worker-{name}"),
        )
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True)
def relay(host: str, port: int) -> None:
    """Run the Socket.IO relay (pushes to drivers, riders and admins)."""
    settings, services = with_services(settings_from_env())
    sys.exit(
        run(
            settings,
            services,
            {"relay": relay_argv(host, port)},
            extra_env=own_metrics_env(settings, f"relay-{port}"),
        )
    )


@click.command()
def beat() -> None:
    """Run Celery beat (the sweeps). Run exactly one."""
    settings, services = with_services(settings_from_env())
    sys.exit(run(settings, services, {"beat": beat_argv(settings.data_dir)}))
