"""The ``smartroute`` command: run the whole engine, or one part of it."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import requests

from smartroute.embedded import EmbeddedServices, MissingExtra, ensure_services
from smartroute.logs import configure_logging
from smartroute.processes import Supervisor, python_module
from smartroute.settings import ConfigError, Settings

log = logging.getLogger("smartroute")

READY_TIMEOUT_S = 60.0


def _settings() -> Settings:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings)
    return settings


def _with_services(settings: Settings) -> tuple[Settings, EmbeddedServices]:
    """Settings whose service URLs are filled in, starting embedded services where unset."""
    settings, _ = _kept_secret(settings, "secret_key")
    try:
        services = ensure_services(settings.database_url, settings.redis_url, settings.data_dir)
    except MissingExtra as exc:
        raise click.ClickException(str(exc)) from None
    return settings.with_services(services.database_url, services.redis_url), services


def _kept_secret(settings: Settings, name: str) -> tuple[Settings, bool]:
    """The secret setting ``name``, or one generated once and kept (mode 600) in the data
    folder, so every process on this machine shares it. Returns whether it was generated."""
    if getattr(settings, name):
        return settings, False
    from dataclasses import replace

    from dispatch.tokens import new_secret

    path = settings.data_dir / name
    if path.exists():
        return replace(settings, **{name: path.read_text().strip()}), False
    secret = new_secret()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return replace(settings, **{name: secret}), True


def _prepare_database(settings: Settings) -> None:
    """Migrate to head and make sure the bootstrap admin holds the configured token."""
    from smartroute import migrate

    migrate.upgrade(settings.database_url, settings=settings)
    _register_admin_token(settings, caches_required=True)


def _with_admin_token(settings: Settings) -> Settings:
    """Settings with an admin token: SMARTROUTE_ADMIN_TOKEN, or the data folder's."""
    settings, generated = _kept_secret(settings, "admin_token")
    if generated:
        log.warning("SMARTROUTE_ADMIN_TOKEN is unset: generated one, saved in %s",
                    settings.data_dir / "admin_token")
    return settings


# How long a start keeps trying to tell Redis's token caches about revoked bootstrap tokens.
CACHE_RETRY_S = 10.0


def _register_admin_token(settings: Settings, *, caches_required: bool) -> None:
    """Make the configured admin token work, and every earlier one stop working, before
    anything serves: ``up``, ``api`` and ``db upgrade`` all do this, so whichever start
    sequence an operator uses (Compose, a Kubernetes migrate job, one ``up``), the token
    works. Several processes may do it at once (dispatch.users takes a lock).

    Revoked tokens are also dropped from Redis's token caches, which the API and the relay
    consult before the database. Without ``caches_required`` (``db upgrade``, which runs
    before Redis may be up), an unreachable Redis is only a warning: the API's start does it
    again, and refuses to start until it has been done.
    """
    import datetime as dt

    import redis
    from sqlalchemy.exc import ProgrammingError

    from dispatch.db import make_engine, make_sessionmaker
    from dispatch.users import (
        BootstrapTokenRefused,
        ensure_bootstrap_admin,
        revoked_bootstrap_hashes,
    )
    from smartroute.snapshots import redis_client
    from smartroute.token_cache import MARKER_TTL_S, forget

    engine = make_engine(settings.database_url, pool_size=1, max_overflow=0)
    # Revocation markers live MARKER_TTL_S: a token revoked before that has none to renew.
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=MARKER_TTL_S)
    try:
        with make_sessionmaker(engine)() as session, session.begin():
            ensure_bootstrap_admin(session, settings.admin_token)
            revoked = revoked_bootstrap_hashes(session, since)
    except BootstrapTokenRefused as exc:
        raise click.UsageError(f"SMARTROUTE_ADMIN_TOKEN: {exc}") from None
    except ProgrammingError as exc:
        if getattr(exc.orig, "pgcode", None) == "42P01":  # undefined_table
            raise click.ClickException(
                "the database has no tables yet: run `smartroute db upgrade` first") from None
        raise
    finally:
        engine.dispose()
    client = redis_client(settings.redis_url)
    deadline = time.monotonic() + CACHE_RETRY_S
    while True:
        try:
            forget(client, revoked)
            break
        except (redis.RedisError, OSError) as exc:
            if time.monotonic() < deadline:
                time.sleep(0.5)  # Redis may be starting beside us; nothing to await.
                continue
            if caches_required:
                raise click.ClickException(
                    f"Redis is unreachable ({exc.__class__.__name__}): revoked admin tokens "
                    "cannot be dropped from the token cache, so the API will not start") from None
            log.warning("Redis is unreachable: revoked admin tokens stay in the token cache "
                        "until the API starts")
            break


def api_argv(host: str, port: int, processes: int, threads: int) -> list[str]:
    return python_module(
        "gunicorn",
        "--bind", f"{host}:{port}",
        "--workers", str(processes),
        "--worker-class", "gthread",
        "--threads", str(threads),
        "--graceful-timeout", "10",
        "--log-level", "warning",
        "--config", "python:web.gunicorn_conf",
        "web:create_app()",
    )


def worker_argv(concurrency: int, queues: str, name: str = "worker@%h") -> list[str]:
    return python_module(
        "celery", "-A", "workers.main", "worker",
        "--queues", queues,
        "--concurrency", str(concurrency),
        "--hostname", name,
        "--loglevel", "INFO",
        "--without-gossip", "--without-mingle",
    )


def relay_argv(host: str, port: int) -> list[str]:
    return python_module("smartroute.relay", "--host", host, "--port", str(port))


def beat_argv(data_dir: Path) -> list[str]:
    return python_module(
        "celery", "-A", "workers.main", "beat",
        "--schedule", str((data_dir / "beat-schedule").resolve()),
        "--loglevel", "INFO",
    )


def _fresh_metrics_dir(settings: Settings, name: str = "metrics") -> Path:
    """prometheus-client's multiprocess folder, emptied: files of dead runs would be summed."""
    import shutil

    path = (settings.data_dir / name).resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _own_metrics_env(settings: Settings, component: str) -> dict[str, str]:
    """A fresh multiprocess folder for one component run on its own, unless the operator set
    PROMETHEUS_MULTIPROC_DIR (then it is theirs to empty). Without one, each gunicorn or pool
    process would answer a scrape with its own numbers alone. ``component`` names this run
    among others on the machine (a port, a node name): emptying a live sibling's folder
    would lose its numbers."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return {}
    name = "metrics-" + re.sub(r"[^A-Za-z0-9@._-]", "_", component)
    return {"PROMETHEUS_MULTIPROC_DIR": str(_fresh_metrics_dir(settings, name))}


def _wait_until_healthy(url: str, supervisor: Supervisor, metrics_token: str | None) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    headers = {"Authorization": f"Bearer {metrics_token}"} if metrics_token else {}
    while time.monotonic() < deadline and not supervisor.stopping.is_set():
        try:
            if requests.get(f"{url}/health", headers=headers, timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        # The API has no readiness event to subscribe to; poll, bounded by the deadline.
        supervisor.stopping.wait(0.25)
    return False


def _run(
    settings: Settings,
    services: EmbeddedServices,
    children: dict[str, list[str]],
    after_start: Callable[[Supervisor], None] | None = None,
    extra_env: dict[str, str] | None = None,
) -> int:
    """Supervise ``children`` until Ctrl-C or SIGTERM, then stop embedded services."""
    supervisor = Supervisor(settings.to_env() | (extra_env or {}))
    for name, argv in children.items():
        supervisor.add(name, argv)
    supervisor.install_signal_handlers()
    try:
        supervisor.start()
        if after_start is not None:
            after_start(supervisor)
        return supervisor.watch()
    finally:
        services.stop()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """SmartRoute: ride bookings in over HTTP, a driver for each, fast.

    Configuration comes from environment variables (DATABASE_URL, REDIS_URL,
    CELERY_BROKER_URL, SMARTROUTE_ADMIN_TOKEN, SMARTROUTE_*). With DATABASE_URL or
    REDIS_URL unset, an embedded PostgreSQL or Redis is started in SMARTROUTE_DATA_DIR
    (default .smartroute).
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="API port.")
@click.option("--workers", default=2, show_default=True, help="Celery worker processes.")
@click.option("--demo/--no-demo", default=False, help="Run simulated drivers and riders.")
def up(host: str, port: int, workers: int, demo: bool) -> None:
    """Start everything: migrations, API, workers and beat, supervised."""
    settings, services = _with_services(_settings())
    try:
        settings, generated = _kept_secret(settings, "admin_token")
        # What Prometheus and operators present for /metrics and the detailed /health.
        settings, _ = _kept_secret(settings, "metrics_token")
        _prepare_database(settings)
    except BaseException:
        services.stop()
        raise
    url = f"http://{host}:{port}"

    def when_started(supervisor: Supervisor) -> None:
        if not _wait_until_healthy(url, supervisor, settings.metrics_token):
            log.error("the API did not become healthy within %ss", READY_TIMEOUT_S)
            supervisor.stopping.set()
            return
        _announce(url, f"http://{host}:{port + 1}", settings, generated)
        if demo:
            from smartroute.demo import start_demo

            start_demo(url, settings.admin_token, supervisor.stopping)

    metrics_env = {"PROMETHEUS_MULTIPROC_DIR": str(_fresh_metrics_dir(settings)),
                   "SMARTROUTE_RELAY_CORS_ORIGINS": ",".join(
                       relay_origins(host, port, settings.relay_cors_origins))}
    children = {
        "api": api_argv(host, port, processes=2, threads=8),
        "worker": worker_argv(workers, settings.worker_queues),
        "beat": beat_argv(settings.data_dir),
        "relay": relay_argv(host, port + 1),
    }
    sys.exit(_run(settings, services, children, when_started, metrics_env))


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


def _announce(url: str, relay_url: str, settings: Settings, generated: bool) -> None:
    from rich.console import Console
    from rich.panel import Panel

    where = "generated and saved in " + str(settings.data_dir / "admin_token") if generated else (
        "from SMARTROUTE_ADMIN_TOKEN" if os.environ.get("SMARTROUTE_ADMIN_TOKEN")
        else "saved in " + str(settings.data_dir / "admin_token")
    )
    metrics_where = ("from SMARTROUTE_METRICS_TOKEN" if os.environ.get("SMARTROUTE_METRICS_TOKEN")
                     else "saved in " + str(settings.data_dir / "metrics_token"))
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


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--processes", default=2, show_default=True, help="gunicorn worker processes.")
@click.option("--threads", default=8, show_default=True, help="Threads per process.")
def api(host: str, port: int, processes: int, threads: int) -> None:
    """Run the HTTP API under gunicorn, once the admin token is registered."""
    settings, services = _with_services(_settings())
    try:
        settings = _with_admin_token(settings)
        _register_admin_token(settings, caches_required=True)
    except BaseException:
        services.stop()
        raise
    sys.exit(_run(settings, services, {"api": api_argv(host, port, processes, threads)},
                  extra_env=_own_metrics_env(settings, f"api-{port}")))


@main.command()
@click.option("--concurrency", "-c", default=2, show_default=True, help="Worker processes.")
@click.option("--queues", "-Q", default=None,
              help="Comma-separated queues [default: every region's dispatch.<region>, notify "
                   "and maintenance].")
@click.option("--name", "-n", default="worker@%h", show_default=True, help="Worker node name.")
def worker(concurrency: int, queues: str | None, name: str) -> None:
    """Run a Celery worker (matching and sweeps)."""
    settings, services = _with_services(_settings())
    queues = queues or settings.worker_queues
    sys.exit(_run(settings, services, {"worker": worker_argv(concurrency, queues, name)},
                  extra_env=_own_metrics_env(settings, f"worker-{name}")))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True)
def relay(host: str, port: int) -> None:
    """Run the Socket.IO relay (pushes to drivers, riders and admins)."""
    settings, services = _with_services(_settings())
    sys.exit(_run(settings, services, {"relay": relay_argv(host, port)},
                  extra_env=_own_metrics_env(settings, f"relay-{port}")))


@main.command()
def beat() -> None:
    """Run Celery beat (the sweeps). Run exactly one."""
    settings, services = _with_services(_settings())
    sys.exit(_run(settings, services, {"beat": beat_argv(settings.data_dir)}))


@main.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: head), then register the admin token."""
    from smartroute import migrate

    settings, services = _with_services(_settings())
    try:
        migrate.upgrade(settings.database_url, revision, settings)
        if revision == "head":
            # Only the head schema is known to have the tables the token goes into.
            _register_admin_token(_with_admin_token(settings), caches_required=False)
    finally:
        services.stop()


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ('base' empties it)."""
    from smartroute import migrate

    settings, services = _with_services(_settings())
    try:
        migrate.downgrade(settings.database_url, revision)
    finally:
        services.stop()


@db.command("check")
def db_check() -> None:
    """Fail if the models and the migrations disagree."""
    from smartroute import migrate

    settings, services = _with_services(_settings())
    try:
        migrate.check(settings.database_url)
    finally:
        services.stop()
    click.echo("models and migrations agree")


def _celery(settings: Settings):
    from workers.app import create_celery

    return create_celery(settings)


@main.command()
@click.option("--window", default=2.0, show_default=True, help="Seconds to measure drain over.")
@click.option("--target-wait", default=5.0, show_default=True,
              help="Seconds a message should wait at most.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def queues(window: float, target_wait: float, as_json: bool) -> None:
    """Show each queue's depth, consumers, drain rate and the processes it needs."""
    import json

    from smartroute import scaling

    settings, services = _with_services(_settings())
    try:
        reports = scaling.measure(_celery(settings), settings.queues, window_s=window,
                                  target_wait_s=target_wait)
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
        table.add_row(r.queue, str(r.depth), ", ".join(r.consumers) or "-",
                      f"{r.drain_per_s:g}", str(r.processes_needed))
    Console().print(table)


@main.command()
@click.option("--min", "minimum", default=1, show_default=True, help="Fewest processes a node.")
@click.option("--max", "maximum", default=8, show_default=True, help="Most processes a node.")
@click.option("--target-wait", default=5.0, show_default=True,
              help="Seconds a message should wait at most.")
@click.option("--interval", default=15.0, show_default=True, help="Seconds between rounds.")
@click.option("--window", default=2.0, show_default=True, help="Seconds to measure drain over.")
@click.option("--once", is_flag=True, help="Resize once and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print each round as JSON.")
def autoscale(minimum: int, maximum: int, target_wait: float, interval: float, window: float,
              once: bool, as_json: bool) -> None:
    """Grow or shrink worker pools to the queues' depth (Celery pool_grow / pool_shrink)."""
    import json
    import threading

    from smartroute import scaling

    if not 1 <= minimum <= maximum:
        raise click.UsageError("need 1 <= --min <= --max")
    settings, services = _with_services(_settings())
    app = _celery(settings)
    stop = threading.Event()
    try:
        while True:
            reports = scaling.measure(app, settings.queues, window_s=window,
                                      target_wait_s=target_wait)
            sizes = scaling.pool_sizes(app.control.inspect(timeout=1).stats() or {})
            resizes = scaling.plan(reports, sizes, minimum, maximum)
            scaling.apply(app, resizes)
            if as_json:
                click.echo(json.dumps({"queues": scaling.as_dicts(reports),
                                       "resizes": scaling.as_dicts(resizes)}))
            else:
                for r in resizes:
                    log.info("worker %s: %d -> %d processes", r.node, r.current, r.target)
            if once or stop.wait(interval):
                break
    except KeyboardInterrupt:
        pass
    finally:
        services.stop()


@main.group()
def bench() -> None:
    """Benchmarks that print numbers."""


@bench.command("matching")
@click.option("--seed", default=1, show_default=True, help="The synthetic city's seed.")
@click.option("--k", default=10, show_default=True, help="Candidate drivers per booking.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_matching(seed: int, k: int, as_json: bool) -> None:
    """Replay one seeded city through nearest-first, batched and each batch's optimum."""
    import json
    from dataclasses import replace

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from dispatch import simulation

    city = replace(simulation.City(), seed=seed)
    matchers = {"nearest": simulation.nearest, "batched": simulation.batched(k),
                "optimal": simulation.batched(None)}
    results = {}
    with Progress(console=Console(stderr=True), transient=True, disable=as_json) as progress:
        for name, matcher in matchers.items():
            task = progress.add_task(f"{name:8}", total=city.windows)
            outcome = simulation.replay(city, matcher, on_window=lambda t=task: progress.advance(t))
            results[name] = outcome.summary()
    results["solve_1000x1000_s"] = round(simulation.solve_time(1000, seed), 4)
    if as_json:
        click.echo(json.dumps(results))
        return
    table = Table(title=f"Matching on a seeded city (seed {seed}, {city.drivers} drivers, "
                        f"~{city.riders_per_window} riders per {city.window_s:g}s window)")
    for column in ("matcher", "mean pickup ETA s", "p95 pickup ETA s", "match rate",
                   "solve time s"):
        table.add_column(column, justify="left" if column == "matcher" else "right")
    for name in matchers:
        r = results[name]
        table.add_row(name, f"{r['mean_pickup_eta_s']:.1f}", f"{r['p95_pickup_eta_s']:.1f}",
                      f"{r['match_rate']:.3f}", f"{r['solve_time_s']:.4f}")
    console = Console()
    console.print(table)
    gain = 1 - results["batched"]["mean_pickup_eta_s"] / results["nearest"]["mean_pickup_eta_s"]
    gap = results["batched"]["mean_pickup_eta_s"] / results["optimal"]["mean_pickup_eta_s"] - 1
    console.print(f"batched: mean pickup ETA {gain:.1%} below nearest-first and "
                  f"{gap:.2%} above the batches' optimum; one 1000×1000 batch: "
                  f"{results['solve_1000x1000_s']:.3f} s")


def _load_target(api: str | None, relay: str | None, token: str | None, workers: int,
                 data_dir: str | None):
    """An engine to load: the one at --api, or one started here (context manager)."""
    import contextlib
    import signal

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGTERM stops a run the way Ctrl-C does: through the finally blocks that stop the
    # engine this command started.
    signal.signal(signal.SIGTERM, interrupted)

    from smartroute.loadgen.engine import running_engine, started_engine

    folder = Path(data_dir or os.environ.get("SMARTROUTE_DATA_DIR") or ".smartroute")
    if api is None:
        return started_engine(workers, folder / "bench" if data_dir is None else folder)
    relay = relay or api.rsplit(":", 1)[0] + f":{int(api.rsplit(':', 1)[1]) + 1}"
    try:
        return contextlib.nullcontext(running_engine(api, relay, token, folder))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


_load_options = [
    click.option("--api", default=None,
                 help="A running engine's URL. Without it, `smartroute up` is started here "
                      "(embedded services, limits raised for load)."),
    click.option("--relay", default=None, help="The relay's URL [default: the API port + 1]."),
    click.option("--token", default=None, envvar="SMARTROUTE_ADMIN_TOKEN",
                 help="Admin token for --api [default: the data folder's admin_token]."),
    click.option("--workers", default=2, show_default=True,
                 help="Celery processes of an engine started here."),
    click.option("--data-dir", default=None,
                 help="Embedded services' folder [default: .smartroute/bench when starting "
                      "the engine, else SMARTROUTE_DATA_DIR]."),
    click.option("--driver-actions", "actions_over", type=click.Choice(["relay", "http"]),
                 default="relay", show_default=True,
                 help="How drivers accept, decline, start and complete: over their Socket.IO "
                      "connection, or with POST /v1/bookings/<id>/<action>."),
]


def _with_load_options(command):
    for option in reversed(_load_options):
        command = option(command)
    return command


@bench.command("e2e")
@_with_load_options
@click.option("--rate", default=20.0, show_default=True, help="Bookings per second offered.")
@click.option("--duration", default=20.0, show_default=True, help="Seconds of booking.")
@click.option("--drivers", default=None, type=int,
              help="Drivers online [default: enough for two batch windows of bookings].")
@click.option("--seed", default=1, show_default=True)
@click.option("--drain", default=30.0, show_default=True,
              help="Seconds to wait, after the last booking, for every ride to complete.")
@click.option("--ceiling-tasks", default=3000, show_default=True,
              help="No-op tasks drained to measure Celery's ceiling.")
@click.option("--chart", default=None, type=click.Path(dir_okay=False),
              help="Also write a PNG chart of latencies, throughput and queue depth here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_e2e(api, relay, token, workers, data_dir, actions_over, rate, duration, drivers, seed,
              drain, ceiling_tasks, chart, as_json) -> None:
    """Open-loop bookings at a fixed rate through API, workers and relay; latency, losses,
    memory, and the ratio to Celery's own no-op ceiling."""
    import json

    from rich.console import Console
    from rich.table import Table

    from smartroute.loadgen.e2e import run_e2e

    if rate <= 0 or duration <= 0:
        raise click.UsageError("--rate and --duration must be positive")
    console = Console(stderr=True)

    def progress(row: dict) -> None:
        if not as_json:
            console.print(f"t={row['t']:5.0f}s booked {row.get('booked', 0):6} "
                          f"pushed {row.get('pushed', 0):6} completed {row.get('completed', 0):6}"
                          f" waiting {row.get('waiting', 0):5} queue {row.get('queue_depth')}")

    with _load_target(api, relay, token, workers, data_dir) as target:
        result = run_e2e(target, rate, duration, drivers, seed, drain, ceiling_tasks, progress,
                         Path(chart) if chart else None, actions_over)
    if as_json:
        click.echo(json.dumps(result))
        return
    table = Table(title=f"bench e2e: {rate:g} bookings/s offered for {duration:g} s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    Console().print(table)


@main.command()
@_with_load_options
@click.option("--drivers", default=60, show_default=True, help="Drivers in the city.")
@click.option("--rate", default=2.0, show_default=True, help="Bookings per second.")
@click.option("--duration", default=60.0, show_default=True, help="Seconds of booking.")
@click.option("--seed", default=1, show_default=True, help="The city's seed.")
@click.option("--chart", default="smartroute-simulate.png", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the PNG chart.")
@click.option("--drain", default=None, type=float,
              help="Seconds to let rides finish after the last booking "
                   "[default: the offer window + 30].")
@click.option("--speedup", default=60.0, show_default=True,
              help="Simulated seconds of driving per real second.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def simulate(api, relay, token, workers, data_dir, actions_over, drivers, rate, duration, seed,
             chart, drain, speedup, as_json) -> None:
    """A seeded synthetic city of real clients: drivers ping, accept, drive and complete;
    riders book. Live progress, then a summary table and a PNG chart."""
    import json

    from rich.console import Console

    from smartroute.loadgen.simulate import run_simulation, summary_table

    if rate <= 0 or duration <= 0 or drivers <= 0 or speedup <= 0:
        raise click.UsageError("--drivers, --rate, --duration and --speedup must be positive")
    with _load_target(api, relay, token, workers, data_dir) as target:
        result = run_simulation(target, drivers, rate, duration, seed, Path(chart), drain,
                                live=not as_json, speedup=speedup, actions_over=actions_over)
    if as_json:
        click.echo(json.dumps(result))
    else:
        Console().print(summary_table(result))
