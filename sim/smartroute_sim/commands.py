"""The commands the load tools add to ``smartroute`` (entry points ``smartroute.commands``):
benchmarks that print numbers (``bench``) and the city simulation (``simulate``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

log = logging.getLogger("smartroute")


@click.group()
def bench() -> None:
    """Benchmarks that print numbers."""


@bench.command("matching")
@click.option("--seed", default=1, show_default=True, help="The synthetic city's seed.")
@click.option("--k", default=10, show_default=True, help="Candidate drivers per booking.")
@click.option(
    "--drivers",
    type=click.IntRange(1),
    default=None,
    help="Drivers in the city, to see how a fleet's size changes the figures "
    "[default: the city's 400].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_matching(seed: int, k: int, drivers: int | None, as_json: bool) -> None:
    """Replay one seeded city through nearest-first, batched, each batch's optimum, and
    batched with idle drivers rebalanced between windows; then batched on a continuous
    clock with a fixed 1 s window and the adaptive one, at the city's load and a quarter
    of it."""
    import json
    from dataclasses import replace

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from dispatch.matching.window import WindowPolicy
    from dispatch.rebalancing import RebalancePolicy
    from smartroute_sim import replay

    city = replace(replay.City(), seed=seed)
    if drivers is not None:
        city = replace(city, drivers=drivers)
    matchers = {
        "nearest": (replay.nearest, None),
        "batched": (replay.batched(k), None),
        "optimal": (replay.batched(None), None),
        "rebalanced": (replay.batched(k), RebalancePolicy()),
    }
    results = {}
    with Progress(console=Console(stderr=True), transient=True, disable=as_json) as progress:
        for name, (matcher, rebalance) in matchers.items():
            task = progress.add_task(f"{name:10}", total=city.windows)
            outcome = replay.replay(
                city,
                matcher,
                on_window=lambda t=task: progress.advance(t),
                rebalance=rebalance,
            )
            results[name] = outcome.summary()
    low_load = replace(city, riders_per_window=max(1, city.riders_per_window // 4))
    windows = {
        "window_fixed_1s": (city, WindowPolicy(max_s=1.0, min_s=1.0)),
        "window_adaptive": (city, WindowPolicy(max_s=1.0, min_s=0.02)),
        "window_fixed_1s_low_load": (low_load, WindowPolicy(max_s=1.0, min_s=1.0)),
        "window_adaptive_low_load": (low_load, WindowPolicy(max_s=1.0, min_s=0.02)),
    }
    with Progress(console=Console(stderr=True), transient=True, disable=as_json) as progress:
        for name, (load, window) in windows.items():
            task = progress.add_task(f"{name:24}", total=1)
            results[name] = replay.replay_windowed(load, replay.batched(k), window).summary()
            progress.advance(task)
    results["solve_1000x1000_s"] = round(replay.solve_time(1000, seed), 4)
    if as_json:
        click.echo(json.dumps(results))
        return
    table = Table(
        title=f"Matching on a seeded city (seed {seed}, {city.drivers} drivers, "
        f"~{city.riders_per_window} riders per {city.window_s:g}s window)"
    )
    for column in (
        "matcher",
        "mean pickup ETA s",
        "p95 pickup ETA s",
        "match rate",
        "solve time s",
    ):
        table.add_column(column, justify="left" if column == "matcher" else "right")
    for name in matchers:
        r = results[name]
        table.add_row(
            name,
            f"{r['mean_pickup_eta_s']:.1f}",
            f"{r['p95_pickup_eta_s']:.1f}",
            f"{r['match_rate']:.3f}",
            f"{r['solve_time_s']:.4f}",
        )
    console = Console()
    console.print(table)
    gain = 1 - results["batched"]["mean_pickup_eta_s"] / results["nearest"]["mean_pickup_eta_s"]
    gap = results["batched"]["mean_pickup_eta_s"] / results["optimal"]["mean_pickup_eta_s"] - 1
    console.print(
        f"batched: mean pickup ETA {gain:.1%} below nearest-first and "
        f"{gap:.2%} above the batches' optimum; one 1000×1000 batch: "
        f"{results['solve_1000x1000_s']:.3f} s"
    )
    moved = 1 - results["rebalanced"]["mean_pickup_eta_s"] / results["batched"]["mean_pickup_eta_s"]
    points = 100 * (results["rebalanced"]["match_rate"] - results["batched"]["match_rate"])
    console.print(
        f"rebalanced: mean pickup ETA {moved:.1%} below batched, match rate {points:+.1f} points"
    )
    table = Table(
        title=f"Batch windows on a continuous clock (batched; low load: "
        f"~{low_load.riders_per_window} riders per {city.window_s:g}s)",
        caption="wait s: from a rider's arrival to the batch that matched them; "
        "window s: the window a rider arrived into",
    )
    for column in (
        "window",
        "load",
        "mean ETA s",
        "p95 ETA s",
        "match rate",
        "batches",
        "wait s",
        "window s",
    ):
        table.add_column(column, justify="left" if column in ("window", "load") else "right")
    for name, (load, window) in windows.items():
        r = results[name]
        table.add_row(
            "adaptive" if window.adaptive else f"fixed {window.max_s:g}s",
            "low" if load is low_load else "city",
            f"{r['mean_pickup_eta_s']:.1f}",
            f"{r['p95_pickup_eta_s']:.1f}",
            f"{r['match_rate']:.3f}",
            str(r["batches"]),
            f"{r['mean_batch_wait_s']:.3f}",
            f"{r['mean_window_s']:.3f}",
        )
    console.print(table)
    for suffix, label in (("", "at the city's load"), ("_low_load", "at low load")):
        fixed, adaptive = results[f"window_fixed_1s{suffix}"], results[f"window_adaptive{suffix}"]
        change = adaptive["mean_pickup_eta_s"] / fixed["mean_pickup_eta_s"] - 1
        console.print(
            f"adaptive window {label}: mean pickup ETA {change:+.2%} against a fixed 1 s window, "
            f"riders wait {adaptive['mean_batch_wait_s']:.3f} s for their batch "
            f"(fixed: {fixed['mean_batch_wait_s']:.3f} s)"
        )


def load_target(
    api: str | None,
    relay: str | None,
    token: str | None,
    workers: int,
    data_dir: str | None,
    extra_env: dict[str, str] | None = None,
):
    """An engine to load: the one at --api, or one started here (context manager) with
    ``extra_env`` added to its environment."""
    import contextlib
    import signal

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGTERM stops a run the way Ctrl-C does: through the finally blocks that stop the
    # engine this command started.
    signal.signal(signal.SIGTERM, interrupted)

    from smartroute_sim.engine import running_engine, started_engine

    folder = Path(data_dir or os.environ.get("SMARTROUTE_DATA_DIR") or ".smartroute")
    if api is None:
        return started_engine(
            workers, folder / "bench" if data_dir is None else folder, extra_env=extra_env
        )
    relay = relay or api.rsplit(":", 1)[0] + f":{int(api.rsplit(':', 1)[1]) + 1}"
    try:
        return contextlib.nullcontext(running_engine(api, relay, token, folder))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


_load_options = [
    click.option(
        "--api",
        default=None,
        help="A running engine's URL. Without it, `smartroute up` is started here "
        "(embedded services, limits raised for load).",
    ),
    click.option("--relay", default=None, help="The relay's URL [default: the API port + 1]."),
    click.option(
        "--token",
        default=None,
        envvar="SMARTROUTE_ADMIN_TOKEN",
        help="Admin token for --api [default: the data folder's admin_token].",
    ),
    click.option(
        "--workers",
        default=2,
        show_default=True,
        help="Celery processes of an engine started here.",
    ),
    click.option(
        "--data-dir",
        default=None,
        help="Embedded services' folder [default: .smartroute/bench when starting "
        "the engine, else SMARTROUTE_DATA_DIR].",
    ),
    click.option(
        "--driver-actions",
        "actions_over",
        type=click.Choice(["relay", "http"]),
        default="relay",
        show_default=True,
        help="How drivers accept, decline, start and complete: over their Socket.IO "
        "connection, or with POST /v1/bookings/<id>/<action>.",
    ),
]


def with_load_options(command):
    for option in reversed(_load_options):
        command = option(command)
    return command


def with_target_options(command):
    """The options naming the engine to load (all of ``with_load_options`` but how drivers
    act, for a command whose drivers always act over their sockets)."""
    for option in reversed(_load_options[:-1]):
        command = option(command)
    return command


@bench.command("e2e")
@with_load_options
@click.option("--rate", default=20.0, show_default=True, help="Bookings per second offered.")
@click.option("--duration", default=20.0, show_default=True, help="Seconds of booking.")
@click.option(
    "--drivers",
    default=None,
    type=int,
    help="Drivers online [default: enough for two batch windows of bookings].",
)
@click.option("--seed", default=1, show_default=True)
@click.option(
    "--drain",
    default=30.0,
    show_default=True,
    help="Seconds to wait, after the last booking, for every ride to complete.",
)
@click.option(
    "--ceiling-tasks",
    default=3000,
    show_default=True,
    help="No-op tasks drained to measure Celery's ceiling.",
)
@click.option(
    "--chart",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also write a PNG chart of latencies, throughput and queue depth here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_e2e(
    api,
    relay,
    token,
    workers,
    data_dir,
    actions_over,
    rate,
    duration,
    drivers,
    seed,
    drain,
    ceiling_tasks,
    chart,
    as_json,
) -> None:
    """Open-loop bookings at a fixed rate through API, workers and relay; latency, losses,
    memory, and the ratio to Celery's own no-op ceiling."""
    import json

    from rich.console import Console
    from rich.table import Table

    from smartroute_sim.e2e import run_e2e

    if rate <= 0 or duration <= 0:
        raise click.UsageError("--rate and --duration must be positive")
    console = Console(stderr=True)

    def progress(row: dict) -> None:
        if not as_json:
            console.print(
                f"t={row['t']:5.0f}s booked {row.get('booked', 0):6} "
                f"pushed {row.get('pushed', 0):6} completed {row.get('completed', 0):6}"
                f" waiting {row.get('waiting', 0):5} queue {row.get('queue_depth')}"
            )

    with load_target(api, relay, token, workers, data_dir) as target:
        result = run_e2e(
            target,
            rate,
            duration,
            drivers,
            seed,
            drain,
            ceiling_tasks,
            progress,
            Path(chart) if chart else None,
            actions_over,
        )
    if as_json:
        click.echo(json.dumps(result))
        return
    table = Table(title=f"bench e2e: {rate:g} bookings/s offered for {duration:g} s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    Console().print(table)


@bench.command("fleet")
@with_target_options
@click.option(
    "--drivers", default=1000, show_default=True, help="Drivers online, each on its own socket."
)
@click.option(
    "--ping-interval",
    default=4.0,
    show_default=True,
    help="Seconds between a driver's location pings (jittered by ±10%).",
)
@click.option("--rate", default=5.0, show_default=True, help="Bookings per second offered.")
@click.option(
    "--duration",
    default=30.0,
    show_default=True,
    help="Seconds of booking, once the fleet is online: the measured window.",
)
@click.option(
    "--processes",
    default=None,
    type=click.IntRange(min=1),
    help="Load-generator processes holding the sockets [default: one per 2,500 drivers].",
)
@click.option("--seed", default=1, show_default=True)
@click.option(
    "--drain",
    default=30.0,
    show_default=True,
    help="Seconds to wait, after the last booking, for every ride to complete.",
)
@click.option(
    "--connect-timeout",
    default=180.0,
    show_default=True,
    help="Seconds for the whole fleet to come online; the run goes on with those that did.",
)
@click.option(
    "--chart",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also write a PNG chart of pings a second, ping → index latency and drivers online.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_fleet(
    api,
    relay,
    token,
    workers,
    data_dir,
    drivers,
    ping_interval,
    rate,
    duration,
    processes,
    seed,
    drain,
    connect_timeout,
    chart,
    as_json,
) -> None:
    """A fleet of drivers on real Socket.IO connections, pinging their location over the
    relay while riders book: pings indexed a second, ping → index latency, the relay's
    memory a driver, the engine's CPU a ping, and bench e2e's figures for the bookings."""
    import json

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from smartroute_sim.fleet import run_fleet

    if rate <= 0 or duration <= 0 or drivers <= 0 or ping_interval <= 0:
        raise click.UsageError("--drivers, --ping-interval, --rate and --duration must be positive")
    if drain < 0 or connect_timeout <= 0:
        raise click.UsageError("--drain must not be negative, --connect-timeout must be positive")
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("drivers online"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    connecting = progress.add_task("online", total=drivers)

    def on_connect(online: int, total: int) -> None:
        if not progress.live.is_started:
            progress.start()
        progress.update(connecting, completed=online)
        if online >= total:
            progress.stop()

    def on_sample(row: dict) -> None:
        if progress.live.is_started:
            return
        console.print(
            f"t={row['t']:4.0f}s online {row.get('connected', 0):5} "
            f"pings {row.get('pings_sent', 0):7} booked {row.get('booked', 0):5} "
            f"pushed {row.get('pushed', 0):5} done {row.get('completed', 0):5}",
            soft_wrap=True,
        )

    try:
        with load_target(api, relay, token, workers, data_dir) as target:
            result = run_fleet(
                target,
                drivers,
                ping_interval,
                rate,
                duration,
                processes=processes,
                seed=seed,
                drain_s=drain,
                connect_timeout_s=connect_timeout,
                on_sample=on_sample,
                on_connect=on_connect,
                chart=Path(chart) if chart else None,
            )
    finally:
        progress.stop()
    if as_json:
        click.echo(json.dumps(result))
        return
    table = Table(
        title=f"bench fleet: {drivers} drivers pinging every {ping_interval:g} s, "
        f"{rate:g} bookings/s for {duration:g} s"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    Console().print(table)


def compressed_waits(speedup: float) -> dict[str, str]:
    """The engine's ride waits (the no-show wait, the free-cancel grace) in the city's
    compressed time, for an engine the simulation starts itself: at 60x a rider's 5-minute
    no-show wait passes in 5 s, as their drive to the pickup does. A wait set in the
    environment is kept as it is."""
    from smartroute.infra.settings import Settings

    defaults = Settings()
    waits = {
        "SMARTROUTE_NO_SHOW_WAIT_S": defaults.no_show_wait_s,
        "SMARTROUTE_CANCEL_GRACE_S": defaults.cancel_grace_s,
    }
    return {
        name: str(max(1, round(seconds / speedup)))
        for name, seconds in waits.items()
        if name not in os.environ
    }


@click.command()
@with_load_options
@click.option("--drivers", default=60, show_default=True, help="Drivers in the city.")
@click.option("--rate", default=2.0, show_default=True, help="Bookings per second.")
@click.option("--duration", default=60.0, show_default=True, help="Seconds of booking.")
@click.option("--seed", default=1, show_default=True, help="The city's seed.")
@click.option(
    "--chart",
    default="smartroute-simulate.png",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to write the PNG chart.",
)
@click.option(
    "--drain",
    default=None,
    type=float,
    help="Seconds to let rides finish after the last booking [default: the offer window + 30].",
)
@click.option(
    "--speedup",
    default=60.0,
    show_default=True,
    help="Simulated seconds of driving per real second.",
)
@click.option(
    "--rider-cancels",
    type=click.FloatRange(0, 1),
    default=None,
    help="Probability a rider cancels a booking, half before and half after a driver is "
    "assigned [default: 0.06].",
)
@click.option(
    "--driver-cancels",
    type=click.FloatRange(0, 1),
    default=None,
    help="Probability a driver gives a ride back after accepting it [default: 0.03].",
)
@click.option(
    "--no-shows",
    type=click.FloatRange(0, 1),
    default=None,
    help="Probability a rider never comes to the pickup [default: 0.02]. The driver waits "
    "the engine's SMARTROUTE_NO_SHOW_WAIT_S, which an engine started here gets in the "
    "city's compressed time.",
)
@click.option(
    "--follow-reposition",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Probability an idle driver follows the engine's reposition suggestion, driving "
    "toward the suggested zone between pings.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def simulate(
    api,
    relay,
    token,
    workers,
    data_dir,
    actions_over,
    drivers,
    rate,
    duration,
    seed,
    chart,
    drain,
    speedup,
    rider_cancels,
    driver_cancels,
    no_shows,
    follow_reposition,
    as_json,
) -> None:
    """A seeded synthetic city of real clients: drivers ping, accept, drive, arrive and
    complete (now and then cancel, or report a no-show), riders quote, book, now and then
    cancel, and both rate. Live progress, then a summary table (the ride figures read back
    from the database) and a PNG chart."""
    import json

    from rich.console import Console

    from smartroute_sim.simulate import run_simulation, summary_table

    if rate <= 0 or duration <= 0 or drivers <= 0 or speedup <= 0:
        raise click.UsageError("--drivers, --rate, --duration and --speedup must be positive")
    with load_target(api, relay, token, workers, data_dir, compressed_waits(speedup)) as target:
        result = run_simulation(
            target,
            drivers,
            rate,
            duration,
            seed,
            Path(chart),
            drain,
            live=not as_json,
            speedup=speedup,
            actions_over=actions_over,
            rider_cancels=rider_cancels,
            driver_cancels=driver_cancels,
            no_shows=no_shows,
            follow_reposition=follow_reposition,
        )
    if as_json:
        click.echo(json.dumps(result))
    else:
        Console().print(summary_table(result))
