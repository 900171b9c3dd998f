"""``smartroute simulate``: a seeded city at work, watched live.

Drivers go online, ping their location every few seconds, accept (or now and then decline
or ignore) offers, drive to the pickup in compressed time, say they have arrived, and drive
on to the dropoff and complete the ride; riders book at a fixed rate around the city's
hotspots, most of them on a quote asked for first. Now and then a driver gives a ride back
after accepting it (with a reason), a rider cancels (before or after a driver is assigned,
with a reason) or never comes to the pickup (the driver waits the engine's no-show wait and
reports a no-show), and after a ride both sides mostly rate each other. An idle driver
told to reposition (the engine's rebalancing) follows the suggestion half the time. Every choice is
drawn from the seed. The terminal shows the city as it runs; at the end a summary table
(the ride figures read back from the database) and a PNG chart.
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
from smartroute_sim.rider import RiderPolicy
from smartroute_sim.run import DriverPolicy, LoadPlan, LoadRun

SIMULATED_DRIVERS = DriverPolicy(
    accept=0.85,
    decline=0.10,
    ignore=0.05,
    ping_every_s=4.0,
    time_compression=60.0,
    arrive=True,
    cancel_after_accept=0.03,
    rate=0.7,
    follow_reposition=0.5,
)
SIMULATED_RIDERS = RiderPolicy(
    quote=0.9,
    cancel_before_assignment=0.03,
    cancel_after_assignment=0.03,
    no_show=0.02,
    rate=0.7,
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
        "cancelled",
        "no-shows",
        "waiting",
        "busy drivers",
        "queue depth",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        f"{row['t']:.0f}",
        *(
            str(row.get(k, 0))
            for k in ("booked", "pushed", "accepted", "declined", "ignored", "completed")
        ),
        str(row.get("rider_cancellations", 0) + row.get("driver_cancellations", 0)),
        str(row.get("no_shows", 0)),
        str(row.get("waiting", 0)),
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
    rider_cancels: float | None = None,
    driver_cancels: float | None = None,
    no_shows: float | None = None,
    follow_reposition: float | None = None,
) -> dict:
    """Run the city; ``rider_cancels`` (split evenly before and after assignment),
    ``driver_cancels``, ``no_shows`` and ``follow_reposition`` (an idle driver following a
    rebalancing suggestion) replace the default probabilities when given."""
    console = console or Console(stderr=True)
    policy = replace(SIMULATED_DRIVERS, actions_over=actions_over)
    if speedup is not None:
        policy = replace(policy, time_compression=speedup)
    if driver_cancels is not None:
        policy = replace(policy, cancel_after_accept=driver_cancels)
    if follow_reposition is not None:
        policy = replace(policy, follow_reposition=follow_reposition)
    riders = SIMULATED_RIDERS
    if rider_cancels is not None:
        riders = replace(
            riders,
            cancel_before_assignment=rider_cancels / 2,
            cancel_after_assignment=rider_cancels / 2,
        )
    if no_shows is not None:
        riders = replace(riders, no_show=no_shows)
    # Ignored offers come back after the offer window, and a no-show takes the engine's
    # whole wait at the pickup (its clock is not compressed): let them finish.
    default_drain = target.settings.offer_window_s + 30.0
    if riders.no_show > 0:
        default_drain += target.settings.no_show_wait_s
    city = CityMap(seed=seed)
    plan = LoadPlan(
        rate=rate,
        duration_s=duration_s,
        drivers=drivers,
        riders=max(5, min(100, math.ceil(rate * 4))),
        seed=seed,
        drain_s=drain_s if drain_s is not None else default_drain,
        rider_policy=riders,
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
                "rides",
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
    rides = result["rides"]
    figures = rides["database"] or rides["simulated"]
    source = "database" if rides["database"] is not None else "simulator"
    fares = figures["fares"]
    rider_cancels, no_shows = figures["rider_cancellations"], figures["no_shows"]
    ratings = figures["ratings"]
    table.add_section()
    table.add_row(f"ride figures (from the {source})", *("",) * 5)
    for label, value in (
        ("quotes asked", figures["quotes"]),
        ("bookings on a quote", figures["bookings_with_quote"]),
        (
            "fares (count, total, mean)",
            f"{fares['count']}, {fares['total']}, {fares['mean']} {fares['currency'] or ''}",
        ),
        (
            "rider cancellations (fees charged, total)",
            f"{rider_cancels['count']} ({rider_cancels['fees_charged']}, "
            f"{rider_cancels['fee_total']})",
        ),
        ("driver cancellations", figures["driver_cancellations"]),
        (
            "no-shows (fees charged, total)",
            f"{no_shows['count']} ({no_shows['fees_charged']}, {no_shows['fee_total']})",
        ),
        ("arrivals", figures["arrivals"]),
        *(
            (
                f"ratings by {side}s (with a comment, mean stars)",
                f"{r['count']} ({r['with_comment']}, {r['mean_stars']})",
            )
            for side, r in ratings.items()
        ),
    ):
        table.add_row(label, str(value), *("",) * 4)
    table.caption = (
        f"booked {result['bookings']}, completed {counts.get('completed', 0)}, "
        f"declined {counts.get('declined', 0)}, ignored {counts.get('ignored', 0)}; "
        f"lost {result['lost']} (missing {result['missing']}, unfinished "
        f"{result['unfinished']}), double-assigned {result['double_assigned']} "
        f"({result['checked_by']}); peak RSS {result['max_rss_mb']} MB; chart {result['chart']}"
    )
    return table
