"""``smartroute simulate``: a seeded city at work, watched live.

Drivers go online, ping their location every few seconds, accept (or now and then decline
or ignore) offers, drive to the pickup and on to the dropoff in compressed time, and
complete the ride; riders book at a fixed rate around the city's hotspots. The terminal
shows the city as it runs; at the end a summary table and a PNG chart.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from smartroute_sim.city import CityMap
from smartroute_sim.engine import Target
from smartroute_sim.report import write_chart
from smartroute_sim.run import DriverPolicy, LoadPlan, LoadRun

SIMULATED_DRIVERS = DriverPolicy(
    accept=0.85, decline=0.10, ignore=0.05, ping_every_s=4.0, time_compression=60.0
)
LATENCIES = {
    "accept": "booking accepted (HTTP 202)",
    "assign": "committed → assigned",
    "push": "assigned → driver's client",
    "book_to_push": "sent → driver's client",
}


def live_table(row: dict, drivers: int) -> Table:
    table = Table(title="smartroute simulate", show_header=True)
    for column in (
        "t s",
        "booked",
        "assigned",
        "accepted",
        "declined",
        "ignored",
        "completed",
        "waiting",
        "busy drivers",
        "queue depth",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        f"{row['t']:.0f}",
        *(
            str(row.get(k, 0))
            for k in ("booked", "pushed", "accepted", "declined", "ignored", "completed", "waiting")
        ),
        f"{row.get('busy_drivers', 0)}/{drivers}",
        str(row.get("queue_depth", "-")),
    )
    return table


def run_simulation(
    target: Target,
    drivers: int,
    rate: float,
    duration_s: float,
    seed: int,
    chart: Path,
    drain_s: float | None = None,
    console: Console | None = None,
    live: bool = True,
    speedup: float | None = None,
    actions_over: str = "relay",
) -> dict:
    console = console or Console(stderr=True)
    policy = replace(SIMULATED_DRIVERS, actions_over=actions_over)
    if speedup is not None:
        policy = replace(policy, time_compression=speedup)
    city = CityMap(seed=seed)
    plan = LoadPlan(
        rate=rate,
        duration_s=duration_s,
        drivers=drivers,
        riders=max(5, min(100, math.ceil(rate * 4))),
        seed=seed,
        # Ignored offers come back after the offer window; let them finish.
        drain_s=drain_s if drain_s is not None else target.settings.offer_window_s + 30.0,
    )
    with Live(
        console=console,
        auto_refresh=False,
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as display:

        def show(row: dict) -> None:
            if live:
                display.update(live_table(row, drivers), refresh=True)

        run = LoadRun(target, plan, policy, city=city, on_sample=show)
        checked = run.execute()
    rec = run.recorder
    write_chart(
        chart,
        rec,
        f"smartroute simulate: seed {seed}, {drivers} drivers, {rate:g} bookings/s, "
        f"{duration_s:g} s",
        latencies=LATENCIES,
        throughput={
            "booked": "booked (202)",
            "pushed": "assigned (pushed)",
            "completed": "completed",
        },
        gauges={
            **{f"depth:{q}": f"queue {q}" for q in target.settings.queues},
            "waiting": "bookings waiting",
            "busy_drivers": "busy drivers",
        },
    )
    result = {
        "seed": seed,
        "drivers": drivers,
        "rate_offered": rate,
        "duration_s": duration_s,
        "chart": str(chart),
        "latency": {k: rec.summary(k) for k in LATENCIES},
        **{
            k: checked[k]
            for k in (
                "bookings",
                "lost",
                "missing",
                "unfinished",
                "by_status",
                "double_assigned",
                "checked_by",
                "rate_accepted",
                "max_rss_mb",
                "counts",
            )
        },
    }
    return result


def summary_table(result: dict) -> Table:
    table = Table(
        title=f"Simulation (seed {result['seed']}, {result['drivers']} drivers, "
        f"{result['rate_offered']:g} bookings/s for {result['duration_s']:g} s)"
    )
    table.add_column("latency")
    for column in ("n", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right")
    for name, label in LATENCIES.items():
        s = result["latency"][name]
        table.add_row(
            label, str(s["n"]), *(str(s[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
        )
    counts = result["counts"]
    table.caption = (
        f"booked {result['bookings']}, completed {counts.get('completed', 0)}, "
        f"declined {counts.get('declined', 0)}, ignored {counts.get('ignored', 0)}; "
        f"lost {result['lost']} (missing {result['missing']}, unfinished "
        f"{result['unfinished']}), double-assigned {result['double_assigned']} "
        f"({result['checked_by']}); peak RSS {result['max_rss_mb']} MB; chart {result['chart']}"
    )
    return table
